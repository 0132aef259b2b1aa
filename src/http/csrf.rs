//! CSRF prevention. A cross-site page can make a browser send a GET, or a POST whose content type
//! is `text/plain`, form-encoded or multipart, without a CORS preflight — and the browser attaches
//! *ambient* credentials to it by itself: cookies, HTTP Basic, a client certificate. Such a
//! request must carry a non-empty `Apollo-Require-Preflight`, `X-Apollo-Operation-Name` (or a
//! configured) header, which a cross-site page cannot set without a preflight the CORS policy
//! refuses.
//!
//! `CSRF_PREVENTION=ambient` (the default) guards only requests that carry ambient credentials:
//! a bearer token is never attached by the browser on its own, so bearer and anonymous GETs work
//! as the GraphQL-over-HTTP specification describes. `strict` guards every such request, as
//! Apollo Router does; `off` guards none.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use super::caller::is_graphiql_page;
use crate::config::{CsrfMode, CsrfSettings};
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
        .trim();
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    .iter()
    .any(|simple| essence.eq_ignore_ascii_case(simple))
}

/// Whether the browser could have attached the request's credentials by itself.
fn ambient_credentials(request: &Request, csrf: &CsrfSettings) -> bool {
    let headers = request.headers();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..6)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic "))
        });
    headers.contains_key(header::COOKIE)
        || basic
        || csrf
            .ambient_headers
            .iter()
            .any(|name| headers.contains_key(name.as_str()))
}

/// Whether the request carries one of the headers a cross-site page cannot set.
fn preflighted(request: &Request, csrf: &CsrfSettings) -> bool {
    csrf.headers.iter().any(|name| {
        request
            .headers()
            .get(name.as_str())
            .is_some_and(|v| !v.as_bytes().is_empty())
    })
}

/// The refusal of a request that needs a preflight header and has none (`super::guard`'s check).
pub fn refusal(app: &AppState, request: &Request) -> Option<Response> {
    let csrf = &app.settings.csrf;
    // Only GraphQL over HTTP executes operations; the WebSocket endpoint authenticates in its
    // own protocol, and a browser opening GraphiQL sends a plain navigation.
    let guarded_path = request.uri().path() == "/graphql" && !is_graphiql_page(request);
    let simple = match *request.method() {
        Method::GET | Method::HEAD => true,
        Method::POST => simple_content_type(request),
        _ => false,
    };
    let guarded = guarded_path
        && simple
        && match csrf.mode {
            CsrfMode::Off => false,
            CsrfMode::Strict => true,
            CsrfMode::Ambient => ambient_credentials(request, csrf),
        };
    if !guarded || preflighted(request, csrf) {
        return None;
    }
    Some(error_response(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "this request carries credentials a browser attaches by itself and has been blocked as a \
         potential cross-site request forgery: send an `Apollo-Require-Preflight: true` (or \
         `X-Apollo-Operation-Name`) header, or POST with Content-Type: application/json",
        None,
    ))
}
