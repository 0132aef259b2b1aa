//! Sliding-window rate limiting on the shared store: one atomic round trip per check, so every
//! instance sees the same counters. When the store is unreachable the limiter fails open (the
//! request goes through, `rate_limit_store_errors_total` counts it, a warning is logged at most
//! once a minute) or, when configured, closed.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::kv::{KeyValueStore, Op, StoreError, StoreResult, WindowOutcome};
use super::metrics::Metrics;
use crate::config::Quota;

const WARN_EVERY_SECS: u64 = 60;

/// The state of one policy's window after a hit.
#[derive(Debug, Clone)]
pub struct Window {
    pub policy: Cow<'static, str>,
    pub quota: Quota,
    pub outcome: WindowOutcome,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allowed(Window),
    Limited(Window),
    /// The store failed and the limiter fails open: no information, let it through.
    StoreDown,
    /// The store failed and the limiter fails closed.
    Unavailable,
}

pub struct RateLimiter {
    store: Arc<dyn KeyValueStore>,
    metrics: Arc<Metrics>,
    fail_closed: bool,
    last_warning: AtomicU64,
}

impl RateLimiter {
    pub fn new(store: Arc<dyn KeyValueStore>, metrics: Arc<Metrics>, fail_closed: bool) -> Self {
        Self {
            store,
            metrics,
            fail_closed,
            last_warning: AtomicU64::new(0),
        }
    }

    /// The store step that counts one hit of `key` against `quota` (to batch with others).
    pub fn op(key: &str, quota: Quota) -> Op {
        Op::Window {
            key: ["rl:", key].concat(),
            limit: quota.limit,
            window: quota.window,
        }
    }

    /// Counts one hit of `key` against `quota`.
    pub async fn hit(&self, policy: Cow<'static, str>, key: &str, quota: Quota) -> Decision {
        let outcome = self
            .store
            .sliding_window(&["rl:", key].concat(), quota.limit, quota.window)
            .await;
        self.decide(policy, quota, outcome)
    }

    /// The decision for what the store answered to [`RateLimiter::op`].
    pub fn decide(
        &self,
        policy: Cow<'static, str>,
        quota: Quota,
        outcome: StoreResult<WindowOutcome>,
    ) -> Decision {
        match outcome {
            Ok(outcome) => {
                let window = Window {
                    policy,
                    quota,
                    outcome,
                };
                if outcome.allowed {
                    Decision::Allowed(window)
                } else {
                    let labels = [("policy", window.policy.to_string())];
                    self.metrics
                        .record(|| metrics::counter!("rate_limited_total", &labels).increment(1));
                    Decision::Limited(window)
                }
            }
            Err(error) => self.store_down(&error),
        }
    }

    fn store_down(&self, error: &StoreError) -> Decision {
        self.metrics
            .record(|| metrics::counter!("rate_limit_store_errors_total").increment(1));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %error,
                fail_closed = self.fail_closed,
                "rate limit store unavailable"
            );
        }
        if self.fail_closed {
            Decision::Unavailable
        } else {
            Decision::StoreDown
        }
    }
}
