//! Entity tags for cached responses: each tag (`User:<id>` for one entity, `User` for every list
//! that can hold users) has a version counter in the shared store. A cached entry remembers the
//! versions of its tags when it was written and is valid while they are unchanged; a change bumps
//! the versions of the tags it touches — constant work per change, no scan of the cache, and the
//! same on every instance.

use std::time::Duration;

use super::SharedStores;
use super::kv::{Op, Reply, StoreResult};

/// The longest a cached entry may live, whatever a hint says.
pub const MAX_ENTRY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A counter bumped with every change of any tag: a response is stored only if it did not move
/// while the query ran (`crate::http::response_cache`).
pub const GENERATION: &str = "*";

/// Where the counters live in the key-value store: `PREFIX + tag`.
pub const PREFIX: &str = "rc:tag:";

fn key(tag: &str) -> String {
    [PREFIX, tag].concat()
}

/// The tag of one entity: `User:<id>`.
pub fn entity(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{kind}:{id}")
}

/// Marks every entry tagged with one of `tags` stale, on every instance.
///
/// # Errors
/// The store fails: the caller logs it (entries then live until their max-age).
pub async fn bump(stores: &SharedStores, tags: &[String]) -> StoreResult<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let ops: Vec<Op> = tags
        .iter()
        .map(String::as_str)
        .chain([GENERATION])
        .map(|tag| Op::Increment {
            key: key(tag),
            delta: 1,
            // Counters never expire: one that expired and started over could match the version
            // an old entry recorded. One small key per entity ever changed.
            ttl: None,
        })
        .collect();
    stores.kv.batch(&ops).await?;
    Ok(())
}

/// The current version of each of `tags` (0 for a tag never bumped), in one round trip.
///
/// # Errors
/// The store fails.
pub async fn versions(stores: &SharedStores, tags: &[String]) -> StoreResult<Vec<i64>> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let ops: Vec<Op> = tags.iter().map(|tag| Op::Get(key(tag))).collect();
    let replies = stores.kv.batch(&ops).await?;
    Ok(replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Value(Some(bytes)) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0),
            Reply::Count(n) => n,
            _ => 0,
        })
        .collect())
}
