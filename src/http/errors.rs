//! Every error response has the GraphQL error shape, whichever layer produced it:
//! `{"errors":[{"message","extensions":{"code","requestId"}}]}`.

use std::any::Any;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::error::{ErrorCode, error_response};

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"))
}

/// Replaces the bare error bodies of inner layers (413 from the body limit, 408 from the timeout,
/// 405 from method routing, text rejections) with the JSON error shape, keeping their headers.
pub fn json_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "request timed out".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
        s if s.is_server_error() => "internal server error".to_owned(),
        s => s.canonical_reason().unwrap_or("bad request").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let replacement = error_response(status, ErrorCode::from_status(status), &message, None);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let (_, body) = replacement.into_parts();
    Response::from_parts(parts, body)
}

pub async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
        None,
    )
}

/// A panic's message, when it has one (for the log, never for the client).
pub fn panic_text(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// A panic becomes a logged 500 with no detail for the client.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    tracing::error!(panic = panic_text(&*panic), "handler panicked");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalServerError,
        "internal server error",
        None,
    )
}
