//! Recurring work, once across all instances: each schedule's runs fall on **slots** (multiples of
//! an interval since the Unix epoch, or the times of a cron expression — parsed by the `cron`
//! crate), the same on every instance. At a slot (plus a random jitter, so a fleet does not
//! stampede) every instance tries to take the slot's lease in the shared store; the one that
//! gets it enqueues a durable job, which any worker then runs with the queue's retries. A
//! missed slot (every instance down) is not made up. Stops at shutdown.
//!
//! Metrics: `scheduled_runs_total{schedule, result}` with `result` one of `enqueued` (this
//! instance won the slot), `skipped` (another did), `error` (the store or the database failed:
//! the slot is skipped rather than risk running twice).

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::jobs::JobQueue;
use super::kv::KeyValueStore;
use super::metrics::Metrics;

/// When a schedule runs.
#[derive(Debug, Clone)]
pub enum Every {
    /// Every `period`, on multiples of it since the epoch (`5m` runs at :00, :05, …).
    Interval(Duration),
    /// At the times of a cron expression (UTC; seconds first: `0 30 3 * * *` is 03:30:00).
    Cron(Box<cron::Schedule>),
}

impl Every {
    /// A duration (`30s`, `5m`, `1h`, bare seconds) or a cron expression (`0 */5 * * * *`,
    /// `@hourly`).
    ///
    /// # Errors
    /// Neither parses, or the interval is under a second.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(period) = crate::config::reader::parse_duration(text) {
            return if period >= Duration::from_secs(1) {
                Ok(Self::Interval(period))
            } else {
                Err("an interval must be at least 1s".into())
            };
        }
        cron::Schedule::from_str(text)
            .map(|schedule| Self::Cron(Box::new(schedule)))
            .map_err(|e| format!("{text:?} is neither a duration (5m) nor a cron expression ({e})"))
    }

    /// The first slot strictly after `after`.
    pub fn next_slot(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Interval(period) => {
                let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
                let now_ms = after.timestamp_millis();
                let next = (now_ms.div_euclid(period_ms) + 1).checked_mul(period_ms)?;
                Utc.timestamp_millis_opt(next).single()
            }
            Self::Cron(schedule) => schedule.after(&after).next(),
        }
    }

    /// How long a slot's lease must outlive it: until well past the next slot, so an instance
    /// whose clock lags cannot take the same slot again.
    fn lease_ttl(&self, slot: DateTime<Utc>) -> Duration {
        let gap = self
            .next_slot(slot)
            .and_then(|next| (next - slot).to_std().ok())
            .unwrap_or(Duration::from_secs(60));
        gap.saturating_mul(2).max(Duration::from_secs(10))
    }
}

/// One recurring run, as the registry declares it and the settings resolve it.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub name: &'static str,
    pub every: Every,
    /// At most this long after the slot (and at most a tenth of the way to the next), chosen at
    /// random per instance and slot.
    pub jitter: Duration,
    /// The kind of job each run enqueues (with a [`Run`] payload).
    pub job: &'static str,
}

/// The payload of a scheduled job: which schedule and slot it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub schedule: String,
    /// The slot, in Unix seconds.
    pub slot: i64,
}

/// What the scheduler needs; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    pub kv: Arc<dyn KeyValueStore>,
    pub jobs: JobQueue,
    pub db: sea_orm::DatabaseConnection,
    pub metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Runs every schedule until `shutdown`.
    pub async fn run(self, schedules: Vec<Scheduled>, shutdown: CancellationToken) {
        let mut runs = tokio::task::JoinSet::new();
        for schedule in schedules {
            runs.spawn(self.clone().follow(schedule, shutdown.clone()));
        }
        while runs.join_next().await.is_some() {}
    }

    async fn follow(self, schedule: Scheduled, shutdown: CancellationToken) {
        loop {
            let Some(slot) = schedule.every.next_slot(Utc::now()) else {
                tracing::warn!(schedule = schedule.name, "the schedule has no next run");
                return;
            };
            // Never more than a tenth of the way to the next slot.
            let gap = schedule
                .every
                .next_slot(slot)
                .and_then(|next| (next - slot).to_std().ok())
                .unwrap_or_default();
            let bound = schedule.jitter.min(gap / 10);
            let jitter = if bound.is_zero() {
                Duration::ZERO
            } else {
                rand::rng().random_range(Duration::ZERO..bound)
            };
            let wait = (slot - Utc::now()).to_std().unwrap_or_default() + jitter;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let result = self.fire(&schedule, slot).await;
            self.metrics.record(|| {
                metrics::counter!(
                    "scheduled_runs_total",
                    "schedule" => schedule.name,
                    "result" => result,
                )
                .increment(1);
            });
        }
    }

    /// Takes the slot's lease and, when this instance got it, enqueues the run's job.
    pub async fn fire(&self, schedule: &Scheduled, slot: DateTime<Utc>) -> &'static str {
        let key = format!("schedule:{}:{}", schedule.name, slot.timestamp());
        let ttl = schedule.every.lease_ttl(slot);
        match self.kv.set_if_absent(&key, b"1", Some(ttl)).await {
            Ok(true) => {}
            Ok(false) => return "skipped",
            Err(error) => {
                error.log("scheduler: cannot take a slot's lease; the run is skipped");
                return "error";
            }
        }
        let run = Run {
            schedule: schedule.name.to_owned(),
            slot: slot.timestamp(),
        };
        match self.jobs.enqueue(&self.db, schedule.job, &run, None).await {
            Ok(_) => {
                tracing::info!(schedule = schedule.name, slot = %slot, "scheduled run enqueued");
                "enqueued"
            }
            Err(error) => {
                tracing::error!(schedule = schedule.name, error = %error, "cannot enqueue a scheduled run");
                "error"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_fall_on_multiples_of_the_period() {
        let every = Every::parse("5m").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 7, 30).unwrap();
        assert_eq!(
            every.next_slot(at).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 10, 10, 0).unwrap()
        );
        let on = Utc.with_ymd_and_hms(2026, 12, 1, 10, 10, 0).unwrap();
        assert_eq!(
            every.next_slot(on).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 10, 15, 0).unwrap()
        );
    }

    #[test]
    fn cron_expressions_are_parsed_by_the_cron_crate() {
        let every = Every::parse("0 30 3 * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        assert_eq!(
            every.next_slot(at).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 2, 3, 30, 0).unwrap()
        );
        assert!(Every::parse("@hourly").is_ok());
        assert!(Every::parse("every tuesday").is_err());
        assert!(Every::parse("0s").is_err());
    }
}
