//! A circuit breaker for the shared store: once Redis is known to be down, calls fail at once
//! instead of each waiting `REDIS_TIMEOUT`, so a hung Redis costs a request at most one timeout
//! and the logs get one line when it goes away and one when it comes back, not one per call.
//!
//! Closed → (a timeout, or `threshold` errors in a row) → open for `cooldown`, failing fast →
//! half-open: one probe call goes through; its success closes the circuit, its failure opens it
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::kv::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everything else fails fast until it reports.
    HalfOpen,
}

pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    /// Calls refused while open (for `/metrics`).
    rejected: AtomicU64,
    opened: AtomicU64,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// Whether a call may go to the store now.
    ///
    /// # Errors
    /// `CircuitOpen` while the store is considered down.
    pub fn allow(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                Ok(())
            }
            State::Open { .. } | State::HalfOpen => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::CircuitOpen)
            }
        }
    }

    /// Whether a call would be let through, without taking the probe of a circuit that has
    /// cooled down (the call itself does, through [`allow`](Self::allow)): for a caller that
    /// hands its call to someone else (joined batch calls) and should fail fast meanwhile.
    ///
    /// # Errors
    /// `CircuitOpen` while the store is considered down.
    pub fn check(&self) -> Result<(), StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if Instant::now() >= until => Ok(()),
            State::Open { .. } | State::HalfOpen => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::CircuitOpen)
            }
        }
    }

    pub fn success(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *state == State::HalfOpen {
            tracing::info!("shared store reachable again; circuit closed");
        }
        *state = State::Closed { failures: 0 };
    }

    pub fn failure(&self, error: &StoreError) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let open = match *state {
            // A timeout means every caller would wait as long: stop at once.
            State::Closed { failures } => {
                let failures = failures + 1;
                *state = State::Closed { failures };
                matches!(error, StoreError::Timeout) || failures >= self.threshold
            }
            State::HalfOpen => true,
            State::Open { .. } => false,
        };
        if open {
            if !matches!(*state, State::HalfOpen) {
                tracing::warn!(
                    error = %error,
                    cooldown = %humantime::format_duration(self.cooldown),
                    "shared store unreachable; failing fast until it answers again"
                );
            }
            self.opened.fetch_add(1, Ordering::Relaxed);
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Closed { .. }
        )
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timeout_opens_at_once_and_a_probe_closes_it() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(2));
        assert!(breaker.allow().is_ok());
        breaker.failure(&StoreError::Timeout);
        assert!(matches!(breaker.allow(), Err(StoreError::CircuitOpen)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(breaker.allow().is_ok(), "one probe after the cooldown");
        assert!(
            breaker.allow().is_err(),
            "nothing else while the probe runs"
        );
        breaker.success();
        assert!(breaker.allow().is_ok());
        assert_eq!(breaker.opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_leaves_the_probe_to_the_call() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(2));
        breaker.failure(&StoreError::Timeout);
        assert!(matches!(breaker.check(), Err(StoreError::CircuitOpen)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(breaker.check().is_ok());
        assert!(breaker.check().is_ok(), "a look takes nothing");
        assert!(breaker.allow().is_ok(), "the call is the probe");
        assert!(
            breaker.check().is_err(),
            "nothing else while the probe runs"
        );
        breaker.success();
        assert!(breaker.check().is_ok());
        assert_eq!(breaker.rejected(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_open_after_the_threshold_and_a_failed_probe_reopens() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(1));
        breaker.failure(&StoreError::Unavailable("refused".into()));
        assert!(breaker.allow().is_ok());
        breaker.failure(&StoreError::Unavailable("refused".into()));
        assert!(breaker.allow().is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.allow().is_ok());
        breaker.failure(&StoreError::Unavailable("refused".into()));
        assert!(breaker.allow().is_err());
    }
}
