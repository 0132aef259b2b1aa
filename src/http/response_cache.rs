//! The server-side response cache: a query whose every root and object field declares a cache
//! hint (`crate::graphql::cache_policy`) is kept in the shared store for its max-age, keyed by the
//! document, operation name, variables and scope — `public` for anonymous callers, the user for
//! signed-in ones, so a private result is never served to anyone else and a public one is only
//! ever produced without credentials.
//!
//! Each entry remembers the versions of the entity tags its resolvers set (`ctx.cache_tag`,
//! `crate::infra::tags`); a change bumps them, and an entry whose tags moved is a miss — on every
//! instance, with constant work per change. On Redis a lookup (entry and its tags' versions) and
//! a store (versions checked and entry written) are one script each: one round trip. An entry is only stored when no tag anywhere moved
//! while the query ran (a global generation read before and after), so a result computed from
//! data that changed meanwhile is never kept.
//!
//! An entry keeps its bytes, so a hit answers with the same `ETag` as the execution did, and a
//! matching `If-None-Match` is a 304 without running anything.

use bytes::Bytes;
use serde_json::Value;

use crate::graphql::CachePolicy;
use crate::infra::cache::{Bounds, TagKeys, TaggedGet, TaggedPut};
use crate::infra::tags;
use crate::state::AppState;

const NAMESPACE: &str = "responses";

/// A stored response. On the store it is three parts: a header line `tag=version …` (the
/// versions of its tags when it was stored, which the Redis script reads to check them in the
/// same round trip), a line with the rest of [`Meta`] (`expires-at etag policy`), and the body's
/// bytes as they were sent — so a hit neither parses JSON nor hashes the body.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A view into the stored value: a hit copies nothing.
    pub body: Bytes,
    pub meta: Meta,
}

#[derive(Debug, Clone)]
pub struct Meta {
    pub policy: CachePolicy,
    /// The body's `ETag`.
    pub etag: String,
    /// Unix milliseconds.
    expires_at: i64,
}

impl Meta {
    /// `expires-at etag policy` (the tag is quoted hex, the policy `CachePolicy::code`).
    fn line(&self) -> String {
        format!("{} {} {}", self.expires_at, self.etag, self.policy.code())
    }

    /// Whole seconds left before the entry expires.
    pub fn seconds_left(&self) -> u64 {
        let left = self.expires_at - chrono::Utc::now().timestamp_millis();
        u64::try_from(left / 1000).unwrap_or(0)
    }

    fn parse(line: &[u8]) -> Option<Self> {
        let mut parts = std::str::from_utf8(line).ok()?.split(' ');
        let expires_at = parts.next()?.parse().ok()?;
        let etag = parts.next()?.to_owned();
        let policy = CachePolicy::from_code(parts.next()?)?;
        parts.next().is_none().then_some(Self {
            policy,
            etag,
            expires_at,
        })
    }
}

/// What the response cache did for one query, told in the response's `extensions.cache` when
/// `RESPONSE_CACHE_EXTENSIONS` is on (docs/caching.md): for developers asking why a query is or
/// is not served from the cache. The `ETag` stays that of the data (the body without this
/// report) and turns weak, since a hit's and a miss's bodies now differ in these bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub status: Status,
    pub scope: Scope,
    /// Seconds the server keeps a result of this query, at most a day (0: it is not kept).
    pub max_age: u32,
    /// A miss: whether this result was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
    /// A hit: whole seconds before the entry expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Answered from the cache; nothing executed.
    Hit,
    /// Looked up, not found (or stale): executed.
    Miss,
    /// Not looked up: the query's hints keep it out, or the store was unavailable.
    Bypass,
}

/// Whose entry: shared by anonymous callers, or the caller's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    Public,
    Private,
}

impl Scope {
    pub fn of(cache_scope: &str) -> Self {
        if cache_scope == PUBLIC_SCOPE {
            Self::Public
        } else {
            Self::Private
        }
    }
}

/// The scope of anonymous callers' entries.
pub const PUBLIC_SCOPE: &str = "public";

impl Report {
    /// `body`, a response's JSON object, with this report as `extensions.cache` (beside any
    /// other extension); `None` for a body that is not a JSON object. The other members are
    /// copied as they are, byte for byte.
    pub fn add_to(&self, body: &[u8]) -> Option<Vec<u8>> {
        use serde_json::value::{RawValue, to_raw_value};
        let mut top: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_slice(body).ok()?;
        let mut extensions: std::collections::BTreeMap<String, &RawValue> =
            match top.get("extensions") {
                Some(raw) => serde_json::from_str(raw.get()).ok()?,
                None => std::collections::BTreeMap::new(),
            };
        let report = to_raw_value(self).ok()?;
        extensions.insert("cache".to_owned(), &report);
        let extensions = to_raw_value(&extensions).ok()?;
        top.insert("extensions".to_owned(), &extensions);
        serde_json::to_vec(&top).ok()
    }
}

/// How long an entry with `policy` is kept: its max-age, at most [`tags::MAX_ENTRY_TTL`]
/// (`None`: not kept).
fn lifetime(policy: CachePolicy) -> Option<std::time::Duration> {
    policy
        .kept_for()
        .map(|age| std::time::Duration::from_secs(u64::from(age)).min(tags::MAX_ENTRY_TTL))
}

/// [`lifetime`] in whole seconds, 0 for a result that is not kept: a report's `maxAge`.
pub fn kept_seconds(policy: CachePolicy) -> u32 {
    lifetime(policy).map_or(0, |ttl| u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX))
}

fn bounds(app: &AppState) -> Bounds {
    Bounds {
        capacity: app.settings.cache.response_max_entries,
        ttl: tags::MAX_ENTRY_TTL,
    }
}

fn tag_keys() -> TagKeys<'static> {
    TagKeys {
        prefix: tags::PREFIX,
        generation: tags::GENERATION,
    }
}

fn count(app: &AppState, result: &'static str) {
    app.metrics.count("response_cache_total", "result", result);
}

/// The key of one operation for one scope.
pub fn key(document: &str, operation_name: Option<&str>, variables: &Value, scope: &str) -> String {
    /// The variables' JSON (as `Value::to_string` writes it) fed to the hash as it is written.
    struct Feed<'a>(&'a mut xxhash_rust::xxh3::Xxh3);
    impl std::io::Write for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [document, operation_name.unwrap_or_default()] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    if serde_json::to_writer(Feed(&mut hasher), variables).is_err() {
        hasher.update(b"null");
    }
    hasher.update(&[0]);
    hasher.update(scope.as_bytes());
    hasher.update(&[0]);
    let digits = super::caching::hex128(hasher.digest128());
    std::str::from_utf8(&digits).unwrap_or_default().to_owned()
}

/// A stored value's header line (`(tag, version)` pairs, see [`pairs`]), and where the rest
/// begins.
fn header(bytes: &[u8]) -> Option<(&str, usize)> {
    let header_end = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..header_end]).ok()?;
    Some((header, header_end + 1))
}

/// The `tag=version` pairs of a header line, in order; `None` for a malformed pair.
fn pairs(header: &str) -> impl Iterator<Item = Option<(&str, i64)>> {
    header.split_ascii_whitespace().map(|pair| {
        let (tag, version) = pair.rsplit_once('=')?;
        Some((tag, version.parse().ok()?))
    })
}

/// Whether a header line lists exactly `versions`, in order (its tags as they are now).
fn versions_match(header: &str, versions: &[i64]) -> bool {
    let mut stored = pairs(header);
    let mut now = versions.iter();
    loop {
        match (stored.next(), now.next()) {
            (None, None) => return true,
            (Some(Some((_, stored))), Some(now)) if stored == *now => {}
            _ => return false,
        }
    }
}

/// Whether the header lists the versions, and the entry after it.
fn decode(bytes: Bytes, versions: &[i64]) -> Option<(bool, Entry)> {
    let (header, start) = header(&bytes)?;
    let current = versions_match(header, versions);
    let meta_end = start + bytes[start..].iter().position(|b| *b == b'\n')?;
    let meta = Meta::parse(&bytes[start..meta_end])?;
    let body = bytes.slice(meta_end + 1..);
    Some((current, Entry { body, meta }))
}

/// The part after the header line (the header is written by whoever knows the versions).
fn payload(meta: &Meta, body: &[u8]) -> Vec<u8> {
    let mut bytes = meta.line().into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    bytes
}

fn encode(pairs: &[(String, i64)], payload: &[u8]) -> Vec<u8> {
    let header: Vec<String> = pairs.iter().map(|(tag, v)| format!("{tag}={v}")).collect();
    let mut bytes = header.join(" ").into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// What a lookup found: a live entry, or the generation to store a fresh one under.
pub enum Lookup {
    Hit(Entry),
    Miss {
        generation: i64,
    },
    /// The store failed: run without the cache.
    Unavailable,
}

/// The stored value and the current versions of its tags and of the generation: one round trip
/// where the backend can (Redis), two otherwise (in process, where they cost nothing).
async fn read(app: &AppState, key: &str) -> crate::infra::StoreResult<TaggedGet> {
    let cache = &app.stores.cache;
    if let Some(read) = cache
        .get_tagged(NAMESPACE, bounds(app), key, &tag_keys())
        .await?
    {
        return Ok(read);
    }
    let value = cache.get(NAMESPACE, bounds(app), key).await?;
    let mut names: Vec<String> = value
        .as_deref()
        .and_then(header)
        .and_then(|(header, _)| {
            pairs(header)
                .map(|pair| pair.map(|(tag, _)| tag.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.push(tags::GENERATION.to_owned());
    let mut versions = tags::versions(&app.stores, &names).await?;
    let generation = versions.pop().unwrap_or(0);
    Ok(TaggedGet {
        value,
        versions,
        generation,
    })
}

/// The entry for `key`, when it is live and none of its tags moved.
pub async fn lookup(app: &AppState, key: &str) -> Lookup {
    judge(app, traced_read(app, key).await)
}

pub(super) async fn traced_read(app: &AppState, key: &str) -> crate::infra::StoreResult<TaggedGet> {
    crate::telemetry::otel::store_call(
        "store.cache_lookup",
        app.stores.backend,
        Vec::new,
        read(app, key),
    )
    .await
}

/// What a read found (see [`lookup`]), counted.
pub(super) fn judge(app: &AppState, read: crate::infra::StoreResult<TaggedGet>) -> Lookup {
    let read = match read {
        Ok(read) => read,
        Err(error) => {
            error.log("response cache unavailable");
            count(app, "bypass");
            return Lookup::Unavailable;
        }
    };
    match read.value.and_then(|value| decode(value, &read.versions)) {
        Some((current, entry)) => {
            let live = entry.meta.expires_at > chrono::Utc::now().timestamp_millis();
            if live && current {
                count(app, "hit");
                return Lookup::Hit(entry);
            }
            count(app, "stale");
        }
        None => count(app, "miss"),
    }
    Lookup::Miss {
        generation: read.generation,
    }
}

/// Keeps a response that executed without errors, when its policy allows, and when no tag moved
/// since `generation` was read (a result computed across a change may mix before and after).
/// Whether it was kept.
pub async fn store(
    app: &AppState,
    key: &str,
    body: &[u8],
    meta: (CachePolicy, &str),
    tags_seen: Vec<String>,
    generation: i64,
) -> bool {
    let (policy, etag) = meta;
    // Fields without a hint count as 0 here: only fully hinted results are kept.
    let Some(ttl) = lifetime(policy) else {
        return false;
    };
    let meta = Meta {
        policy,
        etag: etag.to_owned(),
        expires_at: chrono::Utc::now().timestamp_millis()
            + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
    };
    let payload = payload(&meta, body);
    let stored = crate::telemetry::otel::store_call(
        "store.cache_store",
        app.stores.backend,
        Vec::new,
        put(app, key, &payload, tags_seen, generation),
    );
    match stored.await {
        Ok(kept) => kept,
        Err(error) => {
            error.log("cannot store a response");
            false
        }
    }
}

/// Writes the entry unless a tag moved since `generation` (`false`: not written): one round
/// trip where the backend can (Redis), else the versions are read and the entry written.
async fn put(
    app: &AppState,
    key: &str,
    payload: &[u8],
    tags_seen: Vec<String>,
    generation: i64,
) -> crate::infra::StoreResult<bool> {
    let cache = &app.stores.cache;
    let put = TaggedPut {
        tags: &tag_keys(),
        expected: generation,
        entry_tags: &tags_seen,
        payload,
    };
    if let Some(kept) = cache.put_tagged(NAMESPACE, bounds(app), key, put).await? {
        return Ok(kept);
    }
    let mut names = tags_seen;
    names.push(tags::GENERATION.to_owned());
    let mut versions = tags::versions(&app.stores, &names).await?;
    if versions.pop().unwrap_or(0) != generation {
        return Ok(false);
    }
    names.pop();
    let pairs: Vec<(String, i64)> = names.into_iter().zip(versions).collect();
    cache
        .put(NAMESPACE, bounds(app), key, &encode(&pairs, payload))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod key_tests {
    use super::key;

    #[test]
    fn a_key_hashes_each_part_and_its_end() {
        // Keys are shared by every instance (and survive a release): the same parts must
        // always give the same key.
        let variables = serde_json::json!({"limit": 20, "after": "x"});
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in ["{ a }", "A", &variables.to_string(), "public"] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        let expected = format!("{:032x}", hasher.digest128());
        assert_eq!(key("{ a }", Some("A"), &variables, "public"), expected);
        assert_ne!(key("{ a }", None, &variables, "public"), expected);
        assert_ne!(key("{ a }", Some("A"), &variables, "user:1"), expected);
    }
}

#[cfg(test)]
mod report_tests {
    use super::{Report, Scope, Status};

    const MISS: Report = Report {
        status: Status::Miss,
        scope: Scope::Public,
        max_age: 60,
        stored: Some(true),
        ttl: None,
    };

    #[test]
    fn the_report_goes_beside_other_extensions_and_the_rest_is_kept_byte_for_byte() {
        // The data's members in the selection's order (not sorted), odd spacing and escapes:
        // copied as they were.
        let body = br#"{"data":{"b":1, "a":"\u00e9"},"errors":[],"extensions":{"x":{"y":1}}}"#;
        let reported = String::from_utf8(MISS.add_to(body).unwrap()).unwrap();
        assert_eq!(
            reported,
            r#"{"data":{"b":1, "a":"\u00e9"},"errors":[],"extensions":{"cache":{"status":"MISS","scope":"PUBLIC","maxAge":60,"stored":true},"x":{"y":1}}}"#
        );
        let hit = Report {
            status: Status::Hit,
            scope: Scope::Private,
            max_age: 300,
            stored: None,
            ttl: Some(12),
        };
        assert_eq!(
            String::from_utf8(hit.add_to(br#"{"data":null}"#).unwrap()).unwrap(),
            r#"{"data":null,"extensions":{"cache":{"status":"HIT","scope":"PRIVATE","maxAge":300,"ttl":12}}}"#
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_gets_no_report() {
        for body in [&b"[]"[..], b"null", b"{", b"", b"{\"extensions\":1}"] {
            assert!(MISS.add_to(body).is_none(), "{body:?}");
        }
    }
}
