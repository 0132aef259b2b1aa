//! Bounded caches in the shared store: each namespace holds at most `capacity` entries, evicting
//! the least recently used, and an entry not used for its `ttl` expires. Memory stays bounded
//! whatever clients send (persisted queries register documents here).
//!
//! In process: an LRU per namespace. On Redis: one hash (entries) and one sorted set (last use)
//! per namespace, changed together by a Lua script, so the keyspace is two keys per namespace
//! and the bound holds across instances.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lru::LruCache;
use redis::Script;
use tokio::time::Instant;

use super::kv::{StoreError, StoreResult};
use super::redis::{RedisClient, TaggedRead};

/// The bounds of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub capacity: usize,
    /// An entry unused for this long is gone.
    pub ttl: Duration,
}

#[async_trait]
pub trait BoundedCache: Send + Sync + 'static {
    /// The entry, refreshing its last use (in process, a view of the stored bytes: no copy).
    async fn get(&self, namespace: &str, bounds: Bounds, key: &str) -> StoreResult<Option<Bytes>>;

    /// Stores an entry, evicting the least recently used ones past the capacity.
    async fn put(
        &self,
        namespace: &str,
        bounds: Bounds,
        key: &str,
        value: &[u8],
    ) -> StoreResult<()>;

    /// [`get`](Self::get) of a tagged entry (see [`put_tagged`](Self::put_tagged)) together with
    /// the current versions of its tags and of `generation`, in one round trip. `None` where the
    /// backend has no such shortcut (then the caller reads the versions itself).
    async fn get_tagged(
        &self,
        _namespace: &str,
        _bounds: Bounds,
        _key: &str,
        _tags: &TagKeys<'_>,
    ) -> StoreResult<Option<TaggedGet>> {
        Ok(None)
    }

    /// Stores `payload` under a header line `tag=version …` with the current versions of `tags`,
    /// unless `generation` moved from `expected` — in one round trip. `None` where the backend has
    /// no such shortcut.
    async fn put_tagged(
        &self,
        _namespace: &str,
        _bounds: Bounds,
        _key: &str,
        _put: TaggedPut<'_>,
    ) -> StoreResult<Option<bool>> {
        Ok(None)
    }
}

/// What [`BoundedCache::put_tagged`] stores: `payload` under the current versions of
/// `entry_tags`, unless the generation moved from `expected`.
pub struct TaggedPut<'a> {
    pub tags: &'a TagKeys<'a>,
    pub expected: i64,
    pub entry_tags: &'a [String],
    pub payload: &'a [u8],
}

/// Where tag counters live in the key-value store: `prefix + tag` (unprefixed by the store's own
/// namespace: the backend adds it), and the name of the generation counter.
pub struct TagKeys<'a> {
    pub prefix: &'a str,
    pub generation: &'a str,
}

/// What [`BoundedCache::get_tagged`] read.
#[derive(Debug, Default)]
pub struct TaggedGet {
    pub value: Option<Bytes>,
    /// The current version of each tag of the entry's header line, in its order.
    pub versions: Vec<i64>,
    pub generation: i64,
}

struct Entry {
    value: Bytes,
    used: Instant,
}

/// In-process: one LRU per namespace.
#[derive(Default)]
pub struct MemoryCache {
    namespaces: Mutex<HashMap<String, LruCache<String, Entry>>>,
}

impl MemoryCache {
    fn with<T>(
        &self,
        namespace: &str,
        bounds: Bounds,
        f: impl FnOnce(&mut LruCache<String, Entry>) -> T,
    ) -> T {
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let capacity = NonZeroUsize::new(bounds.capacity).unwrap_or(NonZeroUsize::MIN);
        let fit = |cache: &mut LruCache<String, Entry>| {
            if cache.cap() != capacity {
                cache.resize(capacity);
            }
        };
        // Looked up by `&str` first: the name is copied only the first time.
        if let Some(cache) = namespaces.get_mut(namespace) {
            fit(cache);
            return f(cache);
        }
        let cache = namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| LruCache::new(capacity));
        f(cache)
    }
}

#[async_trait]
impl BoundedCache for MemoryCache {
    async fn get(&self, namespace: &str, bounds: Bounds, key: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.with(namespace, bounds, |cache| {
            let now = Instant::now();
            match cache.get_mut(key) {
                Some(entry) if now.duration_since(entry.used) < bounds.ttl => {
                    entry.used = now;
                    Some(entry.value.clone())
                }
                Some(_) => {
                    cache.pop(key);
                    None
                }
                None => None,
            }
        }))
    }

    async fn put(
        &self,
        namespace: &str,
        bounds: Bounds,
        key: &str,
        value: &[u8],
    ) -> StoreResult<()> {
        self.with(namespace, bounds, |cache| {
            cache.put(
                key.to_owned(),
                Entry {
                    value: Bytes::copy_from_slice(value),
                    used: Instant::now(),
                },
            );
        });
        Ok(())
    }
}

/// Last-use scores are milliseconds × 1000 plus a sequence number, so uses within one
/// millisecond keep their order. `KEYS`: entries hash, last-use sorted set, sequence counter.
const CLOCK: &str = r"local t = redis.call('TIME')
          local now = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 1000
          local score = now + redis.call('INCR', KEYS[3]) % 1000
          local oldest = now - tonumber(ARGV[2]) * 1000
          ";

/// `ARGV`: key, ttl ms.
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}{}",
        r"local used = redis.call('ZSCORE', KEYS[2], ARGV[1])
          if not used then return false end
          if tonumber(used) < oldest then
            redis.call('HDEL', KEYS[1], ARGV[1])
            redis.call('ZREM', KEYS[2], ARGV[1])
            return false
          end
          redis.call('ZADD', KEYS[2], score, ARGV[1])
          return redis.call('HGET', KEYS[1], ARGV[1])"
    ))
});

/// `ARGV`: key, ttl ms, value, capacity.
/// Writes `value` under `ARGV[1]` (with `CLOCK`'s `score` and `oldest`), drops what aged out and
/// what is past the capacity `ARGV[4]`, and keeps the namespace for `ARGV[2]` ms.
///
/// A write drops at most a thousand entries of each kind, oldest first, in one `HDEL` each:
/// entries that aged out together (a burst a TTL ago) or a capacity lowered at a deploy go over
/// the next writes instead of holding Redis, and every instance waiting on it, for one command
/// per entry. A read never serves an entry that aged out, dropped yet or not.
const STORE: &str = r"redis.call('HSET', KEYS[1], ARGV[1], value)
          redis.call('ZADD', KEYS[2], score, ARGV[1])
          local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', oldest, 'LIMIT', 0, 1000)
          if #stale > 0 then
            redis.call('HDEL', KEYS[1], unpack(stale))
            redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #stale - 1)
          end
          local extra = math.min(redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4]), 1000)
          if extra > 0 then
            local evicted = redis.call('ZPOPMIN', KEYS[2], extra)
            local names = {}
            for i = 1, #evicted, 2 do names[#names + 1] = evicted[i] end
            redis.call('HDEL', KEYS[1], unpack(names))
          end
          for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
          return 1";

static PUT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CLOCK}local value = ARGV[3]\n{STORE}")));

static PUT_TAGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}{}{STORE}",
        r"local generation = redis.call('GET', ARGV[5] .. ARGV[6]) or '0'
          if generation ~= ARGV[7] then return 0 end
          local header = {}
          for i = 8, #ARGV do
            header[#header + 1] = ARGV[i] .. '=' .. (redis.call('GET', ARGV[5] .. ARGV[i]) or '0')
          end
          local value = table.concat(header, ' ') .. '\n' .. ARGV[3]
          "
    ))
});

fn integer(value: &redis::Value) -> i64 {
    match value {
        redis::Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        redis::Value::Int(n) => *n,
        _ => 0,
    }
}

pub struct RedisCache {
    client: RedisClient,
}

impl RedisCache {
    pub fn new(client: RedisClient) -> Self {
        Self { client }
    }

    /// The keys of a namespace, in one hash slot.
    fn keys(&self, namespace: &str) -> [String; 3] {
        ["entries", "used", "seq"].map(|part| {
            // `cache:{<namespace>}:<part>` (on every lookup: without `format!`).
            let mut key = self
                .client
                .key_with_room("cache:{", namespace.len() + 2 + part.len());
            key.push_str(namespace);
            key.push_str("}:");
            key.push_str(part);
            key
        })
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    super::kv::millis(ttl).max(1)
}

#[async_trait]
impl BoundedCache for RedisCache {
    async fn get(&self, namespace: &str, bounds: Bounds, key: &str) -> StoreResult<Option<Bytes>> {
        let [entries, used, seq] = self.keys(namespace);
        let key = key.to_owned();
        let value: Option<Vec<u8>> = self
            .client
            .run(|mut c| async move {
                GET.key(entries)
                    .key(used)
                    .key(seq)
                    .arg(key)
                    .arg(ttl_ms(bounds.ttl))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn put(
        &self,
        namespace: &str,
        bounds: Bounds,
        key: &str,
        value: &[u8],
    ) -> StoreResult<()> {
        if bounds.capacity == 0 {
            return Err(StoreError::Backend("a cache needs a capacity".into()));
        }
        let [entries, used, seq] = self.keys(namespace);
        let key = key.to_owned();
        let value = value.to_vec();
        self.client
            .run(|mut c| async move {
                let _: i64 = PUT
                    .key(entries)
                    .key(used)
                    .key(seq)
                    .arg(key)
                    .arg(ttl_ms(bounds.ttl))
                    .arg(value)
                    .arg(bounds.capacity)
                    .invoke_async(&mut c)
                    .await?;
                Ok(())
            })
            .await
    }

    async fn get_tagged(
        &self,
        namespace: &str,
        bounds: Bounds,
        key: &str,
        tags: &TagKeys<'_>,
    ) -> StoreResult<Option<TaggedGet>> {
        // A step of the store's joined `BATCH` calls (`infra/redis`): a cache lookup goes out
        // with whatever other requests send at the same moment.
        let reply = self
            .client
            .tagged_read(TaggedRead {
                keys: self.keys(namespace),
                field: key.to_owned(),
                ttl: bounds.ttl,
                tag_prefix: self.client.key(tags.prefix),
                generation: tags.generation.to_owned(),
            })
            .await?;
        let redis::Value::Array(reply) = reply else {
            return Err(StoreError::Backend(
                "unexpected reply to a tagged get".into(),
            ));
        };
        let [value, versions, generation] = <[redis::Value; 3]>::try_from(reply)
            .map_err(|_| StoreError::Backend("unexpected reply to a tagged get".into()))?;
        Ok(Some(TaggedGet {
            value: match value {
                redis::Value::BulkString(bytes) => Some(Bytes::from(bytes)),
                _ => None,
            },
            versions: match versions {
                redis::Value::Array(items) => items.iter().map(integer).collect(),
                _ => Vec::new(),
            },
            generation: integer(&generation),
        }))
    }

    async fn put_tagged(
        &self,
        namespace: &str,
        bounds: Bounds,
        key: &str,
        put: TaggedPut<'_>,
    ) -> StoreResult<Option<bool>> {
        let TaggedPut {
            tags,
            expected,
            entry_tags,
            payload,
        } = put;
        if bounds.capacity == 0 {
            return Err(StoreError::Backend("a cache needs a capacity".into()));
        }
        let [entries, used, seq] = self.keys(namespace);
        let mut invocation = PUT_TAGGED.prepare_invoke();
        invocation
            .key(entries)
            .key(used)
            .key(seq)
            .arg(key)
            .arg(ttl_ms(bounds.ttl))
            .arg(payload)
            .arg(bounds.capacity)
            .arg(self.client.key(tags.prefix))
            .arg(tags.generation)
            .arg(expected.to_string());
        for tag in entry_tags {
            invocation.arg(tag);
        }
        let stored: i64 = self
            .client
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(Some(stored == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisSettings;

    #[test]
    fn a_namespaces_keys_read_as_format_wrote_them() {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1".to_owned().into(),
            pool_size: 1,
            timeout: Duration::from_secs(1),
            circuit_threshold: 1,
            circuit_cooldown: Duration::from_secs(1),
        };
        let cache = RedisCache::new(RedisClient::new(&settings, "mp:").unwrap());
        assert_eq!(
            cache.keys("responses"),
            ["entries", "used", "seq"].map(|part| format!("mp:cache:{{responses}}:{part}"))
        );
    }
}
