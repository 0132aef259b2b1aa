//! The kernel's housekeeping, once an hour on one instance at a time (a lease in the shared
//! store): revocation records whose access tokens have expired, and finished jobs past
//! `JOB_RETENTION` (dead ones past `JOB_DEAD_RETENTION`), whose payloads are of no use once
//! delivered.

use std::time::Duration;

use crate::identity::sessions;
use crate::state::AppState;

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.stores.locks.try_acquire("maintenance", EVERY).await {
            // Held until it expires, so other instances skip this round.
            Ok(Some(_lease)) => sweep(&state).await,
            Ok(None) => {}
            Err(error) => error.log("maintenance: cannot take the lease"),
        }
    }
}

/// Sends cost-budget charges to the shared store every `budget::FLUSH_INTERVAL`, and once more
/// at shutdown; a failed flush is logged at most once a minute (the charges wait for the next).
pub async fn flush_budgets(state: AppState) {
    let mut tick = tokio::time::interval(crate::infra::budget::FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let stopping = tokio::select! {
            () = state.shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(error) = state.budgets.flush(state.stores.kv.as_ref()).await
            && warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            warned = Some(tokio::time::Instant::now());
            error.log("cannot send cost-budget charges; they wait for the next flush");
        }
        if stopping {
            return;
        }
    }
}

/// One round of housekeeping.
pub async fn sweep(state: &AppState) {
    match sessions::purge_expired_revocations(&state.db).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "expired session revocations removed"),
        Err(error) => error.report(),
    }
    let jobs = &state.settings.jobs;
    match state
        .jobs
        .purge_finished(jobs.retention, jobs.dead_retention)
        .await
    {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "finished jobs removed"),
        Err(error) => crate::error::AppError::from(error).report(),
    }
}
