use async_graphql::{Context, Object, Result};

use super::AUDIT_READ;
use super::service::{self, AuditFilter};
use super::types::{AuditEntry, AuditLogFilter, AuditPage};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, RequirePermission};

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit trail, newest first. Costs `limit` × the selection per entry.
    #[graphql(
        guard = "RequirePermission(AUDIT_READ)",
        complexity = "(limit.max(1) as usize).saturating_mul(child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditLogFilter>,
        #[graphql(default = 20)] limit: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<AuditPage> {
        let filter = filter.unwrap_or_default();
        let actor_id = match filter.actor_id {
            Some(id) => Some(
                uuid::Uuid::parse_str(&id)
                    .map_err(|_| AppError::invalid("actorId", "is not a user id"))
                    .gql()?,
            ),
            None => None,
        };
        let organization_id = match filter.organization_id {
            Some(id) => Some(
                uuid::Uuid::parse_str(&id)
                    .map_err(|_| AppError::invalid("organizationId", "is not an organization id"))
                    .gql()?,
            ),
            None => None,
        };
        let (limit, offset) = crate::graphql::limit_offset(limit, offset, 100)?;
        let query = AuditFilter {
            actor_id,
            action: filter.action,
            target_id: filter.target_id,
            organization_id,
            from: filter.from,
            to: filter.to,
        };
        let (items, total) = service::list(&ctx.state()?.db, query, limit, offset)
            .await
            .gql()?;
        Ok(AuditPage {
            items: items.into_iter().map(AuditEntry::from).collect(),
            total_count: total,
            limit,
            offset,
        })
    }
}
