//! The server-side response cache: a query whose every root and object field declares a cache
//! hint (`crate::graphql::cache_policy`) is kept in the shared store for its max-age, keyed by the
//! document, operation name, variables and scope — `public` for anonymous callers, the user for
//! signed-in ones, so a private result is never served to anyone else and a public one is only
//! ever produced without credentials.
//!
//! Each entry remembers the versions of the entity tags its resolvers set (`ctx.cache_tag`,
//! `crate::infra::tags`); a change bumps them, and an entry whose tags moved is a miss — on every
//! instance, with constant work per change. An entry is only stored when no tag anywhere moved
//! while the query ran (a global generation read before and after), so a result computed from
//! data that changed meanwhile is never kept.
//!
//! An entry keeps its bytes, so a hit answers with the same `ETag` as the execution did, and a
//! matching `If-None-Match` is a 304 without running anything.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graphql::CachePolicy;
use crate::infra::cache::Bounds;
use crate::infra::tags;
use crate::state::AppState;

const NAMESPACE: &str = "responses";

/// A stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub body: String,
    pub policy: CachePolicy,
    /// Unix milliseconds.
    expires_at: i64,
    /// `(tag, version)` when it was stored.
    tags: Vec<(String, i64)>,
}

fn bounds(app: &AppState) -> Bounds {
    Bounds {
        capacity: app.settings.cache.response_max_entries,
        ttl: tags::MAX_ENTRY_TTL,
    }
}

fn count(app: &AppState, result: &'static str) {
    app.metrics
        .record(|| metrics::counter!("response_cache_total", "result" => result).increment(1));
}

/// The key of one operation for one scope.
pub fn key(document: &str, operation_name: Option<&str>, variables: &Value, scope: &str) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        document,
        operation_name.unwrap_or_default(),
        &variables.to_string(),
        scope,
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    format!("{:032x}", hasher.digest128())
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

/// The entry for `key`, when it is live and none of its tags moved.
pub async fn lookup(app: &AppState, key: &str) -> Lookup {
    let found = app.stores.cache.get(NAMESPACE, bounds(app), key).await;
    let entry = match found {
        Ok(Some(bytes)) => serde_json::from_slice::<Entry>(&bytes).ok(),
        Ok(None) => None,
        Err(error) => {
            error.log("response cache unavailable");
            count(app, "bypass");
            return Lookup::Unavailable;
        }
    };
    // The entry's tags and the generation, in one round trip.
    let mut names: Vec<String> = entry
        .as_ref()
        .map(|e| e.tags.iter().map(|(tag, _)| tag.clone()).collect())
        .unwrap_or_default();
    names.push(tags::GENERATION.to_owned());
    let versions = match tags::versions(&app.stores, &names).await {
        Ok(versions) => versions,
        Err(error) => {
            error.log("response cache unavailable");
            count(app, "bypass");
            return Lookup::Unavailable;
        }
    };
    let generation = versions.last().copied().unwrap_or(0);
    if let Some(entry) = entry {
        let live = entry.expires_at > chrono::Utc::now().timestamp_millis();
        let current = entry
            .tags
            .iter()
            .zip(&versions)
            .all(|((_, stored), now)| stored == now);
        if live && current {
            count(app, "hit");
            return Lookup::Hit(entry);
        }
        count(app, "stale");
    } else {
        count(app, "miss");
    }
    Lookup::Miss { generation }
}

/// Keeps a response that executed without errors, when its policy allows, and when no tag moved
/// since `generation` was read.
pub async fn store(
    app: &AppState,
    key: &str,
    body: &[u8],
    policy: CachePolicy,
    tags_seen: Vec<String>,
    generation: i64,
) {
    // Fields without a hint count as 0 here: only fully hinted results are kept.
    let Some(max_age) = policy.max_age(0).filter(|age| *age > 0) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let ttl = std::time::Duration::from_secs(u64::from(max_age)).min(tags::MAX_ENTRY_TTL);
    let mut names = tags_seen;
    names.push(tags::GENERATION.to_owned());
    let versions = match tags::versions(&app.stores, &names).await {
        Ok(versions) => versions,
        Err(error) => {
            error.log("response cache unavailable");
            return;
        }
    };
    if versions.last().copied().unwrap_or(0) != generation {
        // Something changed while the query ran: its result may mix before and after.
        return;
    }
    names.pop();
    let entry = Entry {
        body: text.to_owned(),
        policy,
        expires_at: chrono::Utc::now().timestamp_millis()
            + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
        tags: names.into_iter().zip(versions).collect(),
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    if let Err(error) = app
        .stores
        .cache
        .put(NAMESPACE, bounds(app), key, &bytes)
        .await
    {
        error.log("cannot store a response");
    }
}
