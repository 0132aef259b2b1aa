//! Monitoring: every enabled setting is checked on the `langfuse-checks` schedule (once per run
//! across the fleet, as a durable job), with bounded concurrency. Results are kept (the last
//! [`HISTORY`] per setting). After `LANGFUSE_ALERT_AFTER` consecutive failed scheduled checks a
//! setting turns `DOWN`: the organization's owners and admins get one `INTEGRATION_ALERT`
//! notification (mailed per their preferences), the audit log records it, and
//! `langfuseStatusChanged` subscribers hear it; the first successful check after that turns it
//! `UP` and notifies once more. `/metrics`: `langfuse_connection_up{organization,environment}`
//! (read from the settings at scrape time: the same on every instance) and
//! `langfuse_check_duration_seconds{environment,status}`.
//!
//! Tests from the API (`testLangfuseConnection`) are recorded in the history but do not move the
//! status: only the schedule does, so one click cannot page anyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt as _;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::entity::{checks, settings};
use super::probe::{CheckStatus, Checked};
use super::service::{self, HISTORY};
use crate::entities::{organization_members, organizations};
use crate::error::AppResult;
use crate::features::audit;
use crate::features::notifications::{Content, NotificationKind, notify};
use crate::identity::{Actor, OrgRole};
use crate::infra::jobs::{JobContext, JobHandler};
use crate::state::AppState;

pub const CHECKS_JOB: &str = "langfuse_checks";

/// The schedule: every `LANGFUSE_CHECK_INTERVAL`, with up to 30 s of jitter.
pub fn schedule(
    settings: &crate::config::Settings,
) -> Option<(crate::infra::scheduler::Every, Duration)> {
    let config = settings.section::<super::config::LangfuseConfig>()?;
    Some((config.check_interval.clone(), Duration::from_secs(30)))
}

/// A status change, as subscribers receive it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusChange {
    pub organization_id: Uuid,
    pub environment: String,
    pub status: String,
    pub previous_status: String,
    pub message: String,
    pub changed_at: chrono::DateTime<Utc>,
}

pub fn channel(organization: Uuid) -> String {
    format!("langfuse:status:{organization}")
}

struct ChecksJob {
    state: AppState,
}

pub fn handler(state: &AppState) -> Arc<dyn JobHandler> {
    Arc::new(ChecksJob {
        state: state.clone(),
    })
}

#[async_trait]
impl JobHandler for ChecksJob {
    async fn handle(&self, _job: JobContext<'_>) -> Result<(), String> {
        run_checks(&self.state).await.map(|_| ()).map_err(|error| {
            error.report();
            "database unavailable".to_owned()
        })
    }
}

/// Checks every enabled setting once (what one scheduled run does); how many were checked.
///
/// # Errors
/// The database fails (checks already recorded stay).
pub async fn run_checks(state: &AppState) -> AppResult<usize> {
    let rows = settings::Entity::find()
        .filter(settings::Column::Enabled.eq(true))
        .all(&state.db)
        .await?;
    let concurrency = service::config(state).concurrency;
    let results: Vec<AppResult<()>> = futures_util::stream::iter(rows)
        .map(|row| {
            let state = state.clone();
            async move {
                let checked = service::check_row(&state, &row).await?;
                record(&state, &row, &checked, true).await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let count = results.len();
    for result in results {
        result?;
    }
    Ok(count)
}

/// Stores a check's result (keeping the last [`HISTORY`]) and, for scheduled checks, moves the
/// setting's status — alerting on the way down and on the way back up.
///
/// # Errors
/// The database fails.
pub async fn record(
    state: &AppState,
    row: &settings::Model,
    checked: &Checked,
    scheduled: bool,
) -> AppResult<()> {
    let ok = checked.status == CheckStatus::Ok;
    let organization = organizations::Entity::find_by_id(row.organization_id)
        .one(&state.db)
        .await?;
    state.metrics.record(|| {
        metrics::histogram!(
            "langfuse_check_duration_seconds",
            "environment" => row.environment.clone(),
            "status" => checked.status.as_str(),
        )
        .record(Duration::from_millis(checked.latency_ms).as_secs_f64());
    });

    let txn = crate::infra::db::begin(&state.db).await?;
    checks::ActiveModel {
        id: Set(Uuid::now_v7()),
        settings_id: Set(row.id),
        status: Set(checked.status.as_str().to_owned()),
        http_status: Set(checked.http_status.map(i32::from)),
        latency_ms: Set(i64::try_from(checked.latency_ms).ok()),
        message: Set(checked.message.chars().take(500).collect()),
        scheduled: Set(scheduled),
        checked_at: Set(checked.checked_at),
    }
    .insert(&txn)
    .await?;
    // Keep the newest HISTORY.
    let cutoff: Option<Uuid> = checks::Entity::find()
        .select_only()
        .column(checks::Column::Id)
        .filter(checks::Column::SettingsId.eq(row.id))
        .order_by_desc(checks::Column::Id)
        .offset(HISTORY)
        .limit(1)
        .into_tuple()
        .one(&txn)
        .await?;
    if let Some(cutoff) = cutoff {
        checks::Entity::delete_many()
            .filter(checks::Column::SettingsId.eq(row.id))
            .filter(checks::Column::Id.lte(cutoff))
            .exec(&txn)
            .await?;
    }
    if !scheduled {
        txn.commit().await?;
        return Ok(());
    }

    // The current row (another check may have moved it since it was read).
    let Some(current) = settings::Entity::find_by_id(row.id).one(&txn).await? else {
        txn.commit().await?;
        return Ok(());
    };
    let alert_after = i32::try_from(service::config(state).alert_after).unwrap_or(3);
    let failures = if ok {
        0
    } else {
        current.consecutive_failures + 1
    };
    let status = match (ok, current.status.as_str()) {
        (true, _) => "UP",
        (false, "DOWN") => "DOWN",
        (false, _) if failures >= alert_after => "DOWN",
        (false, previous) => previous,
    };
    let changed = status != current.status;
    let now = Utc::now();
    settings::Entity::update_many()
        .col_expr(settings::Column::ConsecutiveFailures, Expr::value(failures))
        .col_expr(settings::Column::Status, Expr::value(status))
        .col_expr(settings::Column::LastCheckedAt, Expr::value(now))
        .col_expr(
            settings::Column::StatusChangedAt,
            Expr::value(if changed {
                Some(now)
            } else {
                current.status_changed_at
            }),
        )
        .filter(settings::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    // Alert on DOWN, and on UP only after DOWN (not on a first success).
    let alert = changed && (status == "DOWN" || current.status == "DOWN");
    let mut delivery = None;
    if alert && let Some(organization) = &organization {
        let recipients: Vec<Uuid> = organization_members::Entity::find()
            .filter(organization_members::Column::OrganizationId.eq(organization.id))
            .filter(
                organization_members::Column::Role
                    .is_in([OrgRole::Owner.as_str(), OrgRole::Admin.as_str()]),
            )
            .all(&txn)
            .await?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let environment = row.environment.to_lowercase();
        let content = if status == "DOWN" {
            Content::new(
                format!(
                    "Langfuse ({environment}) of {} is unreachable",
                    organization.name
                ),
                format!(
                    "{failures} checks in a row failed. The last said: {}",
                    checked.message
                ),
            )
        } else {
            Content::new(
                format!("Langfuse ({environment}) of {} is back", organization.name),
                "The connection works again.".to_owned(),
            )
        }
        .link(format!("/organizations/{}/langfuse", organization.slug))
        .data("organization", json!(organization.slug))
        .data("environment", json!(row.environment))
        .data("status", json!(status));
        delivery = Some(
            notify(
                state,
                &txn,
                &recipients,
                NotificationKind::IntegrationAlert,
                &content,
                None,
            )
            .await?,
        );
        audit::service::record(
            &txn,
            &Actor::system("langfuse monitor").within(organization.id),
            if status == "DOWN" {
                "langfuse.down"
            } else {
                "langfuse.recovered"
            },
            Some(("langfuse_settings", row.id.to_string())),
            json!({
                "environment": row.environment,
                "consecutiveFailures": failures,
                "lastStatus": checked.status.as_str(),
                "notified": recipients.len(),
            }),
        )
        .await?;
    }
    txn.commit().await?;
    if let Some(delivery) = delivery {
        delivery.publish(state).await;
    }
    if changed {
        let change = StatusChange {
            organization_id: row.organization_id,
            environment: row.environment.clone(),
            status: status.to_owned(),
            previous_status: current.status.clone(),
            message: checked.message.clone(),
            changed_at: now,
        };
        if let Ok(payload) = serde_json::to_vec(&change)
            && let Err(error) = state
                .stores
                .pubsub
                .publish(&channel(row.organization_id), Bytes::from(payload))
                .await
        {
            error.log("cannot publish a Langfuse status change");
        }
    }
    Ok(())
}

/// Each setting's history, by settings id (for `langfuseStatus`).
///
/// # Errors
/// The database fails.
pub async fn histories(
    state: &AppState,
    rows: &[settings::Model],
    limit: u64,
) -> AppResult<HashMap<Uuid, Vec<checks::Model>>> {
    let mut found = HashMap::new();
    for row in rows {
        found.insert(row.id, service::history(&state.db, row.id, limit).await?);
    }
    Ok(found)
}

/// The `(organization, environment)` series this instance reported at the last scrape.
#[derive(Default)]
struct Reported(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

/// `langfuse_connection_up`, read from the settings at scrape time, so every instance reports
/// the same status whichever ran the check: 1 `UP`, 0 `DOWN`; a setting not yet checked,
/// disabled or deleted reports NaN (no value an alert compares true).
pub fn scrape(state: &AppState) -> futures_util::future::BoxFuture<'_, ()> {
    Box::pin(async move {
        let Ok(rows) = settings::Entity::find().all(&state.db).await else {
            return;
        };
        let ids: Vec<Uuid> = rows.iter().map(|r| r.organization_id).collect();
        let Ok(orgs) = organizations::Entity::find()
            .filter(organizations::Column::Id.is_in(ids))
            .all(&state.db)
            .await
        else {
            return;
        };
        let slugs: HashMap<Uuid, String> = orgs.into_iter().map(|o| (o.id, o.slug)).collect();
        let mut now = std::collections::HashSet::new();
        let mut values = Vec::new();
        for row in &rows {
            let Some(slug) = slugs.get(&row.organization_id) else {
                continue;
            };
            let value = match (row.enabled, row.status.as_str()) {
                (true, "UP") => 1.0,
                (true, "DOWN") => 0.0,
                _ => f64::NAN,
            };
            now.insert((slug.clone(), row.environment.clone()));
            values.push((slug.clone(), row.environment.clone(), value));
        }
        let reported = state.local::<Reported>();
        let gone: Vec<(String, String)> = {
            let mut seen = reported
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let gone = seen.difference(&now).cloned().collect();
            *seen = now;
            gone
        };
        state.metrics.record(|| {
            for (organization, environment, value) in values {
                metrics::gauge!(
                    "langfuse_connection_up",
                    "organization" => organization,
                    "environment" => environment,
                )
                .set(value);
            }
            for (organization, environment) in gone {
                metrics::gauge!(
                    "langfuse_connection_up",
                    "organization" => organization,
                    "environment" => environment,
                )
                .set(f64::NAN);
            }
        });
    })
}
