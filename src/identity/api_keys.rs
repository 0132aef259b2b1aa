//! API keys as credentials: the key format, its keyed hash, and from a presented key to the
//! caller — the same cache-then-database path as access tokens ([`super::authenticate`]).
//!
//! A key reads `mpk_<env>_<40 characters of A-Z, a-z, 0-9>` (about 238 random bits). Only an
//! HMAC of it is stored (keyed by a derivation of `SECRETS_KEY`), so the table alone cannot be
//! used to call the API, nor checked offline against guesses. The key's state is cached in the
//! shared store for [`KEY_STATE_TTL`] under its hash; revoking, rotating or deleting a key
//! drops that entry ([`key_changed`]), so the next request on every instance sees the change.
//!
//! `lastUsedAt` is not written per request: each instance notes uses in memory ([`Usage`]) and
//! writes them in one statement per key every [`USAGE_FLUSH`] (and at shutdown).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::authenticate::{drop_cached, is_tombstone};
use super::events::{self, SessionEnd};
use super::tenancy::Stage;
use super::viewer::Authentication;
use crate::entities::{api_keys, organizations};
use crate::error::AppResult;
use crate::infra::{Op, StoreResult};
use crate::state::AppState;

pub const KEY_PREFIX: &str = "mpk_";
const SECRET_LEN: usize = 40;
/// How many characters of the secret stay visible in the key's prefix.
const VISIBLE: usize = 8;
/// How long a key's state stays cached between changes.
pub const KEY_STATE_TTL: Duration = Duration::from_secs(60);
/// How often each instance writes the `lastUsedAt` it noted.
pub const USAGE_FLUSH: Duration = Duration::from_secs(30);

const INVALID: &str = "the API key is invalid, expired or revoked";

/// An API key calling: what identity knows of it for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyCaller {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub organization_id: Uuid,
    pub organization_slug: String,
    pub environment: Stage,
    /// Organization permission names.
    pub scopes: BTreeSet<String>,
    /// When the key (or, during a rotation's grace period, the old secret) stops working.
    pub valid_until: Option<DateTime<Utc>>,
    /// The keyed hash the caller presented: its rate-limit window and cache entry.
    pub hash: String,
}

/// Whether `token` is presented as an API key (rather than an access token).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// A fresh key for `stage` and the prefix shown from now on.
pub fn generate(stage: Stage) -> (String, String) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let secret: String = (0..SECRET_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let key = format!("{KEY_PREFIX}{}_{secret}", stage.key_label());
    let prefix = format!("{KEY_PREFIX}{}_{}", stage.key_label(), &secret[..VISIBLE]);
    (key, prefix)
}

/// Whether `key` has the shape of a key we issue (checked before any I/O).
pub fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    let Some((label, secret)) = rest.split_once('_') else {
        return false;
    };
    Stage::from_key_label(label).is_some()
        && secret.len() == SECRET_LEN
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn hash_input(key: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(key.len() + 8);
    input.extend_from_slice(b"api-key\0");
    input.extend_from_slice(key.as_bytes());
    input
}

/// The keyed hash stored for `key` (with the current `SECRETS_KEY`).
pub fn hash(state: &AppState, key: &str) -> String {
    state.secret_box.fingerprint(&hash_input(key))
}

/// The key's hash under every configured secrets key, the current one first: a key hashed
/// before a `SECRETS_KEY` rotation still matches (and is re-hashed on that use).
pub fn hashes(state: &AppState, key: &str) -> Vec<String> {
    state.secret_box.fingerprints(&hash_input(key))
}

fn state_key(hash: &str) -> String {
    format!("auth:apikey:{hash}")
}

/// The store step that fetches a key's cached state (to batch with others).
pub fn state_op(hash: &str) -> Op {
    Op::Get(state_key(hash))
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyState {
    id: Uuid,
    name: String,
    prefix: String,
    organization_id: Uuid,
    organization_slug: String,
    environment: Stage,
    scopes: BTreeSet<String>,
    valid_until: Option<i64>,
    revoked: bool,
}

/// The full check of one presented key.
pub async fn authenticate(state: &AppState, key: &str) -> Authentication {
    if !well_formed(key) {
        return Authentication::Invalid(INVALID.into());
    }
    let hashes = hashes(state, key);
    let cached = state.stores.kv.get(&state_key(&hashes[0])).await;
    resolve(state, hashes, cached).await
}

/// Decides on a key (by its [`hashes`], the current one first) given what the store answered
/// for [`state_op`] of the first.
pub async fn resolve(
    state: &AppState,
    hashes: Vec<String>,
    cached: StoreResult<Option<Vec<u8>>>,
) -> Authentication {
    // Boxed, as for a user's state (`authenticate::resolve`): the database is the rare path.
    let load = |cache: bool| Box::pin(load(state, &hashes, cache));
    let loaded = match cached {
        Ok(Some(bytes)) if !is_tombstone(&bytes) => match serde_json::from_slice(&bytes) {
            Ok(key_state) => Ok(Some(key_state)),
            Err(_) => load(true).await,
        },
        Ok(Some(_)) => load(false).await,
        Ok(None) => load(true).await,
        Err(error) => {
            error.log("API key cache unavailable; asking the database");
            load(false).await
        }
    };
    let hash = hashes.into_iter().next().unwrap_or_default();
    let key_state: KeyState = match loaded {
        Ok(Some(key_state)) => key_state,
        Ok(None) => return Authentication::Invalid(INVALID.into()),
        Err(error) => {
            error.report();
            return Authentication::Unavailable;
        }
    };
    let now = Utc::now().timestamp();
    if key_state.revoked || key_state.valid_until.is_some_and(|until| until <= now) {
        return Authentication::Invalid(INVALID.into());
    }
    state.local::<Usage>().note(key_state.id);
    Authentication::ApiKey(Arc::new(ApiKeyCaller {
        id: key_state.id,
        name: key_state.name,
        prefix: key_state.prefix,
        organization_id: key_state.organization_id,
        organization_slug: key_state.organization_slug,
        environment: key_state.environment,
        scopes: key_state.scopes,
        valid_until: key_state
            .valid_until
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        hash,
    }))
}

/// A key's state from the database (unknown keys are cached too, as revoked, so guessing costs
/// one lookup per guess and then nothing), cached when `cache`.
async fn load(state: &AppState, hashes: &[String], cache: bool) -> AppResult<Option<KeyState>> {
    let now = Utc::now();
    let Some(hash) = hashes.first() else {
        return Ok(None);
    };
    let found = api_keys::Entity::find()
        .filter(
            Condition::any()
                .add(api_keys::Column::SecretHash.is_in(hashes))
                .add(api_keys::Column::PreviousHash.is_in(hashes)),
        )
        .one(&state.db)
        .await?;
    // Hashed with a previous secrets key: re-hash with the current one, so the cache entry and
    // every later change (revocation drops the entry by the stored hash) agree.
    let found = match found {
        Some(mut key) if key.secret_hash != *hash && key.previous_hash.as_ref() != Some(hash) => {
            let column = if hashes.contains(&key.secret_hash) {
                key.secret_hash = hash.clone();
                api_keys::Column::SecretHash
            } else {
                key.previous_hash = Some(hash.clone());
                api_keys::Column::PreviousHash
            };
            api_keys::Entity::update_many()
                .col_expr(column, Expr::value(hash.clone()))
                .filter(api_keys::Column::Id.eq(key.id))
                .exec(&state.db)
                .await?;
            Some(key)
        }
        other => other,
    };
    let key_state = match found {
        None => None,
        Some(key) => {
            let organization = organizations::Entity::find_by_id(key.organization_id)
                .one(&state.db)
                .await?;
            let environment = Stage::parse(&key.environment);
            match (organization, environment) {
                (Some(organization), Some(environment)) => {
                    let old_secret = key.secret_hash != *hash;
                    let mut valid_until = key.expires_at;
                    if old_secret {
                        let grace = key.previous_expires_at.unwrap_or(now);
                        valid_until = Some(valid_until.map_or(grace, |until| until.min(grace)));
                    }
                    Some(KeyState {
                        id: key.id,
                        name: key.name,
                        prefix: key.prefix,
                        organization_id: organization.id,
                        organization_slug: organization.slug,
                        environment,
                        scopes: serde_json::from_str(&key.scopes).unwrap_or_default(),
                        valid_until: valid_until.map(|t| t.timestamp()),
                        revoked: key.revoked_at.is_some(),
                    })
                }
                _ => None,
            }
        }
    };
    let stored = key_state.as_ref().map_or_else(
        || {
            serde_json::to_vec(&KeyState {
                id: Uuid::nil(),
                name: String::new(),
                prefix: String::new(),
                organization_id: Uuid::nil(),
                organization_slug: String::new(),
                environment: Stage::Development,
                scopes: BTreeSet::new(),
                valid_until: None,
                revoked: true,
            })
        },
        serde_json::to_vec,
    );
    if cache && let Ok(bytes) = stored {
        // Only into an empty slot: a tombstone means the key changed while we read it.
        if let Err(error) = state
            .stores
            .kv
            .set_if_absent(&state_key(hash), &bytes, Some(KEY_STATE_TTL))
            .await
        {
            error.log("cannot cache an API key's state");
        }
    }
    Ok(key_state)
}

/// Call after any committed change to a key (revoked, rotated, deleted with its organization),
/// with every hash it was known by: every instance reloads it on its next request, and sockets
/// open with it check it again (and close when it no longer works).
pub async fn key_changed(state: &AppState, key_id: Uuid, hashes: &[&str]) {
    for hash in hashes {
        drop_cached(state, state_key(hash)).await;
    }
    events::publish(state, key_id, Some(SessionEnd::SessionRevoked)).await;
}

/// Key uses noted by this instance since the last flush.
#[derive(Debug, Default)]
pub struct Usage(Mutex<HashMap<Uuid, DateTime<Utc>>>);

impl Usage {
    pub fn note(&self, key_id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id, Utc::now());
    }

    fn take(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Writes the uses noted since the last flush (one statement per key; never moves `lastUsedAt`
/// backwards, since several instances flush).
///
/// # Errors
/// The database fails (the uses are noted again for the next flush).
pub async fn flush_usage(state: &AppState) -> AppResult<usize> {
    let usage = state.local::<Usage>();
    let noted = usage.take();
    let count = noted.len();
    for (id, at) in &noted {
        let written = api_keys::Entity::update_many()
            .col_expr(api_keys::Column::LastUsedAt, Expr::value(*at))
            .filter(api_keys::Column::Id.eq(*id))
            .filter(
                Condition::any()
                    .add(api_keys::Column::LastUsedAt.is_null())
                    .add(api_keys::Column::LastUsedAt.lt(*at)),
            )
            .exec(&state.db)
            .await;
        if let Err(error) = written {
            let mut map = usage.0.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, at) in &noted {
                map.entry(*id).or_insert(*at);
            }
            return Err(error.into());
        }
    }
    Ok(count)
}
