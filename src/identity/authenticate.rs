//! From an access token to the caller, in one place for every transport.
//!
//! 1. The token's signature, algorithm, issuer, audience and expiry are checked locally.
//! 2. The user's state — status, ban, session epoch, roles, permissions and the sessions revoked
//!    recently — comes from the shared store, where it is cached for [`USER_STATE_TTL`]; the
//!    transports fetch it in the same round trip as the rate-limit window ([`Op`]).
//! 3. On a miss, or while the store is down, the database decides (a store error never means
//!    "not revoked"); when the database cannot answer either, the caller is `Unavailable` (503),
//!    never `Invalid` (401), so clients keep good sessions through an outage.
//!
//! Every change to a user's state goes through [`user_changed`], which drops the cached state
//! (leaving a short tombstone, so a reader that loaded the old state just before cannot put it
//! back) and tells every instance, whose open sockets then re-check their caller.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounts;
use super::events;
use super::tokens::{self, Claims};
use super::viewer::{AuthUser, Authentication, Profile};
use crate::entities::revoked_sessions;
use crate::error::{AppError, AppResult};
use crate::infra::{Op, StoreResult, tags};
use crate::state::AppState;

/// How long a user's state stays cached between changes.
pub const USER_STATE_TTL: Duration = Duration::from_secs(60);

/// How long a dropped state stays uncacheable, covering readers that loaded it before the change.
const TOMBSTONE_TTL: Duration = Duration::from_secs(5);
const TOMBSTONE: &[u8] = b"-";

/// What authentication needs to know about a user.
#[derive(Debug, Serialize, Deserialize)]
struct UserState {
    email: String,
    epoch: i64,
    active: bool,
    banned: bool,
    banned_until: Option<i64>,
    roles: Vec<String>,
    permissions: Vec<String>,
    /// Sessions ended while their access tokens may still be unexpired.
    revoked_sessions: Vec<Uuid>,
    profile: Profile,
}

impl UserState {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        let banned = self.banned
            && self
                .banned_until
                .is_none_or(|until| until > now.timestamp());
        self.active && !banned
    }
}

pub fn user_state_key(user_id: Uuid) -> String {
    crate::infra::kv::key_with_uuid("auth:user:", user_id, 0)
}

const INVALID: &str = "the access token is invalid, expired or revoked";

/// Checks a token's signature and claims without any I/O (a token this instance verified before
/// only has its expiry checked again: [`tokens::VerifiedTokens`]).
///
/// # Errors
/// The `Invalid` outcome to answer with.
pub fn verify(state: &AppState, token: &str) -> Result<Arc<Claims>, Authentication> {
    state
        .local::<tokens::VerifiedTokens>()
        .verify(&state.settings, token)
        .map_err(|_| Authentication::Invalid(INVALID.into()))
}

/// The store step that fetches the state of the token's user (to batch with others).
pub fn state_op(claims: &Claims) -> Op {
    Op::Get(user_state_key(claims.sub))
}

/// The full check of one token: local verification, then the user's current state.
pub async fn authenticate(state: &AppState, token: &str) -> Authentication {
    if super::api_keys::is_api_key(token) {
        return super::api_keys::authenticate(state, token).await;
    }
    let claims = match verify(state, token) {
        Ok(claims) => claims,
        Err(invalid) => return invalid,
    };
    let cached = state.stores.kv.get(&user_state_key(claims.sub)).await;
    resolve(state, &claims, cached).await
}

/// Decides on verified `claims` given what the store answered for [`state_op`].
pub async fn resolve(
    state: &AppState,
    claims: &Claims,
    cached: StoreResult<Option<Vec<u8>>>,
) -> Authentication {
    let fresh = |loaded: AppResult<Option<UserState>>| {
        loaded.map(|found| found.map(|state| Arc::new(Decoded::new(Box::default(), state))))
    };
    // The database's answer, boxed: the usual request never asks, and inline its statements
    // would make every request's future (moved, whole, into the middleware's box) kilobytes
    // larger.
    let load = |cache: bool| Box::pin(load(state, claims.sub, cache));
    let loaded = match cached {
        Ok(Some(bytes)) if bytes != TOMBSTONE => {
            match state.local::<DecodedStates>().decode(claims.sub, &bytes) {
                Some(decoded) => Ok(Some(decoded)),
                None => fresh(load(true).await),
            }
        }
        Ok(Some(_)) => fresh(load(false).await),
        Ok(None) => fresh(load(true).await),
        Err(error) => {
            error.log("user state cache unavailable; asking the database");
            fresh(load(false).await)
        }
    };
    let decoded = match loaded {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return Authentication::Invalid(INVALID.into()),
        Err(error) => {
            error.report();
            return Authentication::Unavailable;
        }
    };
    let user_state = &decoded.state;
    if !user_state.usable(Utc::now())
        || user_state.epoch != claims.epoch
        || user_state.revoked_sessions.contains(&claims.sid)
    {
        return Authentication::Invalid(INVALID.into());
    }
    Authentication::User(decoded.viewer(claims))
}

/// User states decoded from the shared store, by user, with the bytes they were decoded from.
/// The stored state only changes with the user, so the bytes of the next request are usually the
/// same: compared, not decoded again (JSON and dates were most of authentication's cost). Other
/// bytes are decoded and replace the entry, so the store stays the only truth. Bounded to the
/// [`DecodedStates::CAPACITY`] users seen most recently; one per instance (`AppState::local`).
struct DecodedStates(std::sync::Mutex<lru::LruCache<Uuid, Arc<Decoded>>>);

/// A user's state as decoded from `bytes`, and the viewer last built from it.
struct Decoded {
    bytes: Box<[u8]>,
    state: UserState,
    /// Built for one access token (session and expiry): the same token again, the usual case,
    /// gets the same viewer instead of copies of the roles, permissions and profile.
    viewer: std::sync::Mutex<Option<Arc<AuthUser>>>,
}

impl Decoded {
    fn new(bytes: Box<[u8]>, state: UserState) -> Self {
        Self {
            bytes,
            state,
            viewer: std::sync::Mutex::default(),
        }
    }

    /// The viewer for verified `claims` of this user (whose state was checked).
    fn viewer(&self, claims: &Claims) -> Arc<AuthUser> {
        let mut last = self
            .viewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(viewer) = last.as_ref().filter(|viewer| {
            viewer.id == claims.sub
                && viewer.session_id == claims.sid
                && viewer.expires_at.timestamp() == claims.exp
        }) {
            return viewer.clone();
        }
        let state = &self.state;
        let viewer = Arc::new(AuthUser {
            id: claims.sub,
            email: state.email.clone(),
            session_id: claims.sid,
            roles: state.roles.iter().cloned().collect(),
            permissions: state.permissions.iter().cloned().collect(),
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now),
            profile: state.profile.clone(),
        });
        *last = Some(viewer.clone());
        viewer
    }
}

impl Default for DecodedStates {
    fn default() -> Self {
        Self(std::sync::Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(Self::CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN),
        )))
    }
}

impl DecodedStates {
    const CAPACITY: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Uuid, Arc<Decoded>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state `bytes` hold for `user_id`, or `None` when they do not decode.
    fn decode(&self, user_id: Uuid, bytes: &[u8]) -> Option<Arc<Decoded>> {
        if let Some(known) = self.lock().get(&user_id)
            && *known.bytes == *bytes
        {
            return Some(known.clone());
        }
        let state = serde_json::from_slice::<UserState>(bytes).ok()?;
        let decoded = Arc::new(Decoded::new(bytes.into(), state));
        self.lock().put(user_id, decoded.clone());
        Some(decoded)
    }
}

/// Reads a user's state from the database, caching it when `cache` (and nobody dropped it since).
async fn load(state: &AppState, user_id: Uuid, cache: bool) -> AppResult<Option<UserState>> {
    let Some(user) = accounts::find_by_id(&state.db, user_id).await? else {
        return Ok(None);
    };
    let roles = accounts::roles_of(&state.db, user_id).await?;
    let permissions = accounts::permissions_of(&state.db, &[user_id])
        .await?
        .remove(&user_id)
        .unwrap_or_default();
    let revoked: Vec<Uuid> = revoked_sessions::Entity::find()
        .filter(revoked_sessions::Column::UserId.eq(user_id))
        .filter(revoked_sessions::Column::ExpiresAt.gt(Utc::now()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    let fresh = UserState {
        profile: Profile::new(&user, &roles),
        email: user.email,
        epoch: user.session_epoch,
        active: user.is_active,
        banned: user.banned_at.is_some(),
        banned_until: user.banned_until.map(|t| t.timestamp()),
        roles: roles.into_iter().map(|r| r.name).collect(),
        permissions: permissions.into_iter().collect(),
        revoked_sessions: revoked,
    };
    if cache && let Ok(bytes) = serde_json::to_vec(&fresh) {
        // Only into an empty slot: a tombstone means the state changed while we read it.
        if let Err(error) = state
            .stores
            .kv
            .set_if_absent(&user_state_key(user_id), &bytes, Some(USER_STATE_TTL))
            .await
        {
            error.log("cannot cache a user's state");
        }
    }
    Ok(Some(fresh))
}

/// Call after any committed change to a user's status, epoch, roles, permissions or sessions:
/// the cached state is dropped (retried in the background while the store is unreachable, for as
/// long as a stale entry could live) and every instance re-checks the user's open sockets.
pub async fn user_changed(state: &AppState, user_id: Uuid) {
    changed(state, user_id, None).await;
}

/// [`user_changed`] for a change that ends sessions, saying why: sockets whose session it ended
/// tell their client the reason before they close (`sessionEvents`).
pub async fn sessions_ended(state: &AppState, user_id: Uuid, reason: events::SessionEnd) {
    changed(state, user_id, Some(reason)).await;
}

async fn changed(state: &AppState, user_id: Uuid, reason: Option<events::SessionEnd>) {
    drop_cached(state, user_state_key(user_id)).await;
    bump_tags(state, Some(user_id)).await;
    events::publish(state, user_id, reason).await;
}

/// Drops a cached credential state and leaves a tombstone, so a reader that loaded the old
/// state just before cannot put it back; retried in the background while the store is
/// unreachable, for as long as a stale entry could live.
pub(crate) async fn drop_cached(state: &AppState, key: String) {
    if let Err(error) = state
        .stores
        .kv
        .set(&key, TOMBSTONE, Some(TOMBSTONE_TTL))
        .await
    {
        error.log("cannot drop a cached credential state; retrying in the background");
        let kv = state.stores.kv.clone();
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(200);
            while started.elapsed() < USER_STATE_TTL {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                if kv.set(&key, TOMBSTONE, Some(TOMBSTONE_TTL)).await.is_ok() {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Whether a cached credential state is a tombstone (see [`drop_cached`]).
pub(crate) fn is_tombstone(bytes: &[u8]) -> bool {
    bytes == TOMBSTONE
}

/// Cached responses that show the user, or any list of users, are stale from now on.
async fn bump_tags(state: &AppState, user_id: Option<Uuid>) {
    let mut changed = vec![USER_TAG.to_owned()];
    if let Some(id) = user_id {
        changed.push(tags::entity(USER_TAG, id));
    }
    if let Err(error) = tags::bump(&state.stores, &changed).await {
        error.log("cannot mark cached responses stale");
    }
}

/// The cache tag of users (`User:<id>` for one, `User` for lists): see `ctx.cache_tag`.
pub const USER_TAG: &str = "User";

/// Call after a committed new account: cached lists of users are stale.
pub async fn user_created(state: &AppState) {
    bump_tags(state, None).await;
}

/// Call after a committed change to a user's row that does not touch what they may do and that
/// a stale read for a moment would not hurt (the time of the last sign-in): the cached state is
/// dropped unless a change already stands there, so the next request reloads it — without the
/// tombstone and socket re-checks of [`user_changed`], which would make every request of the
/// next seconds go to the database.
pub async fn profile_touched(state: &AppState, user_id: Uuid) {
    let key = user_state_key(user_id);
    let dropped = match state.stores.kv.get(&key).await {
        Ok(Some(bytes)) if bytes != TOMBSTONE => state
            .stores
            .kv
            .delete_if_equals(&key, &bytes)
            .await
            .map(|_| ()),
        Ok(_) => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(error) = dropped {
        error.log("cannot refresh a user's cached state");
    }
    bump_tags(state, Some(user_id)).await;
}

/// Why `user`'s session stopped working, when no change said so (the reason travels with most
/// changes: `sessions_ended`): read from the database, once, when a socket closes.
pub async fn why_ended(state: &AppState, user: &AuthUser) -> events::SessionEnd {
    use events::SessionEnd;
    if user.expires_at <= Utc::now() {
        return SessionEnd::TokenExpired;
    }
    let Ok(found) = accounts::find_by_id(&state.db, user.id).await else {
        return SessionEnd::SessionEnded;
    };
    let Some(account) = found else {
        return SessionEnd::Deleted;
    };
    if account.is_banned_at(Utc::now()) {
        return SessionEnd::Banned;
    }
    if !account.is_active {
        return SessionEnd::Deactivated;
    }
    match revoked_sessions::Entity::find_by_id(user.session_id)
        .one(&state.db)
        .await
    {
        Ok(Some(_)) => SessionEnd::SessionRevoked,
        Ok(None) => SessionEnd::SignedOutEverywhere,
        Err(_) => SessionEnd::SessionEnded,
    }
}

/// The error a transport reports when authentication is unavailable.
pub fn unavailable() -> AppError {
    AppError::Unavailable(anyhow::anyhow!("credentials cannot be checked right now"))
}
