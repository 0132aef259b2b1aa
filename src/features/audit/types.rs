use async_graphql::{ComplexObject, Context, ID, InputObject, Json, Result, SimpleObject};
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;

use crate::entities::audit_log;
use crate::error::{AppError, GqlResultExt as _};
use crate::features::users::loaders::Loaders;
use crate::features::users::types::User;

#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    pub actor_id: Option<ID>,
    /// e.g. `user.ban`
    pub action: Option<String>,
    pub target_id: Option<String>,
    /// Entries of one organization (by its id).
    pub organization_id: Option<ID>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

/// One recorded action.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AuditEntry {
    #[graphql(skip)]
    pub actor_uuid: Option<uuid::Uuid>,
    pub id: ID,
    pub actor_id: Option<ID>,
    /// The actor's email when the action happened.
    pub actor_email: Option<String>,
    /// The API key that acted, when a machine client did (its name and prefix are in
    /// `metadata.apiKey`).
    pub actor_api_key_id: Option<ID>,
    /// The organization the change belongs to (kept after the organization is deleted).
    pub organization_id: Option<ID>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Reason, before/after values, counts.
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl From<audit_log::Model> for AuditEntry {
    fn from(m: audit_log::Model) -> Self {
        Self {
            actor_uuid: m.actor_id,
            id: ID(m.id.to_string()),
            actor_id: m.actor_id.map(|id| ID(id.to_string())),
            actor_email: m.actor_email,
            actor_api_key_id: m.actor_api_key_id.map(|id| ID(id.to_string())),
            organization_id: m.organization_id.map(|id| ID(id.to_string())),
            action: m.action,
            target_type: m.target_type,
            target_id: m.target_id,
            request_id: m.request_id,
            ip: m.ip,
            user_agent: m.user_agent,
            metadata: Json(serde_json::from_str(&m.metadata).unwrap_or(serde_json::Value::Null)),
            created_at: m.created_at,
        }
    }
}

#[ComplexObject]
impl AuditEntry {
    /// The acting account, while it exists (loaded in one batch per page).
    async fn actor(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let Some(id) = self.actor_uuid else {
            return Ok(None);
        };
        let Some(loaders) = ctx.data_opt::<Loaders>() else {
            return Ok(None);
        };
        let user = loaders
            .get()
            .users
            .load_one(id)
            // Boxed: an entry's fields share one future type as large as the largest, and a
            // page boxes one per field and entry (as `User`'s, `features/users/types.rs`).
            .boxed()
            .await
            .map_err(|e| AppError::Database((*e).clone()))
            .gql()?;
        Ok(user.map(User))
    }
}

#[derive(SimpleObject)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub total_count: u64,
    pub limit: u64,
    pub offset: u64,
}
