//! Field guards: `#[graphql(guard = "RequirePermission(Permission::AdminRead)")]`.

use async_graphql::{Context, Guard, Result};

use super::ContextExt as _;
use crate::error::GqlResultExt as _;
use crate::features::users::Permission;

/// Anonymous callers get `UNAUTHENTICATED`, users without the permission `FORBIDDEN`.
pub struct RequirePermission(pub Permission);

impl Guard for RequirePermission {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.viewer().require(self.0).map(|_| ()).gql()
    }
}
