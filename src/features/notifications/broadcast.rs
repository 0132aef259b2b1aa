//! `broadcastAnnouncement`: the request validates, audits and queues one job; the job notifies
//! one batch of recipients (ordered by id) per run and queues the next batch in the same
//! transaction, so 100,000 recipients never hold a request or one long transaction, a crash
//! resumes where it stopped, and a batch that runs twice reaches nobody twice (`source_key`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use sea_orm::{
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::kinds::NotificationKind;
use super::service::{self, Content};
use super::settings::NotificationSettings;
use crate::entities::{roles, user_roles, users};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::audit;
use crate::identity::Actor;
use crate::infra::jobs::{JobContext, JobHandler};
use crate::state::AppState;

pub const BROADCAST: &str = "notification_broadcast";

/// At most this many users named in one announcement.
pub const MAX_USER_IDS: usize = 10_000;
pub const TITLE: crate::text::Rules = crate::text::Rules::line(200);
pub const BODY_MAX_CHARS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    All,
    Roles(Vec<String>),
    Users(Vec<Uuid>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    pub announcement_id: Uuid,
    pub title: String,
    /// Sanitised HTML.
    pub body: String,
    pub audience: Audience,
    pub email: bool,
    /// The last recipient of the previous batch.
    pub after: Option<Uuid>,
}

/// Checks the announcement, records it in the audit log and queues its first batch.
///
/// # Errors
/// `BAD_USER_INPUT` for an empty or too long title or body, an unknown role, or an empty
/// audience; the database fails.
#[tracing::instrument(name = "notifications.broadcast", skip_all)]
pub async fn start(
    state: &AppState,
    actor: &Actor,
    title: &str,
    body: &str,
    audience: Audience,
    email: bool,
) -> AppResult<Uuid> {
    let mut errors = FieldErrors::default();
    let title = errors.text("title", title, TITLE).unwrap_or_default();
    let body = crate::text::sanitize_html(body.trim());
    if body.trim().is_empty() {
        errors.add("body", "must not be empty");
    } else if body.chars().count() > BODY_MAX_CHARS {
        errors.add(
            "body",
            format!("must be at most {BODY_MAX_CHARS} characters"),
        );
    }
    match &audience {
        Audience::All => {}
        Audience::Roles(names) if names.is_empty() => errors.add("audience", "names no role"),
        Audience::Users(ids) if ids.is_empty() => errors.add("audience", "names no user"),
        Audience::Users(ids) if ids.len() > MAX_USER_IDS => {
            errors.add("audience", format!("names more than {MAX_USER_IDS} users"));
        }
        Audience::Roles(_) | Audience::Users(_) => {}
    }
    errors.into_result()?;
    let txn = crate::infra::db::begin(&state.db).await?;
    if let Audience::Roles(names) = &audience {
        let known: Vec<String> = roles::Entity::find()
            .select_only()
            .column(roles::Column::Name)
            .filter(roles::Column::Name.is_in(names.clone()))
            .into_tuple()
            .all(&txn)
            .await?;
        if let Some(unknown) = names.iter().find(|name| !known.contains(name)) {
            return Err(AppError::invalid(
                "audience",
                format!("names an unknown role: {unknown}"),
            ));
        }
    }
    let announcement_id = Uuid::now_v7();
    let audience_summary = match &audience {
        Audience::All => json!({ "all": true }),
        Audience::Roles(names) => json!({ "roles": names }),
        Audience::Users(ids) => json!({ "userCount": ids.len() }),
    };
    audit::service::record(
        &txn,
        actor,
        "notifications.broadcast",
        Some(("announcement", announcement_id.to_string())),
        json!({ "title": title, "audience": audience_summary, "email": email }),
    )
    .await?;
    let job = Broadcast {
        announcement_id,
        title,
        body,
        audience,
        email,
        after: None,
    };
    state
        .jobs
        .enqueue(&txn, BROADCAST, &job, actor.request_id.as_deref())
        .await?;
    txn.commit().await?;
    Ok(announcement_id)
}

/// The next batch of recipients: active, not banned now, in the audience, after `after`.
async fn recipients(
    conn: &impl ConnectionTrait,
    job: &Broadcast,
    batch: u64,
) -> AppResult<Vec<Uuid>> {
    let now = Utc::now();
    let mut query = users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::IsActive.eq(true))
        .filter(
            Condition::any()
                .add(users::Column::BannedAt.is_null())
                .add(users::Column::BannedUntil.lte(now)),
        )
        .order_by_asc(users::Column::Id)
        .limit(batch);
    if let Some(after) = job.after {
        query = query.filter(users::Column::Id.gt(after));
    }
    query = match &job.audience {
        Audience::All => query,
        Audience::Users(ids) => query.filter(users::Column::Id.is_in(ids.clone())),
        Audience::Roles(names) => query.filter(
            users::Column::Id.in_subquery(
                Query::select()
                    .column((user_roles::Entity, user_roles::Column::UserId))
                    .from(user_roles::Entity)
                    .inner_join(
                        roles::Entity,
                        Expr::col((roles::Entity, roles::Column::Id))
                            .equals((user_roles::Entity, user_roles::Column::RoleId)),
                    )
                    .and_where(Expr::col((roles::Entity, roles::Column::Name)).is_in(names.clone()))
                    .to_owned(),
            ),
        ),
    };
    Ok(query.into_tuple().all(conn).await?)
}

pub fn handler(state: &AppState) -> Arc<dyn JobHandler> {
    Arc::new(BroadcastJob {
        state: state.clone(),
    })
}

struct BroadcastJob {
    state: AppState,
}

#[async_trait]
impl JobHandler for BroadcastJob {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String> {
        let broadcast: Broadcast =
            serde_json::from_str(job.payload).map_err(|e| format!("bad payload: {e}"))?;
        self.batch(&broadcast, job.request_id)
            .await
            .map_err(|e| e.to_string())
    }
}

impl BroadcastJob {
    async fn batch(&self, broadcast: &Broadcast, request_id: Option<&str>) -> AppResult<()> {
        let state = &self.state;
        let txn = crate::infra::db::begin(&state.db).await?;
        let size = NotificationSettings::of(state).broadcast_batch;
        let batch = recipients(&txn, broadcast, size).await?;
        let content = Content {
            source_key: Some(format!("announcement:{}", broadcast.announcement_id)),
            no_email: !broadcast.email,
            ..Content::new(broadcast.title.clone(), broadcast.body.clone())
        }
        .data("announcementId", json!(broadcast.announcement_id));
        let delivery = service::notify(
            state,
            &txn,
            &batch,
            NotificationKind::Announcement,
            &content,
            request_id,
        )
        .await?;
        if batch.len() as u64 == size {
            let next = Broadcast {
                after: batch.last().copied(),
                ..broadcast.clone()
            };
            state
                .jobs
                .enqueue(&txn, BROADCAST, &next, request_id)
                .await?;
        }
        txn.commit().await?;
        tracing::info!(
            announcement = %broadcast.announcement_id,
            recipients = batch.len(),
            rows = delivery.rows,
            emails = delivery.emails,
            "announcement batch delivered"
        );
        delivery.publish(state).await;
        Ok(())
    }
}
