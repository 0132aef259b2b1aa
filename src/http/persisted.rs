//! Persisted queries. `apq`: the Apollo automatic persisted query protocol — a request may send
//! only `extensions.persistedQuery.sha256Hash`; an unknown hash answers
//! `PERSISTED_QUERY_NOT_FOUND`, and the client retries with the document, which is checked
//! against the hash and stored in the shared store (so any instance resolves it later).
//! `safelist`: only documents from the manifest run, by hash or in full; anything else is
//! `PERSISTED_QUERY_NOT_ALLOWED`.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::PersistedQueryMode;
use crate::error::ErrorCode;
use crate::state::AppState;

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

fn key(hash: &str) -> String {
    format!("apq:{hash}")
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
                match app.stores.kv.get(&key(&hash)).await {
                    Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| {
                        refuse(ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound")
                    }),
                    Ok(None) => Err(refuse(
                        ErrorCode::PersistedQueryNotFound,
                        "PersistedQueryNotFound",
                    )),
                    Err(error) => {
                        tracing::warn!(error = %error, "persisted query store unavailable");
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
                if let Err(error) = app
                    .stores
                    .kv
                    .set(&key(&hash), document.as_bytes(), Some(settings.apq_ttl))
                    .await
                {
                    tracing::warn!(error = %error, "cannot store a persisted query");
                }
                Ok(document)
            }
        },
    }
}
