//! `GET /notifications/unsubscribe?token=…` shows a page with one button (links in mail are
//! fetched by scanners, so a GET changes nothing); `POST` to the same URL — the button, or a mail
//! client's one-click request with `List-Unsubscribe=One-Click` (RFC 8058) — turns that kind's
//! email off for that user. A tampered token, or one made for another user or kind, changes
//! nothing.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::mail::{UNSUBSCRIBE_PATH, verify_unsubscribe_token};
use super::service;
use crate::state::AppState;
use crate::text::escape_html;

pub fn routes(app: AppState) -> Router {
    Router::new()
        .route(UNSUBSCRIBE_PATH, get(page).post(unsubscribe))
        .with_state(app)
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape_html(title),
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn invalid() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        "Invalid link",
        "<p>This unsubscribe link is not valid. Change what you receive in your notification settings.</p>",
    )
}

async fn page(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let Some((_, kind)) = verify_unsubscribe_token(&state, token) else {
        return invalid();
    };
    let mut action = url::form_urlencoded::Serializer::new(String::new());
    action.append_pair("token", token);
    html(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving {} by email?</p>\
             <form method=\"post\" action=\"{path}?{query}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>",
            escape_html(kind.label()),
            path = UNSUBSCRIBE_PATH,
            query = escape_html(&action.finish()),
        ),
    )
}

async fn unsubscribe(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let Some((user_id, kind)) = verify_unsubscribe_token(&state, token) else {
        return invalid();
    };
    match service::unsubscribe(&state, user_id, kind).await {
        // A deleted account has nothing left to unsubscribe from: the same answer.
        Ok(_) => html(
            StatusCode::OK,
            "Unsubscribed",
            &format!(
                "<p>You will no longer receive {} by email. Change this any time in your notification settings.</p>",
                escape_html(kind.label())
            ),
        ),
        Err(error) => {
            error.report();
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "<p>Your choice could not be saved right now. Please try again in a minute.</p>",
            )
        }
    }
}
