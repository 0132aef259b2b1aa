//! Shaping an operation's outcome into an HTTP response: the status (GraphQL-over-HTTP's rules),
//! the media type, caching headers, `Allow` and `WWW-Authenticate`.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::HttpState;
use super::super::caching::{self, Cacheable};
use super::super::operation::Refusal;
use super::super::rate_limit::RuleWindows;
use super::negotiation::MediaType;
use crate::error::{ErrorCode, error_response};
use crate::infra::rate_limit::Window;
use crate::telemetry::RequestId;

pub fn request_error(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    media: Option<MediaType>,
) -> Response {
    let mut response = error_response(status, code, message, None);
    if let Some(media) = media {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, media.content_type());
    }
    response
}

pub fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::NotAcceptable,
        "acceptable response types: application/graphql-response+json, application/json",
        None,
    )
}

/// The outcome of one operation, before it is given a status code.
pub struct Outcome {
    pub body: Value,
    /// `false` for request errors: nothing executed, and the body has no `data`.
    pub executed: bool,
    /// A status decided before execution (405 for a GET mutation, 401 for bad credentials).
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    /// Set for queries that executed without errors: they may be cached.
    pub cacheable: Option<Cacheable>,
    /// Root-field rate windows, for the pacing headers (`super::super::caller`).
    pub windows: Vec<Window>,
    /// The body already serialised (an answer from the response cache, or one just stored).
    pub bytes: Option<Bytes>,
}

impl Outcome {
    pub fn refused(refusal: Refusal, request_id: &RequestId) -> Self {
        Self {
            body: json!({ "errors": refusal.errors_json(request_id) }),
            executed: false,
            status: refusal.status,
            headers: refusal.headers,
            cacheable: None,
            windows: refusal.windows,
            bytes: None,
        }
    }
}

pub fn respond_outcome(
    state: &HttpState,
    outcome: Outcome,
    media: MediaType,
    request_headers: &HeaderMap,
) -> Response {
    let status = if let Some(status) = outcome.status {
        status
    } else if outcome.executed || media == MediaType::Json {
        // Legacy `application/json` clients expect 200 with the errors in the body.
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let bytes = outcome.bytes.unwrap_or_else(|| {
        Bytes::from(serde_json::to_vec(&outcome.body).unwrap_or_else(|_| b"{}".to_vec()))
    });
    let mut response = respond_bytes(status, media, bytes.clone(), outcome.headers);
    if !outcome.windows.is_empty() {
        response
            .extensions_mut()
            .insert(RuleWindows(outcome.windows));
    }
    response = caching::apply(
        response,
        &bytes,
        outcome.cacheable,
        &state.app.settings.cache,
        request_headers,
        &state.app.metrics,
    );
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::UNAUTHORIZED => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        _ => {}
    }
    response
}

pub fn respond(status: StatusCode, media: MediaType, body: &Value, headers: HeaderMap) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = respond_bytes(status, media, Bytes::from(bytes), headers);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn respond_bytes(
    status: StatusCode,
    media: MediaType,
    bytes: Bytes,
    headers: HeaderMap,
) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().extend(headers);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}
