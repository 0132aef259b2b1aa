//! Response-cache reads sent with the caller's round trip, on a remote store (Redis).
//!
//! A cached answer needs two reads: the caller's (user state, revocation, rate window) before
//! anything else, and the entry's, whose key needs the parsed document and the viewer's scope.
//! Done in turn, that is two round trips. When the same request text came before with the same
//! credential, the key it led to is remembered here, and the entry is read at the same moment as
//! the caller's state: the two go out in one script call (`infra::redis::coalesce`), one round
//! trip.
//!
//! Only a guess: the handler still computes the key from what it parsed and the viewer it got,
//! and uses the early read only when the two keys are equal. A changed permission, a new token or
//! an expired entry is an ordinary lookup. A read nobody used (a refused request, another key) is
//! counted in `response_cache_prefetch_total{result="unused"}`; after a refused one, nothing is
//! read early for that fingerprint until a request for it is looked up again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};

use super::caller::Credential;
use super::response_cache;
use crate::error::ErrorCode;
use crate::infra::StoreResult;
use crate::infra::cache::TaggedGet;
use crate::state::AppState;

/// Request bodies read ahead of the handler only up to this size (larger ones go the ordinary
/// way: they are rarely cached queries).
pub const MAX_BODY: usize = 16 * 1024;

/// Keys remembered at most; past that the memo starts again (a client sending new texts only
/// churns it).
const MAX_REMEMBERED: usize = 4096;

/// Cache keys by request fingerprint: what the same text with the same credential led to last.
/// Read by every request on Redis, written only when a key changes.
#[derive(Default)]
pub struct Recent(RwLock<HashMap<u128, Arc<str>>>);

impl Recent {
    fn get(&self, fingerprint: u128) -> Option<Arc<str>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fingerprint)
            .cloned()
    }

    fn forget(&self, fingerprint: u128) {
        if self.get(fingerprint).is_some() {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&fingerprint);
        }
    }

    fn remember(&self, fingerprint: u128, key: &str) {
        if self.get(fingerprint).is_some_and(|known| &*known == key) {
            return;
        }
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_REMEMBERED {
            keys.clear();
        }
        keys.insert(fingerprint, Arc::from(key));
    }
}

/// The request's fingerprint and, when one went out, the early read: taken once by the handler.
#[derive(Clone)]
pub struct Speculation(Arc<Mutex<Guess>>);

struct Guess {
    app: AppState,
    fingerprint: u128,
    read: Option<(Arc<str>, StoreResult<TaggedGet>)>,
}

impl Drop for Guess {
    fn drop(&mut self) {
        if self.read.is_some() {
            // Nothing looked this request up: it was refused (a rate limit, a bad request) or
            // failed before the handler. The next one like it reads nothing early until one is
            // looked up again, so a client kept refused costs no cache read per request.
            self.app
                .metrics
                .count("response_cache_prefetch_total", "result", "unused");
            self.app.local::<Recent>().forget(self.fingerprint);
        }
    }
}

impl Speculation {
    /// What the cache has under `key`: the early read when it was for `key`, else a lookup now.
    /// Either way `key` is remembered for the next request like this one.
    pub async fn lookup(&self, app: &AppState, key: &str) -> response_cache::Lookup {
        let (fingerprint, read) = {
            let mut guess = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            (guess.fingerprint, guess.read.take())
        };
        app.local::<Recent>().remember(fingerprint, key);
        match read {
            Some((guessed, read)) if &*guessed == key => {
                app.metrics
                    .count("response_cache_prefetch_total", "result", "used");
                response_cache::judge(app, read)
            }
            guessed => {
                if guessed.is_some() {
                    // Another key this time (a changed scope): the one just remembered is read
                    // early next time.
                    app.metrics
                        .count("response_cache_prefetch_total", "result", "unused");
                }
                response_cache::lookup(app, key).await
            }
        }
    }

    /// This request is not looked up in the cache (a mutation, or a document its hints keep
    /// out): nothing is read early for the next one like it.
    pub fn forget(&self, app: &AppState) {
        let fingerprint = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fingerprint;
        app.local::<Recent>().forget(fingerprint);
    }
}

/// Whether `request` is worth a fingerprint: a `/graphql` request, the cache on and its store
/// remote.
pub fn wanted(app: &AppState, request: &Request) -> bool {
    app.settings.cache.responses && app.stores.joins.is_some() && request.uri().path() == "/graphql"
}

/// What identifies the credential presented in a fingerprint (`None`: a malformed one, which
/// gets no guess).
pub fn credential_hash(credential: &Credential<'_>) -> Option<u64> {
    match credential {
        Credential::None => Some(0),
        Credential::Bearer(token) | Credential::ApiKey(token) => {
            Some(xxhash_rust::xxh3::xxh3_64(token.as_bytes()))
        }
        Credential::Malformed(_) => None,
    }
}

/// A `GET` or single `POST` (to `/graphql`: [`wanted`]), with its body read when that is small
/// enough (the request is given back whole either way), and its fingerprint: the request text
/// and the credential presented ([`credential_hash`]). `None` for anything else; `Err` with the
/// request's answer when its body could not be read.
pub async fn fingerprint(
    app: &AppState,
    request: Request,
    credential: u64,
) -> Result<(Request, Option<u128>), axum::response::Response> {
    let hash = |kind: u8, text: &[u8]| {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[kind]);
        hasher.update(text);
        hasher.update(&credential.to_le_bytes());
        hasher.digest128()
    };
    if request.method() == Method::GET {
        let fingerprint = request.uri().query().map(|q| hash(b'G', q.as_bytes()));
        return Ok((request, fingerprint));
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let small = length.is_some_and(|n| n <= MAX_BODY.min(app.settings.http.body_limit));
    // A client that sent `Expect: 100-continue` asked to be answered (or refused) before it
    // sends its body: reading ahead would let it through to the body first.
    let waits = request.headers().contains_key(header::EXPECT);
    if request.method() != Method::POST || !small || waits {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        app.settings.http.request_timeout,
        axum::body::to_bytes(body, MAX_BODY),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ));
        }
        Err(_) => return Err(refused(StatusCode::REQUEST_TIMEOUT, "request timed out")),
    };
    // A batch (a JSON array) is several operations: no single key to guess.
    let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let fingerprint = (!batch).then(|| hash(b'P', &bytes));
    Ok((Request::from_parts(parts, Body::from(bytes)), fingerprint))
}

/// What the handler's extractor or the timeout layer would have answered.
fn refused(status: StatusCode, message: &str) -> axum::response::Response {
    crate::error::error_response(status, ErrorCode::from_status(status), message, None)
}

/// The request's [`Speculation`], with the entry read alongside `caller` (the caller's own
/// round trip) when this fingerprint led to a key before.
pub async fn alongside<T>(
    app: &AppState,
    fingerprint: u128,
    caller: impl Future<Output = T>,
) -> (T, Speculation) {
    let key = app.local::<Recent>().get(fingerprint);
    let (caller, read) = match key {
        Some(key) => {
            let (caller, read) = tokio::join!(caller, response_cache::traced_read(app, &key));
            (caller, Some((key, read)))
        }
        None => (caller.await, None),
    };
    let guess = Guess {
        app: app.clone(),
        fingerprint,
        read,
    };
    (caller, Speculation(Arc::new(Mutex::new(guess))))
}
