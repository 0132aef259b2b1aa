use async_graphql::{Context, ID, Object, Result};

use super::service;
use super::types::{UpdateProfileInput, User};
use crate::error::GqlResultExt as _;
use crate::graphql::{ContextExt as _, RequirePermission};
use crate::identity::accounts;
use crate::identity::permissions::USERS_READ;

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        // What authentication loaded (or found cached) for this request: no database round trip.
        Ok(User(ctx.user()?.account()))
    }

    /// Another user's profile.
    #[graphql(guard = "RequirePermission(USERS_READ)")]
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        let user = accounts::find_by_id(&ctx.state()?.db, id).await.gql()?;
        Ok(user.map(User))
    }
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Changes the caller's display name and/or username.
    async fn update_profile(&self, ctx: &Context<'_>, input: UpdateProfileInput) -> Result<User> {
        let viewer = ctx.user()?;
        let user =
            service::update_profile(ctx.state()?, viewer.id, input.display_name, input.username)
                .await
                .gql()?;
        Ok(User(user))
    }
}
