//! Field guards: `#[graphql(guard = "RequirePermission(ADMIN_READ)")]`.

use async_graphql::{Context, Guard, Result};

use super::ContextExt as _;
use crate::identity::Permission;

/// Anonymous callers get `UNAUTHENTICATED`, users without the permission `FORBIDDEN`.
pub struct RequirePermission(pub Permission);

impl Guard for RequirePermission {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.require(self.0).map(|_| ())
    }
}
