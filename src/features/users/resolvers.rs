use async_graphql::{Context, ID, Object, Result};

use super::service;
use super::types::{UpdateProfileInput, User};
use crate::error::GqlResultExt as _;
use crate::graphql::{ContextExt as _, RequirePermission};
use crate::identity::USER_TAG;
use crate::identity::accounts;
use crate::identity::permissions::USERS_READ;

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The caller. Kept in the server's response cache (per user, dropped by any change to the
    /// account); browsers revalidate it every time (`CACHE_PRIVATE_MAX_AGE`).
    #[graphql(cache_control(max_age = 300, private))]
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        // What authentication loaded (or found cached) for this request: no database round trip.
        let user = ctx.user()?;
        ctx.cache_tag(USER_TAG, Some(&user.id));
        Ok(User(user.account()))
    }

    /// Another user's profile.
    #[graphql(
        guard = "RequirePermission(USERS_READ)",
        cache_control(max_age = 60, private)
    )]
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        // Tagged whether found or not: creating it must not leave a cached `null`.
        ctx.cache_tag(USER_TAG, Some(&id));
        ctx.cache_tag(USER_TAG, None);
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
