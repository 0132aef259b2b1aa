//! In-process stand-ins for Redis: correct for one instance, lost on restart.

use std::collections::VecDeque;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::hash_map::EntryRef;
use tokio::time::Instant;

use super::kv::{KeyValueStore, Op, Reply, StoreError, StoreResult, WindowOutcome, millis};

/// Expired entries are dropped lazily on access and swept every this many writes.
const SWEEP_EVERY: u64 = 1024;

enum Value {
    Bytes(Vec<u8>),
    Log(HitLog),
}

/// A sliding window's hits, oldest first, as whole milliseconds after `base` (the log's first
/// hit): 8 bytes a hit instead of an `Instant`'s 16 (a busy client at a high limit keeps a whole
/// window of them), and the same millisecond arithmetic as the Redis script.
struct HitLog {
    base: Instant,
    hits: VecDeque<u64>,
}

struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// hashbrown's map for its `entry_ref` (one hash per lookup, the key copied only when inserted),
/// with std's keyed SipHash: keys carry client addresses, so the hash stays flood-resistant.
type Entries = hashbrown::HashMap<String, Entry, RandomState>;

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<Entries>,
    writes: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` under the lock. The critical sections never await, so a blocking mutex is both
    /// correct and much cheaper than an async one.
    async fn with_entries<T>(&self, f: impl FnOnce(&mut Entries, Instant) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.retain(|_, e| e.live(now));
        }
        f(&mut entries, now)
    }
}

/// The live entry under `key`, removing it first when it has expired.
fn live<'a>(entries: &'a mut Entries, key: &str, now: Instant) -> Option<&'a mut Entry> {
    match entries.entry_ref(key) {
        EntryRef::Occupied(entry) if entry.get().live(now) => Some(entry.into_mut()),
        EntryRef::Occupied(entry) => {
            entry.remove();
            None
        }
        EntryRef::Vacant(_) => None,
    }
}

/// The live entry under `key`, or `fresh` put there (in place of an expired one): one lookup.
fn live_or<'a>(
    entries: &'a mut Entries,
    key: &str,
    now: Instant,
    fresh: impl FnOnce() -> Entry,
) -> &'a mut Entry {
    match entries.entry_ref(key) {
        EntryRef::Occupied(mut entry) => {
            if !entry.get().live(now) {
                *entry.get_mut() = fresh();
            }
            entry.into_mut()
        }
        EntryRef::Vacant(entry) => entry.insert(fresh()),
    }
}

fn increment_in(
    m: &mut Entries,
    now: Instant,
    key: &str,
    delta: i64,
    ttl: Option<Duration>,
) -> StoreResult<i64> {
    let entry = live_or(m, key, now, || Entry {
        value: Value::Bytes(b"0".to_vec()),
        expires_at: ttl.map(|t| now + t),
    });
    let Value::Bytes(bytes) = &mut entry.value else {
        return Err(StoreError::Backend("value is not an integer".into()));
    };
    let current: i64 = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Backend("value is not an integer".into()))?;
    let next = current
        .checked_add(delta)
        .ok_or_else(|| StoreError::Backend("increment would overflow".into()))?;
    *bytes = next.to_string().into_bytes();
    Ok(next)
}

fn window_in(
    m: &mut Entries,
    now: Instant,
    key: &str,
    limit: u64,
    window: Duration,
) -> StoreResult<WindowOutcome> {
    let entry = live_or(m, key, now, || Entry {
        value: Value::Log(HitLog {
            base: now,
            hits: VecDeque::new(),
        }),
        expires_at: None,
    });
    let Value::Log(log) = &mut entry.value else {
        return Err(StoreError::Backend("key does not hold a window".into()));
    };
    let at = millis(now.saturating_duration_since(log.base));
    let span = millis(window).max(1);
    // Oldest first (monotonic times, appended in order): the hits that aged out are a prefix.
    let aged = log.hits.partition_point(|t| at - t >= span);
    log.hits.drain(..aged);
    let allowed = (log.hits.len() as u64) < limit;
    if allowed {
        log.hits.push_back(at);
    }
    entry.expires_at = Some(now + window);
    let reset_after = log.hits.front().map_or(window, |oldest| {
        Duration::from_millis((oldest + span).saturating_sub(at))
    });
    Ok(WindowOutcome {
        allowed,
        count: log.hits.len() as u64,
        limit,
        retry_after: if allowed { Duration::ZERO } else { reset_after },
        reset_after,
    })
}

fn bytes_of(entry: Option<&mut Entry>) -> Option<Vec<u8>> {
    match entry.map(|e| &e.value) {
        Some(Value::Bytes(b)) => Some(b.clone()),
        _ => None,
    }
}

#[async_trait]
impl KeyValueStore for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .with_entries(|m, now| bytes_of(live(m, key, now)))
            .await)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.with_entries(|m, now| {
            m.insert(
                key.to_owned(),
                Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires_at: ttl.map(|t| now + t),
                },
            );
        })
        .await;
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Ok(self
            .with_entries(|m, now| {
                if live(m, key, now).is_some() {
                    return false;
                }
                m.insert(
                    key.to_owned(),
                    Entry {
                        value: Value::Bytes(value.to_vec()),
                        expires_at: ttl.map(|t| now + t),
                    },
                );
                true
            })
            .await)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .with_entries(|m, now| {
                let value = bytes_of(live(m, key, now));
                if value.is_some() {
                    m.remove(key);
                }
                value
            })
            .await)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        Ok(self
            .with_entries(|m, now| live(m, key, now).is_some() && m.remove(key).is_some())
            .await)
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> StoreResult<bool> {
        Ok(self
            .with_entries(|m, now| {
                if bytes_of(live(m, key, now)).as_deref() == Some(expected) {
                    m.remove(key);
                    true
                } else {
                    false
                }
            })
            .await)
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        ttl: Duration,
    ) -> StoreResult<bool> {
        Ok(self
            .with_entries(|m, now| match live(m, key, now) {
                Some(entry) if matches!(&entry.value, Value::Bytes(b) if b == expected) => {
                    entry.expires_at = Some(now + ttl);
                    true
                }
                _ => false,
            })
            .await)
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        self.with_entries(|m, now| increment_in(m, now, key, delta, ttl))
            .await
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        Ok(self
            .with_entries(|m, now| {
                live(m, key, now)
                    .and_then(|e| e.expires_at)
                    .map(|at| at.saturating_duration_since(now))
            })
            .await)
    }

    async fn sliding_window(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> StoreResult<WindowOutcome> {
        self.with_entries(|m, now| window_in(m, now, key, limit, window))
            .await
    }

    async fn batch(&self, ops: &[Op]) -> StoreResult<Vec<Reply>> {
        self.with_entries(|m, now| {
            ops.iter()
                .map(|op| match op {
                    Op::Get(key) => Ok(Reply::Value(bytes_of(live(m, key, now)))),
                    Op::Window { key, limit, window } => {
                        window_in(m, now, key, *limit, *window).map(Reply::Window)
                    }
                    Op::Increment { key, delta, ttl } => {
                        increment_in(m, now, key, *delta, *ttl).map(Reply::Count)
                    }
                })
                .collect()
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
