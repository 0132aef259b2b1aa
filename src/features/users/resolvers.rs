use async_graphql::{Context, ID, Object, Result};

use super::permissions::Permission;
use super::service;
use super::types::{UpdateProfileInput, User};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, RequirePermission};

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let viewer = ctx.viewer().user().gql()?;
        let user = service::find_by_id(&ctx.state().gql()?.db, viewer.id)
            .await
            .gql()?
            .ok_or(AppError::Unauthenticated)
            .gql()?;
        Ok(User(user))
    }

    /// Another user's profile.
    #[graphql(guard = "RequirePermission(Permission::UsersRead)")]
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        let user = service::find_by_id(&ctx.state().gql()?.db, id)
            .await
            .gql()?;
        Ok(user.map(User))
    }
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Changes the caller's display name and/or username.
    async fn update_profile(&self, ctx: &Context<'_>, input: UpdateProfileInput) -> Result<User> {
        let viewer = ctx.viewer().user().gql()?;
        let user = service::update_profile(
            ctx.state().gql()?,
            viewer.id,
            input.display_name,
            input.username,
        )
        .await
        .gql()?;
        Ok(User(user))
    }
}
