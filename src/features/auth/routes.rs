//! `GET /auth/oauth/{provider}/start?redirect_uri=…` and `GET /auth/oauth/{provider}/callback`.
//! The callback hands tokens to the frontend in the URL fragment (never sent to servers or logged
//! by proxies): `#access_token=…&refresh_token=…&expires_at=…&session_id=…`, or
//! `#error=CODE&error_description=…`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::oauth;
use crate::identity::Caller;
use crate::state::AppState;
use crate::telemetry::RequestId;

/// The OAuth2 sign-in routes (rate limited like every request; `path:/auth/oauth=…` rules apply).
pub fn routes(app: AppState) -> Router {
    Router::new()
        .route("/auth/oauth/{provider}/start", get(start))
        .route("/auth/oauth/{provider}/callback", get(callback))
        .with_state(app)
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn start(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let redirect_uri = params
        .get("redirect_uri")
        .map(String::as_str)
        .unwrap_or_default();
    match oauth::start(&state, &provider, redirect_uri).await {
        Ok(url) => redirect(url.as_str()),
        Err(e) => e.into_response(),
    }
}

async fn callback(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| params.get(k).map(String::as_str);
    let finished = oauth::finish(
        &state,
        &provider,
        get("code"),
        get("state").unwrap_or_default(),
        get("error"),
        &caller.client,
    )
    .await;
    let finished = match finished {
        Ok(finished) => finished,
        Err(e) => return e.into_response(),
    };
    let mut target = finished.redirect_uri;
    let mut fragment = url::form_urlencoded::Serializer::new(String::new());
    match finished.outcome {
        Ok(tokens) => {
            fragment
                .append_pair("access_token", &tokens.access_token)
                .append_pair("token_type", "Bearer")
                .append_pair("expires_at", &tokens.access_expires_at.to_rfc3339())
                .append_pair("refresh_token", &tokens.refresh_token)
                .append_pair("session_id", &tokens.session_id.to_string());
        }
        Err(e) => {
            e.report();
            fragment
                .append_pair("error", e.code().as_str())
                .append_pair("error_description", &e.to_string())
                .append_pair("request_id", request_id.as_str());
        }
    }
    target.set_fragment(Some(&fragment.finish()));
    redirect(target.as_str())
}
