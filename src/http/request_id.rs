//! Request ids: a sane incoming `X-Request-ID` is kept, anything else is replaced by a UUIDv7;
//! the id is echoed on every response, recorded on the request span and handed to GraphQL.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response};
use axum::middleware::Next;
use tracing::Span;

use crate::telemetry::{self, RequestId};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// 1–128 characters from `[A-Za-z0-9._-]`: safe in logs, headers and URLs.
pub fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub async fn layer(mut request: Request, next: Next) -> axum::response::Response {
    let kept = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(is_valid))
        .cloned();
    let (id, value) = match kept {
        Some(value) => (
            RequestId(std::sync::Arc::from(value.to_str().unwrap_or_default())),
            value,
        ),
        None => {
            let mut text = uuid::Uuid::encode_buffer();
            let id: &str = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
            // A UUID is visible ASCII, so this conversion cannot fail.
            let value =
                HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
            (RequestId(std::sync::Arc::from(id)), value)
        }
    };
    request.extensions_mut().insert(id.clone());
    // Error bodies built anywhere inside carry the id.
    let mut response = telemetry::in_request(id, next.run(request)).await;
    response.headers_mut().insert(X_REQUEST_ID, value);
    response
}

/// The request span: its fields appear on every log line of the request. The query string is
/// never recorded (it can carry variables), nor is any header but the id.
pub fn make_span<B>(request: &axum::http::Request<B>) -> Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", RequestId::as_str);
    if !telemetry::otel::enabled() {
        // Traces off: only the fields logs use.
        return tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = %request.uri().path(),
            operation_name = tracing::field::Empty,
            user_id = tracing::field::Empty,
            api_key_id = tracing::field::Empty,
        );
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        operation_name = tracing::field::Empty,
        user_id = tracing::field::Empty,
        api_key_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // An incoming `traceparent` is the parent; every log line of the request names the trace.
    telemetry::otel::adopt_parent(&span, request.headers());
    if let Some(trace_id) = span.in_scope(telemetry::otel::current_trace_id) {
        span.record("trace_id", trace_id);
    }
    span
}

/// The one log line per request.
pub fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    if telemetry::otel::enabled() {
        span.record("http.response.status_code", status);
        if response.status().is_server_error() {
            // Exported whatever the sampling said.
            span.in_scope(|| telemetry::otel::mark_failed("5xx"));
        }
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::error!(status, latency_ms, "request failed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
}

/// `traceresponse` (W3C Trace Context Level 2): the trace and span this request was served in,
/// when traces are on. Runs inside the request span.
pub async fn trace_response(request: Request, next: Next) -> axum::response::Response {
    let mut response = next.run(request).await;
    if let Some(value) =
        telemetry::otel::traceresponse().and_then(|v| HeaderValue::from_str(&v).ok())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("traceresponse"), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn only_short_safe_ids_are_kept() {
        assert!(is_valid("abc-123_X.y"));
        assert!(is_valid(&"a".repeat(128)));
        assert!(!is_valid(&"a".repeat(129)));
        assert!(!is_valid(""));
        for bad in ["a b", "a\nb", "a\rb", "a\tb", "a;b", "ä"] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }
}
