//! Request rate limits per principal (the user, or the client IP for anonymous callers), with
//! per-path and per-root-field rules, and the headers clients use to pace themselves:
//! `X-RateLimit-Limit/Remaining/Reset` and the IETF `RateLimit-Policy` / `RateLimit` fields.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::errors::error_response_with_status;
use crate::config::{Quota, RuleTarget};
use crate::error::ErrorCode;
use crate::features::auth::{Authentication, Caller};
use crate::features::users::Permission;
use crate::graphql::RequestId;
use crate::infra::rate_limit::{Decision, Window};
use crate::state::AppState;

/// Paths never limited: probes and scrapes.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// `None` when the caller is not limited at all (allowlisted IP, bypass permission).
pub fn principal(app: &AppState, caller: &Caller) -> Option<(String, Quota, &'static str)> {
    let settings = &app.settings.rate_limit;
    if !settings.enabled {
        return None;
    }
    if caller
        .client
        .ip
        .is_some_and(|ip| settings.allowlist.iter().any(|net| net.contains(&ip)))
    {
        return None;
    }
    match &caller.authentication {
        Authentication::User(user) => {
            if user
                .permissions
                .contains(Permission::RateLimitBypass.as_str())
            {
                return None;
            }
            Some((format!("user:{}", user.id), settings.user, "user"))
        }
        Authentication::Anonymous | Authentication::Invalid(_) => {
            let ip = caller
                .client
                .ip
                .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            Some((format!("ip:{ip}"), settings.anonymous, "anonymous"))
        }
    }
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// The pacing headers of a window.
pub fn headers(window: &Window) -> HeaderMap {
    let mut out = HeaderMap::new();
    let remaining = window.outcome.remaining();
    let reset = secs_ceil(window.outcome.reset_after);
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    put("x-ratelimit-limit", window.quota.limit.to_string());
    put("x-ratelimit-remaining", remaining.to_string());
    put("x-ratelimit-reset", reset.to_string());
    put(
        "ratelimit-policy",
        format!(
            "\"{}\";q={};w={}",
            window.policy,
            window.quota.limit,
            window.quota.window.as_secs().max(1)
        ),
    );
    put(
        "ratelimit",
        format!("\"{}\";r={remaining};t={reset}", window.policy),
    );
    out
}

/// The body and headers of a refusal: the GraphQL error shape with `extensions.retryAfter`, plus
/// `Retry-After` and the pacing headers. The HTTP layer and the GraphQL handler both answer with it.
pub fn limited_parts(
    window: &Window,
    request_id: Option<&RequestId>,
) -> (serde_json::Value, HeaderMap) {
    let retry = secs_ceil(window.outcome.retry_after).max(1);
    let body = serde_json::json!({
        "errors": [{
            "message": format!("too many requests; retry after {retry} s"),
            "extensions": {
                "code": ErrorCode::RateLimited.as_str(),
                "retryAfter": retry,
                "requestId": request_id.map(|r| r.0.clone()),
            }
        }]
    });
    let mut headers = headers(window);
    if let Ok(value) = HeaderValue::from_str(&retry.to_string()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    (body, headers)
}

/// The 429 answer.
pub fn limited_response(window: &Window, request_id: Option<&RequestId>) -> Response {
    let (body, headers) = limited_parts(window, request_id);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response.headers_mut().extend(headers);
    response
}

pub fn unavailable_response(request_id: Option<&RequestId>) -> Response {
    error_response_with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ServiceUnavailable,
        "rate limiting is unavailable; retry shortly",
        request_id,
    )
}

/// Counts a hit for the request's principal (and for a matching path rule).
pub async fn layer(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let caller = request.extensions().get::<Caller>().cloned();
    let request_id = request.extensions().get::<RequestId>().cloned();
    let Some(caller) = caller.filter(|_| !exempt(&path)) else {
        return next.run(request).await;
    };
    let Some((principal, default_quota, default_policy)) = principal(&app, &caller) else {
        return next.run(request).await;
    };
    let rule = app
        .settings
        .rate_limit
        .rules
        .iter()
        .find_map(|(target, quota)| match target {
            RuleTarget::Path(prefix) if path.starts_with(prefix.as_str()) => {
                Some((prefix.clone(), *quota))
            }
            _ => None,
        });
    let (policy, key, quota) = match rule {
        Some((prefix, quota)) => (
            format!("path:{prefix}"),
            format!("path:{prefix}:{principal}"),
            quota,
        ),
        None => (default_policy.to_owned(), principal, default_quota),
    };
    match app.rate_limiter.hit(&policy, &key, quota).await {
        Decision::Allowed(window) => {
            let mut response = next.run(request).await;
            response.headers_mut().extend(headers(&window));
            response
        }
        Decision::Limited(window) => limited_response(&window, request_id.as_ref()),
        Decision::StoreDown => next.run(request).await,
        Decision::Unavailable => unavailable_response(request_id.as_ref()),
    }
}
