//! Redis implementation of the shared key-value store: one round trip per call, every call
//! bounded by `REDIS_TIMEOUT` so a stalled Redis adds bounded latency instead of hanging requests.
//!
//! Calls share a few multiplexed connections (`REDIS_POOL_SIZE`, taken in turn): concurrent
//! commands are pipelined on each, and nothing is sent but the command itself. (A checkout pool
//! checks a connection with a `PING` every time it hands one out: a second round trip for every
//! call.) A connection that timed out or dropped is replaced on the next call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};
use secrecy::ExposeSecret as _;

use self::coalesce::Coalescer;
pub use self::coalesce::JoinStats;
use super::breaker::CircuitBreaker;
use super::kv::{KeyValueStore, Op, Reply, StoreError, StoreResult, WindowOutcome};
use crate::config::RedisSettings;

mod coalesce;
mod fold;

/// The connections plus what every call needs: the key prefix, the per-call timeout and the
/// circuit breaker shared by every call of this instance.
#[derive(Clone)]
pub struct RedisClient {
    connections: Arc<Connections>,
    /// Concurrent `BATCH` calls joined (see `coalesce`).
    batches: Arc<Coalescer>,
    pub(crate) client: redis::Client,
    pub(crate) prefix: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) breaker: Arc<CircuitBreaker>,
}

/// Multiplexed connections, made on first use and replaced after a failure.
struct Connections {
    /// Each slot's connection, with the number it was made under.
    slots: Vec<Mutex<Option<(u64, ConnectionManager)>>>,
    next: AtomicUsize,
    made: AtomicU64,
}

impl Connections {
    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Option<(u64, ConnectionManager)>> {
        self.slots[index % self.slots.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
    }

    fn current(&self, index: usize) -> Option<(u64, ConnectionManager)> {
        self.slot(index).clone()
    }

    /// Keeps a new connection in the slot; its number.
    fn keep(&self, index: usize, connection: ConnectionManager) -> u64 {
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        *self.slot(index) = Some((number, connection));
        number
    }

    /// Empties the slot if it still holds connection `number` (not one made since).
    fn forget(&self, index: usize, number: u64) {
        let mut slot = self.slot(index);
        if slot.as_ref().is_some_and(|(held, _)| *held == number) {
            *slot = None;
        }
    }
}

impl RedisClient {
    /// Sets the client up without connecting.
    ///
    /// # Errors
    /// The URL is not a usable Redis URL.
    pub fn new(settings: &RedisSettings, prefix: &str) -> StoreResult<Self> {
        let url = settings.url.expose_secret();
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Backend(format!("invalid Redis URL: {e}")))?;
        let slots: Vec<_> = (0..settings.pool_size.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        // One joined call out per connection: measured against four and eight per connection
        // (PostgreSQL + Redis on one 2-core machine), one was as fast or faster.
        let batches = Arc::new(Coalescer::new(slots.len(), MAX_JOINED_STEPS));
        Ok(Self {
            batches,
            connections: Arc::new(Connections {
                slots,
                next: AtomicUsize::new(0),
                made: AtomicU64::new(0),
            }),
            client,
            prefix: prefix.into(),
            timeout: settings.timeout,
            breaker: Arc::new(CircuitBreaker::new(
                settings.circuit_threshold,
                settings.circuit_cooldown,
            )),
        })
    }

    /// `key` under this instance's prefix (made for every step of every call: without `format!`).
    pub(crate) fn key(&self, key: &str) -> String {
        self.key_with_room(key, 0)
    }

    /// [`Self::key`], with room for `more` bytes after it.
    pub(crate) fn key_with_room(&self, key: &str, more: usize) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len() + more);
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// The connection in `index`'s slot and its number, connecting it when there is none.
    async fn connection(&self, index: usize) -> StoreResult<(u64, ConnectionManager)> {
        if let Some(held) = self.connections.current(index) {
            return Ok(held);
        }
        // No response timeout of redis-rs's own: `run` bounds every call with `REDIS_TIMEOUT`
        // already, and a second timer per command is a second timer-wheel entry per request.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None)
            // Reconnecting is this client's business (the next call), not a retry loop's.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(map_redis_error)?;
        let number = self.connections.keep(index, connection.clone());
        Ok((number, connection))
    }

    /// Runs `f` on one of the connections within the timeout, unless the circuit is open.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.breaker.allow()?;
        let index = self.connections.take_turn();
        // Which connection the call used (none: it never got one).
        let used = AtomicU64::new(u64::MAX);
        let work = async {
            let (number, connection) = self.connection(index).await?;
            used.store(number, Ordering::Relaxed);
            f(connection).await.map_err(map_redis_error)
        };
        let result = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout)
            .and_then(|r| r);
        match &result {
            Ok(_) => self.breaker.success(),
            // A command the server refused says nothing about its health.
            Err(StoreError::Backend(_)) => self.breaker.success(),
            Err(error) => {
                // A connection that hung or dropped is not trusted again: the next call in this
                // slot connects afresh (unless another call has already replaced it).
                self.connections.forget(index, used.load(Ordering::Relaxed));
                self.breaker.failure(error);
            }
        }
        result
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
    super::kv::millis(d).max(1)
}

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

/// Several steps in one atomic round trip. Per step, its keys in `KEYS` and its name and
/// arguments in `ARGV`, in order; one reply per step, or `{"\0step-error", message}` in its place
/// when Redis refused one of its commands (the other steps still run; see `coalesce`):
/// - `get` (one key);
/// - `win limit window_ms hits` (one key: a list of hit times, see [`window_key`]) →
///   `{count before, hits allowed, ms until the oldest hit ages out}`: the hits are taken in
///   order, so the first `allowed` were counted after the ones before them and the rest refused
///   (`fold::unfold` gives each hit its own outcome; one reply, not one per hit). The hits that
///   aged out go in one `LTRIM`, found in a logarithmic number of `LINDEX`es however many they
///   are. A hit over the limit is refused without a write (so also when Redis could not append,
///   out of memory); the allowed ones are appended in one `RPUSH` and move the key's expiry,
///   which the newest hit decides;
/// - `incr delta ttl_ms` (one key);
/// - `tget field ttl_ms tag_prefix generation` (a bounded cache's entries hash, last-use sorted
///   set and sequence counter; see `infra::cache`) → `{entry or false, versions of the tags its
///   header line names, generation}`. A hit refreshes the entry's last use only when that is
///   older than a tenth of the TTL (at most a second): an entry read thousands of times a second
///   is not re-scored each time.
static BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local now, stamp = nil, nil
          local function clock()
            if not now then
              local t = redis.call('TIME')
              now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
              stamp = string.format('%d', now)
            end
            return now
          end
          local function step(op, a, k)
            local key = KEYS[k]
            if op == 'get' then
              return redis.call('GET', key)
            elseif op == 'win' then
              local limit = tonumber(ARGV[a + 1])
              local span = ARGV[a + 2]
              local window = tonumber(span)
              local now = clock()
              local cutoff = now - window
              local oldest = tonumber(redis.call('LINDEX', key, 0))
              if oldest and oldest <= cutoff then
                -- Hit times are appended in order: gallop to a hit still inside the window,
                -- bisect back to the first one, and drop everything before it in one LTRIM.
                -- (A loop of LPOPs took as long as the hits it dropped: a busy client back
                -- after a pause had a whole window's hits dropped one by one, every instance
                -- waiting on Redis meanwhile.)
                local gone, step = 0, 1
                local first, at_first
                while true do
                  local at = gone + step
                  local t = tonumber(redis.call('LINDEX', key, at))
                  if not t or t > cutoff then
                    first, at_first = at, t
                    break
                  end
                  gone, step = at, step * 2
                end
                while first - gone > 1 do
                  local mid = math.floor((gone + first) / 2)
                  local t = tonumber(redis.call('LINDEX', key, mid))
                  if t and t <= cutoff then
                    gone = mid
                  else
                    first, at_first = mid, t
                  end
                end
                redis.call('LTRIM', key, first, -1)
                oldest = at_first
              end
              local reset = window
              if oldest then reset = oldest + window - now end
              -- A hit over the limit writes nothing: a client flooding past its limit costs
              -- Redis reads only (no append and take-back per refused hit, none of it sent to
              -- replicas or the AOF), and is refused even when Redis could not append (out of
              -- memory under `noeviction`).
              -- Several hits on one window (folded together in one call, see `fold`)
              -- are taken in order, as one step each would be: the same clock, so the same
              -- reset, and each hit counted after the ones before it. So the first ones are
              -- allowed and the rest refused, and one reply says where the line fell.
              local count = redis.call('LLEN', key)
              local hits = tonumber(ARGV[a + 3])
              local added = math.max(0, math.min(hits, limit - count))
              if added > 0 then
                local stamps = {}
                for h = 1, added do stamps[h] = stamp end
                redis.call('RPUSH', key, unpack(stamps))
                redis.call('PEXPIRE', key, span)
              end
              return {count, added, reset}
            elseif op == 'incr' then
              local v = redis.call('INCRBY', key, ARGV[a + 1])
              local ttl = tonumber(ARGV[a + 2])
              if ttl > 0 and redis.call('PTTL', key) == -1 then
                redis.call('PEXPIRE', key, ttl)
              end
              return v
            else
              local entries, uses, seq = key, KEYS[k + 1], KEYS[k + 2]
              local field = ARGV[a + 1]
              local ttl = tonumber(ARGV[a + 2])
              local prefix = ARGV[a + 3]
              local generation = ARGV[a + 4]
              local value = false
              local used = redis.call('ZSCORE', uses, field)
              if used then
                used = tonumber(used)
                local now = clock()
                if used < (now - ttl) * 1000 then
                  redis.call('HDEL', entries, field)
                  redis.call('ZREM', uses, field)
                else
                  if used < (now - math.min(1000, ttl / 10)) * 1000 then
                    redis.call('ZADD', uses, now * 1000 + redis.call('INCR', seq) % 1000, field)
                  end
                  value = redis.call('HGET', entries, field)
                end
              end
              local versions = {}
              if value then
                local header = string.sub(value, 1, (string.find(value, '\n', 1, true) or 1) - 1)
                for pair in string.gmatch(header, '%S+') do
                  local tag = string.match(pair, '^(.*)=[^=]*$') or pair
                  versions[#versions + 1] = redis.call('GET', prefix .. tag) or '0'
                end
              end
              return {value, versions, redis.call('GET', prefix .. generation) or '0'}
            end
          end
          -- Arguments and keys per step.
          local sizes = {get = {1, 1}, win = {4, 1}, incr = {3, 1}, tget = {5, 3}}
          local out = {}
          local a, k, i = 1, 1, 0
          while ARGV[a] do
            local op = ARGV[a]
            local size = sizes[op]
            if not size then
              return redis.error_reply('unknown batch step ' .. tostring(op))
            end
            i = i + 1
            local ok, reply = pcall(step, op, a, k)
            if ok then
              out[i] = reply
            else
              -- Redis refused one of the step's commands (or the step failed): its own batch
              -- gets the error, not every batch joined into this call.
              if type(reply) == 'table' then reply = reply.err end
              out[i] = {'\0step-error', tostring(reply)}
            end
            a = a + size[1]
            k = k + size[2]
          end
          return out",
    )
});

fn window_outcome(allowed: i64, count: i64, reset: i64, limit: u64) -> WindowOutcome {
    let reset_after = Duration::from_millis(u64::try_from(reset).unwrap_or(0));
    let allowed = allowed == 1;
    WindowOutcome {
        allowed,
        count: u64::try_from(count).unwrap_or(0),
        limit,
        retry_after: if allowed { Duration::ZERO } else { reset_after },
        reset_after,
    }
}

fn int(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn batch_reply(op: &Op, value: redis::Value) -> StoreResult<Reply> {
    let bad = || StoreError::Backend(format!("unexpected batch reply for {op:?}"));
    match op {
        Op::Get(_) => match value {
            redis::Value::Nil => Ok(Reply::Value(None)),
            redis::Value::BulkString(bytes) => Ok(Reply::Value(Some(bytes))),
            _ => Err(bad()),
        },
        Op::Window { limit, .. } => match value {
            redis::Value::Array(items) if items.len() == 3 => {
                let (Some(allowed), Some(count), Some(reset)) =
                    (int(&items[0]), int(&items[1]), int(&items[2]))
                else {
                    return Err(bad());
                };
                Ok(Reply::Window(window_outcome(allowed, count, reset, *limit)))
            }
            _ => Err(bad()),
        },
        Op::Increment { .. } => int(&value).map(Reply::Count).ok_or_else(bad),
    }
}

/// Steps in one joined `BATCH` call, at most (a script runs alone in Redis: a bound on how long
/// one call holds it).
const MAX_JOINED_STEPS: usize = 512;

pub struct RedisStore {
    client: RedisClient,
}

impl RedisStore {
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }
}

/// One step of a `BATCH` call: a key-value step, or a bounded cache's tagged read.
#[derive(Debug, Clone)]
enum Step {
    Op(Op),
    Tagged(TaggedRead),
}

/// A bounded cache's entry, with the versions of the tags its header line names and of a
/// generation counter (see `infra::cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaggedRead {
    /// The namespace's entries hash, last-use sorted set and sequence counter.
    pub keys: [String; 3],
    pub field: String,
    pub ttl: Duration,
    /// Where tag counters live (prefixed), and the generation counter's name under it.
    pub tag_prefix: String,
    pub generation: String,
}

impl RedisClient {
    /// How concurrent batches were joined into calls (for `/metrics`).
    pub fn join_stats(&self) -> Arc<JoinStats> {
        self.batches.stats().clone()
    }

    /// A tagged read, joined with whatever else is going out (the script's `tget` step): the
    /// reply `{value, versions, generation}`.
    pub(crate) async fn tagged_read(&self, read: TaggedRead) -> StoreResult<redis::Value> {
        let mut replies = self.batches.run(self, vec![Step::Tagged(read)]).await?;
        match replies.pop() {
            Some(reply) if replies.is_empty() => Ok(reply),
            _ => Err(StoreError::Backend(
                "batch reply has the wrong length".into(),
            )),
        }
    }
}

/// Where a sliding-window log lives: a list of hit times (Redis' clock, ms), oldest first.
/// (Suffixed: until 2026-12 a log was a sorted set under the bare key, and an instance still
/// running that code must not meet a list there.)
fn window_key(client: &RedisClient, key: &str) -> String {
    let mut full = client.key_with_room(key, 4);
    full.push_str(":log");
    full
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
        let op = Op::Increment {
            key: key.to_owned(),
            delta,
            ttl,
        };
        match self.batch(std::slice::from_ref(&op)).await?.pop() {
            Some(Reply::Count(n)) => Ok(n),
            _ => Err(StoreError::Backend("unexpected increment reply".into())),
        }
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
        let op = Op::Window {
            key: key.to_owned(),
            limit,
            window,
        };
        match self.batch(std::slice::from_ref(&op)).await?.pop() {
            Some(Reply::Window(outcome)) => Ok(outcome),
            _ => Err(StoreError::Backend("unexpected window reply".into())),
        }
    }

    async fn batch(&self, ops: &[Op]) -> StoreResult<Vec<Reply>> {
        if ops.is_empty() {
            return Ok(vec![]);
        }
        let steps = ops.iter().cloned().map(Step::Op).collect();
        let values = self.client.batches.run(&self.client, steps).await?;
        if values.len() != ops.len() {
            return Err(StoreError::Backend(
                "batch reply has the wrong length".into(),
            ));
        }
        ops.iter()
            .zip(values)
            .map(|(op, value)| batch_reply(op, value))
            .collect()
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
