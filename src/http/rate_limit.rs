//! Request rate limits per principal (the user, or the client IP for anonymous callers), with
//! per-path and per-root-field rules, and the headers clients use to pace themselves:
//! `X-RateLimit-Limit/Remaining/Reset` and the IETF `RateLimit-Policy` / `RateLimit` fields.
//! HTTP requests are counted by [`super::caller`]; WebSocket operations are counted one by one
//! against the same windows.

use std::borrow::Cow;
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::caller::Subject;
use crate::config::{Quota, RuleTarget};
use crate::error::{AppError, ErrorCode, error_response};
use crate::graphql::Budget;
use crate::identity::ClientInfo;
use crate::infra::rate_limit::Window;
use crate::state::AppState;

// The pacing headers' names, made once at compile time (`from_static` at run time checks each
// byte on every request).
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_COST_BUDGET_LIMIT: HeaderName = HeaderName::from_static("x-cost-budget-limit");
const X_COST_BUDGET_REMAINING: HeaderName = HeaderName::from_static("x-cost-budget-remaining");
const X_COST_BUDGET_RESET: HeaderName = HeaderName::from_static("x-cost-budget-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Who a request is counted against, under which quota and policy name.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: String,
    pub quota: Quota,
    pub policy: Cow<'static, str>,
}

/// Paths never limited: probes and scrapes.
/// Probes, metrics and GraphiQL's static assets (the page itself is exempt in `caller`).
fn exempt(path: &str) -> bool {
    path.starts_with("/health/")
        || path == "/metrics"
        || path.starts_with(super::graphiql::ASSET_PREFIX)
}

fn allowlisted(app: &AppState, ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| {
        app.settings
            .rate_limit
            .allowlist
            .iter()
            .any(|net| net.contains(&ip))
    })
}

/// The principal's key and default quota: the user when signed in, the API key for machine
/// clients (`RATE_LIMIT_API_KEY`), else the client address. `None` when limits are off or the
/// client is allowlisted. (Holders of `ratelimit:bypass` are counted but never refused: that
/// needs their permissions, known once the caller is resolved.)
pub fn principal(app: &AppState, client: &ClientInfo, subject: Subject<'_>) -> Option<Principal> {
    let settings = &app.settings.rate_limit;
    if !settings.enabled || allowlisted(app, client.ip) {
        return None;
    }
    Some(match subject {
        Subject::User(id) => Principal {
            key: crate::infra::kv::key_with_uuid("user:", id, 0),
            quota: settings.user,
            policy: Cow::Borrowed("user"),
        },
        Subject::ApiKey(hash) => Principal {
            key: format!("apikey:{hash}"),
            quota: settings.api_key,
            policy: Cow::Borrowed("api_key"),
        },
        Subject::Anonymous => Principal {
            key: client.address_key().prefixed("ip:"),
            quota: settings.anonymous,
            policy: Cow::Borrowed("anonymous"),
        },
    })
}

/// The principal for an HTTP request to `path`: a matching path rule replaces the default quota.
pub fn principal_for_path(
    app: &AppState,
    path: &str,
    client: &ClientInfo,
    subject: Subject<'_>,
) -> Option<Principal> {
    if exempt(path) {
        return None;
    }
    let principal = principal(app, client, subject)?;
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
    Some(match rule {
        Some((prefix, quota)) => Principal {
            key: format!("path:{prefix}:{}", principal.key),
            quota,
            policy: Cow::Owned(format!("path:{prefix}")),
        },
        None => principal,
    })
}

/// The root-field rules that apply to an operation selecting `root_fields`: each rule's field
/// and quota.
fn applying<'a>(
    app: &'a AppState,
    root_fields: &'a [String],
) -> impl Iterator<Item = (&'a String, Quota)> + 'a {
    app.settings
        .rate_limit
        .rules
        .iter()
        .filter_map(move |(target, quota)| match target {
            RuleTarget::Field(field) if root_fields.iter().any(|f| f == field) => {
                Some((field, *quota))
            }
            _ => None,
        })
}

/// Whether a root-field rule applies to an operation selecting `root_fields`.
pub fn has_field_rules(app: &AppState, root_fields: &[String]) -> bool {
    applying(app, root_fields).next().is_some()
}

/// The root-field rules (`login=5/1m`) an operation selecting `root_fields` is counted against.
pub fn field_rules<'a>(
    app: &'a AppState,
    principal: &'a Principal,
    root_fields: &'a [String],
) -> impl Iterator<Item = Principal> + 'a {
    applying(app, root_fields).map(move |(field, quota)| Principal {
        key: format!("field:{field}:{}", principal.key),
        quota,
        policy: Cow::Owned(field.clone()),
    })
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// The windows an operation's root-field rules counted it against, handed from the GraphQL
/// handler to [`super::caller`] (a response extension) so that the pacing headers describe every
/// limit that applied, not only the default one.
#[derive(Debug, Clone, Default)]
pub struct RuleWindows(pub Vec<Window>);

/// Adds the pacing headers of the windows a request was counted against to `out`.
///
/// `RateLimit-Policy` and `RateLimit` (IETF draft `ratelimit-headers`) list every policy, the
/// decisive one first; `X-RateLimit-*` describe the decisive one alone: the window that refused
/// the request, else the one with the fewest requests left.
pub fn add_headers(out: &mut HeaderMap, windows: &[Window]) {
    let mut ordered: Vec<&Window> = Vec::with_capacity(windows.len());
    for window in windows {
        // One entry per policy: the last count wins (a batch may count a rule twice).
        if let Some(slot) = ordered.iter_mut().find(|w| w.policy == window.policy) {
            *slot = window;
        } else {
            ordered.push(window);
        }
    }
    ordered.sort_by_key(|w| (w.outcome.allowed, w.outcome.remaining()));
    let Some(decisive) = ordered.first() else {
        return;
    };
    out.reserve(5);
    // Numbers straight into header values (no text to validate).
    out.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decisive.quota.limit));
    out.insert(
        X_RATELIMIT_REMAINING,
        HeaderValue::from(decisive.outcome.remaining()),
    );
    out.insert(
        X_RATELIMIT_RESET,
        HeaderValue::from(secs_ceil(decisive.outcome.reset_after)),
    );
    // Both lists written straight into one buffer each, no string per entry.
    let mut policies = Vec::with_capacity(32 * ordered.len());
    let mut states = Vec::with_capacity(32 * ordered.len());
    let mut numbers = itoa::Buffer::new();
    for (index, w) in ordered.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let policy = &w.policy;
        for (list, parts) in [
            (
                &mut policies,
                [("q", w.quota.limit), ("w", w.quota.window.as_secs().max(1))],
            ),
            (
                &mut states,
                [
                    ("r", w.outcome.remaining()),
                    ("t", secs_ceil(w.outcome.reset_after)),
                ],
            ),
        ] {
            // `"policy";q=100;w=60` (an sf-string item with integer parameters).
            list.extend_from_slice(separator.as_bytes());
            list.push(b'"');
            list.extend_from_slice(policy.as_bytes());
            list.push(b'"');
            for (key, number) in parts {
                list.push(b';');
                list.extend_from_slice(key.as_bytes());
                list.push(b'=');
                list.extend_from_slice(numbers.format(number).as_bytes());
            }
        }
    }
    for (name, value) in [(RATELIMIT_POLICY, policies), (RATELIMIT, states)] {
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            out.insert(name, value);
        }
    }
}

/// Adds the cost budget's headers (GitHub-style points per window, `docs/rate-limiting.md`) to
/// `out`: `X-Cost-Budget-Limit`, `X-Cost-Budget-Remaining` and `X-Cost-Budget-Reset` (seconds).
pub fn add_budget_headers(out: &mut HeaderMap, budget: &Budget) {
    let reset = (budget.reset_at - chrono::Utc::now()).num_seconds().max(0);
    out.reserve(3);
    out.insert(X_COST_BUDGET_LIMIT, HeaderValue::from(budget.limit));
    out.insert(X_COST_BUDGET_REMAINING, HeaderValue::from(budget.remaining));
    out.insert(X_COST_BUDGET_RESET, HeaderValue::from(reset));
}

/// The refusal of a window that is used up.
pub fn limited(window: &Window) -> AppError {
    AppError::RateLimited {
        retry_after_secs: secs_ceil(window.outcome.retry_after).max(1),
    }
}

/// The 429 answer: the error shape with `extensions.retryAfter`, `Retry-After` and the pacing
/// headers.
pub fn limited_response(window: &Window) -> Response {
    let error = limited(window);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        &error.to_string(),
        Some(error.extensions()),
    );
    add_headers(response.headers_mut(), std::slice::from_ref(window));
    response
}

/// Failing closed while the store is unreachable.
pub fn unavailable() -> AppError {
    AppError::Unavailable(anyhow::anyhow!(
        "rate limiting is unavailable; retry shortly"
    ))
}
