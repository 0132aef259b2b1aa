//! The tenant guard, in one line for any organization-scoped field:
//!
//! ```ignore
//! let tenant = tenant(ctx, &organization, LANGFUSE_MANAGE).await?;
//! ```
//!
//! It resolves the organization from the argument (its slug) for the viewer and checks the
//! organization permission: `NOT_FOUND` for a caller outside the organization, whether or not it
//! exists, `FORBIDDEN` for a member (or key) without the permission. Every query of the field
//! then filters by `tenant.id()`, so nothing of another organization can be read or changed.

use async_graphql::{Context, ErrorExtensions as _};

use super::ContextExt as _;
use crate::identity::{OrgPermission, Tenant, tenancy};

/// See the module documentation.
///
/// # Errors
/// `UNAUTHENTICATED`, `NOT_FOUND`, `FORBIDDEN`, or the database fails.
pub async fn tenant(
    ctx: &Context<'_>,
    organization: &str,
    permission: OrgPermission,
) -> async_graphql::Result<Tenant> {
    let state = ctx.state()?;
    tenancy::authorize(&state.db, ctx.viewer(), organization, permission)
        .await
        .map_err(|e| e.extend())
}
