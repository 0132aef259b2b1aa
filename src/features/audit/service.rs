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

/// The retention task for the registry.
pub fn retention_task(state: AppState) -> futures_util::future::BoxFuture<'static, ()> {
    Box::pin(run_retention(state))
}

/// Applies `AUDIT_RETENTION_DAYS` periodically until shutdown; one instance at a time (a lease in
/// the shared store), so a fleet does the work once.
pub async fn run_retention(state: AppState) {
    let Some(settings) = state.settings.section::<super::settings::AuditSettings>() else {
        return;
    };
    let Some(days) = settings.retention_days else {
        return;
    };
    let every = settings.retention_interval;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lease = match state
            .stores
            .locks
            .try_acquire("audit-retention", every.max(Duration::from_secs(1)))
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => continue,
            Err(error) => {
                error.log("audit retention: cannot take the lease");
                continue;
            }
        };
        match purge_older_than(&state.db, days).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, days, "audit retention removed old entries"),
            Err(error) => error.report(),
        }
        // Held until it expires, so other instances skip this round.
        drop(lease);
    }
}
