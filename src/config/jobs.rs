//! Background jobs (`JOB_*`).

use std::time::Duration;

use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs this instance runs at once; 0 runs none (enqueue only).
    pub workers: usize,
    pub max_attempts: i32,
    /// Delay before the first retry; each later retry waits twice as long (capped at an hour).
    pub backoff_base: Duration,
    pub poll_interval: Duration,
    /// How long a claimed job stays claimed; a crashed worker's jobs run again after it.
    pub lease: Duration,
    /// Finished jobs are deleted after this long (their payloads are of no use once delivered).
    pub retention: Duration,
    /// Dead jobs are kept longer, for inspection and requeueing.
    pub dead_retention: Duration,
}

impl JobSettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        Self {
            workers: r.number("JOB_WORKERS", 4usize, 0, 256),
            max_attempts: r.number("JOB_MAX_ATTEMPTS", 5i32, 1, 100),
            backoff_base: r.duration("JOB_BACKOFF_BASE", Duration::from_secs(2)),
            poll_interval: r.duration("JOB_POLL_INTERVAL", Duration::from_secs(1)),
            lease: r.duration("JOB_LEASE", Duration::from_secs(300)),
            retention: r.duration("JOB_RETENTION", Duration::from_secs(7 * 24 * 3600)),
            dead_retention: r.duration("JOB_DEAD_RETENTION", Duration::from_secs(30 * 24 * 3600)),
        }
    }
}
