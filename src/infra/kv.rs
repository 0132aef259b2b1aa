//! The key-value contract shared by every instance: TTLs, atomic counters, compare-and-set and a
//! sliding-window log, the building blocks of rate limits, caches, one-time tokens and leases.

use std::time::Duration;

use async_trait::async_trait;

/// `prefix` followed by `id` as `Display` writes it (lowercase, hyphenated), with room for
/// `more` bytes after: a store key made on every request without the formatting machinery.
pub fn key_with_uuid(prefix: &str, id: uuid::Uuid, more: usize) -> String {
    let mut key = String::with_capacity(prefix.len() + uuid::fmt::Hyphenated::LENGTH + more);
    key.push_str(prefix);
    key.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    key
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
    #[error("shared store timed out")]
    Timeout,
    #[error("shared store error: {0}")]
    Backend(String),
    /// The store failed recently and is not asked again until its circuit breaker allows.
    #[error("shared store unavailable (circuit open)")]
    CircuitOpen,
}

impl StoreError {
    /// Logs a store failure where it was handled: a warning, except while the circuit breaker is
    /// open (the breaker already said the store is down, once).
    pub fn log(&self, what: &str) {
        if matches!(self, Self::CircuitOpen) {
            tracing::debug!(error = %self, "{what}");
        } else {
            tracing::warn!(error = %self, "{what}");
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whole milliseconds of `d`, saturating: the unit of every store's times and expiries (Redis
/// counts in milliseconds, and the in-process store does the same arithmetic).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The verdict of one hit on a sliding-window log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOutcome {
    pub allowed: bool,
    /// Hits inside the window after this call (including this one when allowed).
    pub count: u64,
    pub limit: u64,
    /// When refused: time until the oldest hit ages out, i.e. until one more hit is allowed.
    pub retry_after: Duration,
    /// Time until the oldest hit in the window ages out (a slot frees), allowed or not.
    pub reset_after: Duration,
}

impl WindowOutcome {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.count)
    }
}

/// One step of a [`KeyValueStore::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get(String),
    /// A hit on a sliding-window log (see [`KeyValueStore::sliding_window`]).
    Window {
        key: String,
        limit: u64,
        window: Duration,
    },
    /// See [`KeyValueStore::increment`].
    Increment {
        key: String,
        delta: i64,
        ttl: Option<Duration>,
    },
}

/// The answer to one [`Op`], in the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Window(WindowOutcome),
    Count(i64),
}

/// Keys are plain strings; implementations namespace them (Redis: `REDIS_KEY_PREFIX`).
#[async_trait]
pub trait KeyValueStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()>;

    /// Stores only when the key is absent; `true` when this call created it.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StoreResult<bool>;

    /// Returns the value and deletes it in one step, so a one-time token is used at most once.
    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// `true` when the key existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;

    /// Deletes only when the stored value equals `expected` (releasing a lease one still holds).
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> StoreResult<bool>;

    /// Sets a new TTL only when the stored value equals `expected` (renewing a lease).
    async fn expire_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Adds `delta` to an integer counter, creating it at 0 (with `ttl`) when absent.
    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> StoreResult<i64>;

    /// Remaining time to live; `None` when the key is absent or never expires.
    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>>;

    /// Records a hit when fewer than `limit` hits happened in the last `window`; one atomic step.
    async fn sliding_window(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> StoreResult<WindowOutcome>;

    /// Runs several steps in one round trip (one Lua script on Redis), atomically; the replies
    /// come in the order of `ops`. What a request needs from the store on its hot path (the
    /// caller's cached state and its rate-limit window) is fetched this way.
    async fn batch(&self, ops: &[Op]) -> StoreResult<Vec<Reply>>;

    /// A cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
}
