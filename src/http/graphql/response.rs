//! Shaping an operation's outcome into an HTTP response: the status (GraphQL-over-HTTP's rules),
//! the media type, caching headers, `Allow` and `WWW-Authenticate`.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
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

/// 406 for a request whose `Accept-Encoding` allows nothing this server sends
/// (`super::super::compression::nothing_acceptable`).
pub fn no_acceptable_coding() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::NotAcceptable,
        "acceptable content codings: br, gzip, identity",
        None,
    )
}

/// The outcome of one operation, before it is given a status code.
pub struct Outcome {
    /// The body of a refusal (`bytes` is `None`); `Null` once `bytes` holds it.
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
    /// The body already serialised: every executed operation's, and an answer from the response
    /// cache.
    pub bytes: Option<Bytes>,
}

impl Outcome {
    /// The body as JSON bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes.unwrap_or_else(|| {
            Bytes::from(serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec()))
        })
    }

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

/// `revalidates`: the request is a GET or HEAD, which a matching `If-None-Match` answers with 304.
pub fn respond_outcome(
    state: &HttpState,
    mut outcome: Outcome,
    media: MediaType,
    request_headers: &HeaderMap,
    revalidates: bool,
) -> Response {
    let status = if let Some(status) = outcome.status {
        status
    } else if outcome.executed || media == MediaType::Json {
        // Legacy `application/json` clients expect 200 with the errors in the body.
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let headers = std::mem::take(&mut outcome.headers);
    let windows = std::mem::take(&mut outcome.windows);
    let cacheable = outcome.cacheable.take();
    let bytes = outcome.into_bytes();
    let mut response = respond_bytes(status, media, bytes.clone(), headers);
    if !windows.is_empty() {
        response.extensions_mut().insert(RuleWindows(windows));
    }
    response = caching::apply(
        response,
        &bytes,
        cacheable,
        &state.app.settings.cache,
        request_headers,
        revalidates,
        &state.app.metrics,
    );
    // Unless caching answered a 304 or 412 in its place, the response holds the body.
    let holds_body = response.status() == status;
    response = state.compression.compress(
        request_headers,
        &bytes,
        response,
        holds_body,
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

/// A JSON array of bodies already serialised (a batch's results, in order), never stored;
/// compressed as `request_headers` ask.
pub fn respond_array(
    state: &HttpState,
    media: MediaType,
    items: &[Bytes],
    request_headers: &HeaderMap,
) -> Response {
    let mut bytes = Vec::with_capacity(items.iter().map(|item| item.len() + 1).sum::<usize>() + 1);
    bytes.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(item);
    }
    bytes.push(b']');
    let bytes = Bytes::from(bytes);
    let mut response = respond_bytes(StatusCode::OK, media, bytes.clone(), HeaderMap::new());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    state
        .compression
        .compress(request_headers, &bytes, response, true, &state.app.metrics)
}

pub fn respond_bytes(
    status: StatusCode,
    media: MediaType,
    bytes: Bytes,
    headers: HeaderMap,
) -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes));
    *response.status_mut() = status;
    // The operation's own headers become the response's, with room for what the layers add
    // (caching, request id, pacing, budget): one allocation instead of a map grown twice.
    let mut headers = headers;
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(header::CONTENT_TYPE, media.content_type());
    *response.headers_mut() = headers;
    response
}

/// About how many headers a GraphQL response ends up with.
const RESPONSE_HEADERS: usize = 16;
