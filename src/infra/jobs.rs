//! Durable background jobs, stored in the database (one code path for SQLite and PostgreSQL):
//! enqueued in the same transaction as the change that needs them, claimed by any instance with a
//! conditional update (so two workers never run the same job), retried with exponential backoff,
//! moved to `dead` after `JOB_MAX_ATTEMPTS`, and re-run when a crashed worker's lease expires.
//! Workers stop claiming on shutdown and let running jobs finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::metrics::Metrics;
use crate::config::JobSettings;
use crate::entities::jobs;

pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const DONE: &str = "done";
pub const DEAD: &str = "dead";

const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What a handler knows about the job it runs.
#[derive(Debug, Clone, Copy)]
pub struct JobContext<'a> {
    pub id: Uuid,
    pub payload: &'a str,
    /// 1 on the first run, then counting retries.
    pub attempt: i32,
    pub request_id: Option<&'a str>,
}

/// Runs one kind of job. An `Err` is retried (its text is kept as `last_error`); it must never
/// hold a secret.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String>;
}

/// Enqueues jobs; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    db: DatabaseConnection,
    settings: JobSettings,
    wake: Arc<Notify>,
}

/// How many jobs are in each state that matters to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub pending: u64,
    pub running: u64,
    pub dead: u64,
}

/// The delay before retry number `attempt` (1-based): base, 2·base, 4·base, … up to an hour.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    base.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

impl JobQueue {
    pub fn new(db: DatabaseConnection, settings: JobSettings) -> Self {
        Self {
            db,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Stores a job on `conn`: pass the transaction of the change that needs it, so there is
    /// never a change without its job or a job without its change.
    ///
    /// # Errors
    /// The payload cannot be serialised, or the database fails.
    pub async fn enqueue(
        &self,
        conn: &impl ConnectionTrait,
        kind: &str,
        payload: &impl Serialize,
        request_id: Option<&str>,
    ) -> Result<Uuid, DbErr> {
        let payload = serde_json::to_string(payload)
            .map_err(|e| DbErr::Custom(format!("job payload: {e}")))?;
        let now = Utc::now();
        let id = Uuid::now_v7();
        jobs::ActiveModel {
            id: Set(id),
            kind: Set(kind.to_owned()),
            payload: Set(payload),
            state: Set(PENDING.to_owned()),
            attempts: Set(0),
            max_attempts: Set(self.settings.max_attempts),
            run_at: Set(now),
            locked_by: Set(None),
            locked_until: Set(None),
            last_error: Set(None),
            request_id: Set(request_id.map(str::to_owned)),
            trace_parent: Set(crate::telemetry::otel::current_traceparent()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(conn)
        .await?;
        // Wakes a local worker early; others find it on their next poll.
        self.wake.notify_one();
        Ok(id)
    }

    /// One consistent snapshot (a single grouped query).
    ///
    /// # Errors
    /// The database fails.
    pub async fn stats(&self) -> Result<QueueStats, DbErr> {
        let rows: Vec<(String, i64)> = jobs::Entity::find()
            .select_only()
            .column(jobs::Column::State)
            .column_as(jobs::Column::Id.count(), "n")
            .filter(jobs::Column::State.is_in([PENDING, RUNNING, DEAD]))
            .group_by(jobs::Column::State)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut stats = QueueStats::default();
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match state.as_str() {
                PENDING => stats.pending = n,
                RUNNING => stats.running = n,
                DEAD => stats.dead = n,
                _ => {}
            }
        }
        Ok(stats)
    }

    /// Jobs in `state`, newest first, with the total in that state.
    ///
    /// # Errors
    /// The database fails.
    pub async fn list(
        &self,
        state: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<jobs::Model>, u64), DbErr> {
        use sea_orm::PaginatorTrait as _;
        let query = jobs::Entity::find().filter(jobs::Column::State.eq(state));
        let total = query.clone().count(&self.db).await?;
        let rows = query
            .order_by_desc(jobs::Column::UpdatedAt)
            .order_by_desc(jobs::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(&self.db)
            .await?;
        Ok((rows, total))
    }

    /// Puts a dead job back in the queue with a fresh set of attempts; `None` when there is no
    /// dead job with this id (the last error is kept until it runs).
    ///
    /// # Errors
    /// The database fails.
    pub async fn retry(
        &self,
        conn: &impl ConnectionTrait,
        id: Uuid,
    ) -> Result<Option<jobs::Model>, DbErr> {
        let now = Utc::now();
        let updated = jobs::Entity::update_many()
            .col_expr(jobs::Column::State, Expr::value(PENDING))
            .col_expr(jobs::Column::Attempts, Expr::value(0))
            .col_expr(jobs::Column::RunAt, Expr::value(now))
            .col_expr(jobs::Column::LockedBy, Expr::value(Option::<String>::None))
            .col_expr(
                jobs::Column::LockedUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(jobs::Column::UpdatedAt, Expr::value(now))
            .filter(jobs::Column::Id.eq(id))
            .filter(jobs::Column::State.eq(DEAD))
            .exec(conn)
            .await?;
        if updated.rows_affected == 0 {
            return Ok(None);
        }
        let job = jobs::Entity::find_by_id(id).one(conn).await?;
        self.wake.notify_one();
        Ok(job)
    }

    /// Deletes finished jobs (done, or dead for longer) older than the retention: their payloads
    /// are of no use once delivered. The number removed.
    ///
    /// # Errors
    /// The database fails.
    pub async fn purge_finished(
        &self,
        done_older_than: Duration,
        dead_older_than: Duration,
    ) -> Result<u64, DbErr> {
        let now = Utc::now();
        let cutoff = |age: Duration| {
            chrono::Duration::from_std(age)
                .ok()
                .and_then(|age| now.checked_sub_signed(age))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
        };
        let result = jobs::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(jobs::Column::State.eq(DONE))
                            .add(jobs::Column::UpdatedAt.lt(cutoff(done_older_than))),
                    )
                    .add(
                        Condition::all()
                            .add(jobs::Column::State.eq(DEAD))
                            .add(jobs::Column::UpdatedAt.lt(cutoff(dead_older_than))),
                    ),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Claims up to `limit` due jobs (or jobs whose worker's lease expired) for `worker`.
    async fn claim(&self, worker: &str, limit: usize) -> Result<Vec<jobs::Model>, DbErr> {
        let now = Utc::now();
        let claimable = || {
            Condition::any()
                .add(
                    Condition::all()
                        .add(jobs::Column::State.eq(PENDING))
                        .add(jobs::Column::RunAt.lte(now)),
                )
                .add(
                    Condition::all()
                        .add(jobs::Column::State.eq(RUNNING))
                        .add(jobs::Column::LockedUntil.lt(now)),
                )
        };
        let candidates = jobs::Entity::find()
            .filter(claimable())
            .order_by_asc(jobs::Column::RunAt)
            .limit(u64::try_from(limit.saturating_mul(2)).unwrap_or(u64::MAX))
            .all(&self.db)
            .await?;
        let lease =
            chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX);
        let mut claimed = Vec::new();
        for candidate in candidates {
            if claimed.len() == limit {
                break;
            }
            let result = jobs::Entity::update_many()
                .col_expr(jobs::Column::State, Expr::value(RUNNING))
                .col_expr(jobs::Column::LockedBy, Expr::value(worker))
                .col_expr(jobs::Column::LockedUntil, Expr::value(now + lease))
                .col_expr(
                    jobs::Column::Attempts,
                    sea_orm::sea_query::ExprTrait::add(Expr::col(jobs::Column::Attempts), 1),
                )
                .col_expr(jobs::Column::UpdatedAt, Expr::value(now))
                .filter(jobs::Column::Id.eq(candidate.id))
                .filter(claimable())
                .exec(&self.db)
                .await?;
            if result.rows_affected == 1 {
                claimed.push(jobs::Model {
                    attempts: candidate.attempts + 1,
                    ..candidate
                });
            }
        }
        Ok(claimed)
    }

    /// Records the outcome of a claimed job (only while `worker` still holds it).
    async fn finish(
        &self,
        job: &jobs::Model,
        worker: &str,
        outcome: &Result<(), String>,
    ) -> Result<&'static str, DbErr> {
        let now = Utc::now();
        let (state, run_at, error) = match outcome {
            Ok(()) => (DONE, job.run_at, None),
            Err(error) if job.attempts >= job.max_attempts => {
                (DEAD, job.run_at, Some(error.clone()))
            }
            Err(error) => {
                let delay =
                    chrono::Duration::from_std(backoff(self.settings.backoff_base, job.attempts))
                        .unwrap_or(chrono::Duration::MAX);
                (PENDING, now + delay, Some(error.clone()))
            }
        };
        jobs::Entity::update_many()
            .col_expr(jobs::Column::State, Expr::value(state))
            .col_expr(jobs::Column::RunAt, Expr::value(run_at))
            .col_expr(jobs::Column::LockedBy, Expr::value(Option::<String>::None))
            .col_expr(
                jobs::Column::LockedUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(jobs::Column::LastError, Expr::value(error))
            .col_expr(jobs::Column::UpdatedAt, Expr::value(now))
            .filter(jobs::Column::Id.eq(job.id))
            .filter(jobs::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(match state {
            DONE => "done",
            DEAD => "dead",
            _ => "retry",
        })
    }
}

/// Runs jobs of the registered kinds until shutdown.
pub struct Worker {
    queue: JobQueue,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    id: String,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub fn new(queue: JobQueue, metrics: Arc<Metrics>) -> Self {
        Self {
            queue,
            handlers: HashMap::new(),
            id: format!("worker-{}", Uuid::new_v4().simple()),
            metrics,
        }
    }

    #[must_use]
    pub fn register(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// Claims and runs jobs (`JOB_WORKERS` at once) until `shutdown`, then waits up to `drain` for
    /// running ones; any still running then are abandoned and run again once their lease expires.
    pub async fn run(self, shutdown: CancellationToken, drain: Duration) {
        let slots = self.queue.settings.workers;
        if slots == 0 {
            return;
        }
        let this = Arc::new(self);
        let mut running = JoinSet::new();
        loop {
            let free = slots.saturating_sub(running.len());
            if free > 0 && !shutdown.is_cancelled() {
                match this.queue.claim(&this.id, free).await {
                    Ok(jobs) => {
                        for job in jobs {
                            let worker = this.clone();
                            running.spawn(async move { worker.process(job).await });
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "cannot claim jobs"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = this.queue.wake.notified() => {}
                () = tokio::time::sleep(this.queue.settings.poll_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(drain, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = running.len(),
                "jobs still running at shutdown; they will run again"
            );
            running.abort_all();
        }
    }

    async fn process(&self, job: jobs::Model) {
        let span = tracing::info_span!(
            "job",
            otel.name = %format!("job {}", job.kind),
            otel.kind = "consumer",
            job_id = %job.id,
            kind = %job.kind,
            attempt = job.attempts,
            request_id = job.request_id.as_deref().unwrap_or(""),
            trace_id = tracing::field::Empty,
        );
        if crate::telemetry::otel::enabled() {
            // Its own trace, linked to the request that enqueued it.
            if let Some(parent) = &job.trace_parent {
                span.in_scope(|| crate::telemetry::otel::link_to(parent));
            }
            if let Some(trace_id) = span.in_scope(crate::telemetry::otel::current_trace_id) {
                span.record("trace_id", trace_id);
            }
        }
        async {
            let started = tokio::time::Instant::now();
            let waited = (Utc::now() - job.run_at).to_std().unwrap_or_default();
            self.metrics.record(|| {
                metrics::histogram!("job_queue_latency_seconds", "kind" => job.kind.clone())
                    .record(waited.as_secs_f64());
            });
            let outcome = match self.handlers.get(&job.kind) {
                Some(handler) => {
                    let context = JobContext {
                        id: job.id,
                        payload: &job.payload,
                        attempt: job.attempts,
                        request_id: job.request_id.as_deref(),
                    };
                    match tokio::time::timeout(self.queue.settings.lease, handler.handle(context)).await {
                        Ok(result) => result,
                        Err(_) => Err("timed out".to_owned()),
                    }
                }
                None => Err(format!("no handler for job kind {:?}", job.kind)),
            };
            match self.queue.finish(&job, &self.id, &outcome).await {
                Ok(state) => {
                    match (&outcome, state) {
                        (Ok(()), _) => tracing::info!("job done"),
                        (Err(error), "dead") => tracing::error!(error = %error, "job failed for the last time; moved to dead"),
                        (Err(error), _) => tracing::warn!(error = %error, "job failed; will retry"),
                    }
                    let labels = [("kind", job.kind.clone()), ("outcome", state.to_owned())];
                    self.metrics.record(|| {
                        metrics::counter!("jobs_total", &labels).increment(1);
                        metrics::histogram!("job_duration_seconds", &labels[..1])
                            .record(started.elapsed().as_secs_f64());
                    });
                }
                Err(error) => tracing::error!(error = %error, "cannot record a job's outcome"),
            }
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 30), MAX_BACKOFF);
    }
}
