//! Redis implementation of the shared key-value store: one pooled round trip per call, every call
//! bounded by `REDIS_TIMEOUT` so a stalled Redis adds bounded latency instead of hanging requests.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime};
use redis::{AsyncCommands as _, Script};
use secrecy::ExposeSecret as _;

use super::kv::{KeyValueStore, StoreError, StoreResult, WindowOutcome};
use crate::config::RedisSettings;

/// A pool plus what every call needs: the key prefix and the per-call timeout.
#[derive(Clone)]
pub struct RedisClient {
    pub(crate) pool: Pool,
    pub(crate) client: redis::Client,
    pub(crate) prefix: Arc<str>,
    pub(crate) timeout: Duration,
}

impl RedisClient {
    /// Builds the pool without connecting.
    ///
    /// # Errors
    /// The URL is not a usable Redis URL.
    pub fn new(settings: &RedisSettings, prefix: &str) -> StoreResult<Self> {
        let url = settings.url.expose_secret();
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| StoreError::Backend(format!("invalid Redis configuration: {e}")))?
            .max_size(settings.pool_size)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build Redis pool: {e}")))?;
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Backend(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            pool,
            client,
            prefix: prefix.into(),
            timeout: settings.timeout,
        })
    }

    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `f` on a pooled connection within the timeout.
    async fn run<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self.pool.get().await.map_err(|e| match e {
                deadpool_redis::PoolError::Timeout(_) => StoreError::Timeout,
                other => StoreError::Unavailable(other.to_string()),
            })?;
            f(conn).await.map_err(map_redis_error)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout)?
    }
}

pub(crate) fn map_redis_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        StoreError::Unavailable(e.to_string())
    } else if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('INCRBY', KEYS[1], ARGV[1])
          if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
          end
          return v",
    )
});

static DELETE_IF_EQUALS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
          return 0",
    )
});

static EXPIRE_IF_EQUALS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
          return 0",
    )
});

/// A sorted-set log of hits scored by Redis' own clock, so every instance agrees on time.
static SLIDING_WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local limit = tonumber(ARGV[1])
          local window = tonumber(ARGV[2])
          local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
          local count = redis.call('ZCARD', KEYS[1])
          local allowed = 0
          if count < limit then
            redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
            count = count + 1
            allowed = 1
          end
          redis.call('PEXPIRE', KEYS[1], window)
          local reset = window
          local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
          if oldest[2] then reset = tonumber(oldest[2]) + window - now end
          return {allowed, count, reset}",
    )
});

pub struct RedisStore {
    client: RedisClient,
}

impl RedisStore {
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl KeyValueStore for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = self.client.key(key);
        self.client
            .run(|mut c| async move { c.get(key).await })
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let key = self.client.key(key);
        let value = value.to_vec();
        self.client
            .run(|mut c| async move {
                match ttl {
                    Some(ttl) => c.pset_ex(key, value, ms(ttl)).await,
                    None => c.set(key, value).await,
                }
            })
            .await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let key = self.client.key(key);
        let value = value.to_vec();
        self.client
            .run(|mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value).arg("NX");
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ms(ttl));
                }
                let reply: Option<String> = cmd.query_async(&mut c).await?;
                Ok(reply.is_some())
            })
            .await
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = self.client.key(key);
        self.client
            .run(|mut c| async move { c.get_del(key).await })
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let key = self.client.key(key);
        self.client
            .run(|mut c| async move {
                let n: u64 = c.del(key).await?;
                Ok(n > 0)
            })
            .await
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> StoreResult<bool> {
        let key = self.client.key(key);
        let expected = expected.to_vec();
        self.client
            .run(|mut c| async move {
                let n: u64 = DELETE_IF_EQUALS
                    .key(key)
                    .arg(expected)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n > 0)
            })
            .await
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        ttl: Duration,
    ) -> StoreResult<bool> {
        let key = self.client.key(key);
        let expected = expected.to_vec();
        self.client
            .run(|mut c| async move {
                let n: u64 = EXPIRE_IF_EQUALS
                    .key(key)
                    .arg(expected)
                    .arg(ms(ttl))
                    .invoke_async(&mut c)
                    .await?;
                Ok(n > 0)
            })
            .await
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let key = self.client.key(key);
        let ttl_ms = ttl.map_or(0, ms);
        self.client
            .run(|mut c| async move {
                INCREMENT
                    .key(key)
                    .arg(delta)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        let key = self.client.key(key);
        self.client
            .run(|mut c| async move {
                let pttl: i64 = c.pttl(key).await?;
                Ok(u64::try_from(pttl).ok().map(Duration::from_millis))
            })
            .await
    }

    async fn sliding_window(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> StoreResult<WindowOutcome> {
        let key = self.client.key(key);
        // Unique member per hit, so two hits in the same millisecond both count.
        let member = uuid::Uuid::new_v4().simple().to_string();
        let (allowed, count, reset): (u8, u64, u64) = self
            .client
            .run(|mut c| async move {
                SLIDING_WINDOW
                    .key(key)
                    .arg(limit)
                    .arg(ms(window))
                    .arg(member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let reset_after = Duration::from_millis(reset);
        Ok(WindowOutcome {
            allowed: allowed == 1,
            count,
            limit,
            retry_after: if allowed == 1 {
                Duration::ZERO
            } else {
                reset_after
            },
            reset_after,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client
            .run(|mut c| async move {
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            })
            .await
    }
}
