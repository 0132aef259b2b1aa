//! Adapters to the outside world. Each shared concern is a small trait with an in-process and a
//! Redis implementation, chosen once at start from the configuration; nothing else knows which.

pub mod breaker;
pub mod budget;
pub mod cache;
pub mod crypto;
pub mod db;
pub mod files;
pub mod jobs;
pub mod kv;
pub mod lock;
pub mod mailer;
pub mod memory;
pub mod metrics;
pub mod pubsub;
pub mod rate_limit;
pub mod redis;
pub mod scheduler;
pub mod tags;

use std::sync::Arc;

pub use cache::{BoundedCache, Bounds};
pub use kv::{KeyValueStore, Op, Reply, StoreError, StoreResult, WindowOutcome};
pub use lock::{Lease, Locks};
pub use pubsub::{PubSub, Subscription};

use crate::config::Settings;

/// The stores every instance shares: key-value (with counters and scripts), pub/sub and locks.
#[derive(Clone)]
pub struct SharedStores {
    pub kv: Arc<dyn KeyValueStore>,
    /// LRU caches with a capacity per namespace (persisted queries).
    pub cache: Arc<dyn BoundedCache>,
    pub pubsub: Arc<dyn PubSub>,
    pub locks: Locks,
    /// `redis` or `memory`, for health checks and stats.
    pub backend: &'static str,
    /// Redis' circuit breaker (for `/metrics`); none in process.
    pub breaker: Option<Arc<breaker::CircuitBreaker>>,
    /// How Redis batch calls were joined (for `/metrics`); none in process.
    pub joins: Option<Arc<redis::JoinStats>>,
}

impl SharedStores {
    /// In-process stores: one instance only, nothing survives a restart.
    pub fn in_process() -> Self {
        let kv: Arc<dyn KeyValueStore> = Arc::new(memory::MemoryStore::new());
        Self {
            locks: Locks::new(kv.clone()),
            kv,
            cache: Arc::new(cache::MemoryCache::default()),
            pubsub: Arc::new(pubsub::MemoryPubSub::new()),
            backend: "memory",
            breaker: None,
            joins: None,
        }
    }

    /// Redis when `REDIS_URL` is set, otherwise in-process. Creating the Redis pool does not
    /// connect, so a Redis that is down shows in readiness, not as a failed start.
    ///
    /// # Errors
    /// The Redis URL cannot be turned into a pool.
    pub fn from_settings(settings: &Settings) -> StoreResult<Self> {
        let Some(redis) = &settings.redis else {
            return Ok(Self::in_process());
        };
        let client = redis::RedisClient::new(redis, &settings.key_prefix)?;
        let kv: Arc<dyn KeyValueStore> = Arc::new(redis::RedisStore::new(client.clone()));
        Ok(Self {
            locks: Locks::new(kv.clone()),
            kv,
            cache: Arc::new(cache::RedisCache::new(client.clone())),
            breaker: Some(client.breaker.clone()),
            joins: Some(client.join_stats()),
            pubsub: Arc::new(pubsub::RedisPubSub::new(client)),
            backend: "redis",
        })
    }
}
