//! Writing, reading and expiring audit entries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::entities::audit_log;
use crate::error::{AppError, AppResult};
use crate::identity::Actor;
use crate::state::AppState;

/// Appends an entry on `db` — pass the transaction of the change it records.
///
/// # Errors
/// The database fails (and so the change it records does not happen either).
pub async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    action: &str,
    target: Option<(&str, String)>,
    metadata: Value,
) -> AppResult<()> {
    let mut metadata = metadata;
    // An API key is named by its name and prefix (never its secret).
    if let (Some(key), Value::Object(map)) = (&actor.api_key, &mut metadata) {
        map.insert(
            "apiKey".to_owned(),
            serde_json::json!({ "id": key.id, "name": key.name, "prefix": key.prefix }),
        );
    }
    let (target_type, target_id) = match target {
        Some((kind, id)) => (Some(kind.to_owned()), Some(id)),
        None => (None, None),
    };
    audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        actor_id: Set(actor.id),
        actor_email: Set(actor.email.clone()),
        actor_api_key_id: Set(actor.api_key.as_ref().map(|key| key.id)),
        organization_id: Set(actor.organization),
        action: Set(action.to_owned()),
        target_type: Set(target_type),
        target_id: Set(target_id),
        request_id: Set(actor.request_id.clone()),
        ip: Set(actor.ip.clone()),
        user_agent: Set(actor.user_agent.clone()),
        metadata: Set(metadata.to_string()),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub organization_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

pub const MAX_PAGE: u64 = 100;

/// Newest first, with the total for the filter.
///
/// # Errors
/// `BAD_USER_INPUT` for a limit outside 1–100; the database fails.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: AuditFilter,
    limit: u64,
    offset: u64,
) -> AppResult<(Vec<audit_log::Model>, u64)> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let mut query = audit_log::Entity::find();
    if let Some(actor) = filter.actor_id {
        query = query.filter(audit_log::Column::ActorId.eq(actor));
    }
    if let Some(action) = filter.action {
        query = query.filter(audit_log::Column::Action.eq(action));
    }
    if let Some(target) = filter.target_id {
        query = query.filter(audit_log::Column::TargetId.eq(target));
    }
    if let Some(organization) = filter.organization_id {
        query = query.filter(audit_log::Column::OrganizationId.eq(organization));
    }
    if let Some(from) = filter.from {
        query = query.filter(audit_log::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_log::Column::CreatedAt.lt(to));
    }
    let total = query.clone().count(db).await?;
    let items = query
        .order_by_desc(audit_log::Column::CreatedAt)
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    Ok((items, total))
}

/// Entries in the last 24 hours (for system stats).
///
/// # Errors
/// The database fails.
pub async fn count_since(db: &impl ConnectionTrait, since: DateTime<Utc>) -> AppResult<u64> {
    Ok(audit_log::Entity::find()
        .filter(audit_log::Column::CreatedAt.gte(since))
        .count(db)
        .await?)
}

/// Deletes entries older than `days`; the number removed.
///
/// # Errors
/// The database fails.
pub async fn purge_older_than(db: &impl ConnectionTrait, days: u32) -> AppResult<u64> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    let result = audit_log::Entity::delete_many()
        .filter(audit_log::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// The job each retention run enqueues.
pub const RETENTION_JOB: &str = "audit_retention";

/// Retention runs every `AUDIT_RETENTION_INTERVAL` when `AUDIT_RETENTION_DAYS` is set.
pub fn retention_schedule(
    settings: &crate::config::Settings,
) -> Option<(crate::infra::scheduler::Every, Duration)> {
    let audit = settings.section::<super::settings::AuditSettings>()?;
    audit.retention_days?;
    Some((audit.retention_interval.clone(), Duration::from_secs(30)))
}

struct RetentionJob {
    state: AppState,
}

pub fn retention_handler(state: &AppState) -> std::sync::Arc<dyn crate::infra::jobs::JobHandler> {
    std::sync::Arc::new(RetentionJob {
        state: state.clone(),
    })
}

#[async_trait::async_trait]
impl crate::infra::jobs::JobHandler for RetentionJob {
    /// Applies `AUDIT_RETENTION_DAYS` (read when the job runs, so a changed setting applies).
    async fn handle(&self, _job: crate::infra::jobs::JobContext<'_>) -> Result<(), String> {
        let Some(days) = self
            .state
            .settings
            .section::<super::settings::AuditSettings>()
            .and_then(|s| s.retention_days)
        else {
            return Ok(());
        };
        match purge_older_than(&self.state.db, days).await {
            Ok(0) => Ok(()),
            Ok(removed) => {
                tracing::info!(removed, days, "audit retention removed old entries");
                Ok(())
            }
            Err(error) => {
                error.report();
                Err("database unavailable".into())
            }
        }
    }
}
