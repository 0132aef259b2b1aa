//! Persisted queries. `apq`: the Apollo automatic persisted query protocol — a request may send
//! only `extensions.persistedQuery.sha256Hash`; an unknown hash answers
//! `PERSISTED_QUERY_NOT_FOUND`, and the client retries with the document, which is checked
//! against the hash and — once it has parsed, validated and passed every limit — stored in a
//! bounded cache in the shared store (`APQ_MAX_ENTRIES`, least recently used evicted; any
//! instance resolves it later). Registrations count against `APQ_REGISTRATIONS` per principal.
//! `safelist`: only documents from the manifest run, by hash or in full; anything else is
//! `PERSISTED_QUERY_NOT_ALLOWED`.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::rate_limit::Principal;
use crate::config::PersistedQueryMode;
use crate::error::ErrorCode;
use crate::infra::Bounds;
use crate::infra::rate_limit::Decision;
use crate::state::AppState;

const NAMESPACE: &str = "apq";

/// A request's document, and the hash to register it under once it has run.
pub struct Resolved {
    pub document: String,
    pub register: Option<String>,
}

/// Why a request's document cannot be had.
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn sha256(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

fn bounds(app: &AppState) -> Bounds {
    Bounds {
        capacity: app.settings.persisted_queries.max_entries,
        ttl: app.settings.persisted_queries.apq_ttl,
    }
}

/// The `persistedQuery` extension's hash, when the request has one.
fn requested_hash(extensions: Option<&Map<String, Value>>) -> Result<Option<String>, Refusal> {
    let Some(persisted) = extensions.and_then(|e| e.get("persistedQuery")) else {
        return Ok(None);
    };
    if persisted.get("version").and_then(Value::as_i64) != Some(1) {
        return Err(refuse(
            ErrorCode::BadRequest,
            "unsupported persisted query version (use 1)",
        ));
    }
    let hash = persisted
        .get("sha256Hash")
        .and_then(Value::as_str)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            refuse(
                ErrorCode::BadRequest,
                "persistedQuery.sha256Hash must be 64 hex digits",
            )
        })?;
    Ok(Some(hash.to_ascii_lowercase()))
}

/// The document to run for a request's `query` and `extensions`.
///
/// # Errors
/// A refusal with its code (`PERSISTED_QUERY_NOT_FOUND`, `PERSISTED_QUERY_NOT_ALLOWED`,
/// `BAD_REQUEST` for a hash mismatch or a missing query).
pub async fn resolve(
    app: &AppState,
    query: Option<String>,
    extensions: Option<&Map<String, Value>>,
) -> Result<Resolved, Refusal> {
    let register = match app.settings.persisted_queries.mode {
        PersistedQueryMode::Apq if query.is_some() => requested_hash(extensions)?,
        _ => None,
    };
    let document = document(app, query, extensions).await?;
    Ok(Resolved { document, register })
}

async fn document(
    app: &AppState,
    query: Option<String>,
    extensions: Option<&Map<String, Value>>,
) -> Result<String, Refusal> {
    let settings = &app.settings.persisted_queries;
    let hash = match settings.mode {
        PersistedQueryMode::Off => None,
        _ => requested_hash(extensions)?,
    };
    match settings.mode {
        PersistedQueryMode::Off => {
            query.ok_or_else(|| refuse(ErrorCode::BadRequest, "the 'query' parameter is required"))
        }
        PersistedQueryMode::Safelist => {
            let hash = match (&query, hash) {
                (Some(document), Some(hash)) if sha256(document) != hash => {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "provided sha does not match query",
                    ));
                }
                (_, Some(hash)) => hash,
                (Some(document), None) => sha256(document),
                (None, None) => {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "the 'query' parameter is required",
                    ));
                }
            };
            settings.manifest.get(&hash).cloned().ok_or_else(|| {
                refuse(
                    ErrorCode::PersistedQueryNotAllowed,
                    "only operations from the safelist may run",
                )
            })
        }
        PersistedQueryMode::Apq => match (query, hash) {
            (query, None) => query
                .ok_or_else(|| refuse(ErrorCode::BadRequest, "the 'query' parameter is required")),
            (None, Some(hash)) => {
                if let Some(document) = settings.manifest.get(&hash) {
                    return Ok(document.clone());
                }
                let lookup = crate::telemetry::otel::store_call(
                    "store.persisted_lookup",
                    app.stores.backend,
                    Vec::new,
                    app.stores.cache.get(NAMESPACE, bounds(app), &hash),
                );
                match lookup.await {
                    Ok(Some(bytes)) => {
                        std::str::from_utf8(&bytes).map(str::to_owned).map_err(|_| {
                            refuse(ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound")
                        })
                    }
                    Ok(None) => Err(refuse(
                        ErrorCode::PersistedQueryNotFound,
                        "PersistedQueryNotFound",
                    )),
                    Err(error) => {
                        error.log("persisted query store unavailable");
                        Err(refuse(
                            ErrorCode::PersistedQueryNotFound,
                            "PersistedQueryNotFound",
                        ))
                    }
                }
            }
            (Some(document), Some(hash)) => {
                if sha256(&document) != hash {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "provided sha does not match query",
                    ));
                }
                Ok(document)
            }
        },
    }
}

/// Stores a document that has run, counting the registration against the principal's
/// `APQ_REGISTRATIONS` (past it, the document runs but is not stored).
pub async fn register(app: &AppState, principal: Option<&Principal>, hash: &str, document: &str) {
    if let Some(principal) = principal {
        let quota = app.settings.persisted_queries.registrations;
        let key = format!("apq:{}", principal.key);
        match app.rate_limiter.hit("apq".into(), &key, quota).await {
            Decision::Allowed(_) | Decision::StoreDown => {}
            Decision::Limited(_) | Decision::Unavailable => {
                tracing::debug!("persisted query registrations used up; not stored");
                return;
            }
        }
    }
    let stored = crate::telemetry::otel::store_call(
        "store.persisted_store",
        app.stores.backend,
        Vec::new,
        app.stores
            .cache
            .put(NAMESPACE, bounds(app), hash, document.as_bytes()),
    );
    if let Err(error) = stored.await {
        error.log("cannot store a persisted query");
    }
}
