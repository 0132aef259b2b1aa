//! CSRF prevention as in Apollo Router: a request a browser could send cross-site without a
//! preflight — a GET, or a POST whose content type is not JSON — must carry a non-empty
//! `Apollo-Require-Preflight`, `X-Apollo-Operation-Name` (or a configured) header, which a
//! cross-site page cannot set without a preflight the CORS policy refuses.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{ErrorCode, error_response};
use crate::state::AppState;

/// Content types a `<form>` (or `fetch` in no-cors mode) can send without a preflight.
fn simple_content_type(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

fn wants_html(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

pub async fn layer(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let csrf = &app.settings.csrf;
    let path = request.uri().path();
    // Only GraphQL over HTTP executes operations; the WebSocket endpoint authenticates in its
    // own protocol, and a browser opening GraphiQL sends a plain navigation.
    let guarded = path == "/graphql"
        && !(request.method() == Method::GET
            && wants_html(&request)
            && request.uri().query().is_none());
    let simple = match *request.method() {
        Method::GET | Method::HEAD => true,
        Method::POST => simple_content_type(&request),
        _ => false,
    };
    if !csrf.enabled || !guarded || !simple {
        return next.run(request).await;
    }
    let preflighted = csrf.headers.iter().any(|name| {
        request
            .headers()
            .get(name.as_str())
            .is_some_and(|v| !v.as_bytes().is_empty())
    });
    if preflighted {
        return next.run(request).await;
    }
    error_response(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "this request has been blocked as a potential cross-site request forgery: send an \
         `Apollo-Require-Preflight: true` (or `X-Apollo-Operation-Name`) header, or POST with \
         Content-Type: application/json",
        None,
    )
}
