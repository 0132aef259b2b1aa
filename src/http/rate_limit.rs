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

/// What a request path means for its rate limit, decided before the request runs (it borrows
/// the settings, not the request).
#[derive(Debug, Clone, Copy)]
pub enum PathLimit<'a> {
    /// Probes, scrapes, GraphiQL's assets: never counted.
    Exempt,
    /// The principal's default quota.
    Default,
    /// A `RATE_LIMIT_RULES` path rule: its prefix and quota.
    Rule(&'a str, Quota),
}

impl<'a> PathLimit<'a> {
    pub fn of(app: &'a AppState, path: &str) -> Self {
        if exempt(path) {
            return Self::Exempt;
        }
        app.settings
            .rate_limit
            .rules
            .iter()
            .find_map(|(target, quota)| match target {
                RuleTarget::Path(prefix) if path.starts_with(prefix.as_str()) => {
                    Some(Self::Rule(prefix.as_str(), *quota))
                }
                _ => None,
            })
            .unwrap_or(Self::Default)
    }
}

/// The principal for an HTTP request whose path gave `limit`: a matching path rule replaces the
/// default quota.
pub fn principal_for_path(
    app: &AppState,
    limit: PathLimit<'_>,
    client: &ClientInfo,
    subject: Subject<'_>,
) -> Option<Principal> {
    let (prefix, quota) = match limit {
        PathLimit::Exempt => return None,
        PathLimit::Default => return principal(app, client, subject),
        PathLimit::Rule(prefix, quota) => (prefix, quota),
    };
    let principal = principal(app, client, subject)?;
    Some(Principal {
        key: format!("path:{prefix}:{}", principal.key),
        quota,
        policy: Cow::Owned(format!("path:{prefix}")),
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
    // One window (the default policy alone) is the common case: nothing to order.
    let one: [&Window; 1];
    let many: Vec<&Window>;
    let ordered: &[&Window] = match windows {
        [] => return,
        [only] => {
            one = [only];
            &one
        }
        _ => {
            let mut distinct: Vec<&Window> = Vec::with_capacity(windows.len());
            for window in windows {
                // One entry per policy: the last count wins (a batch may count a rule twice).
                if let Some(slot) = distinct.iter_mut().find(|w| w.policy == window.policy) {
                    *slot = window;
                } else {
                    distinct.push(window);
                }
            }
            distinct.sort_by_key(|w| (w.outcome.allowed, w.outcome.remaining()));
            many = distinct;
            &many
        }
    };
    let decisive = ordered[0];
    // All five values written into one buffer, each header a slice of it: two allocations
    // (the buffer, and its sharing once sliced) instead of one or two per value.
    let mut text = Vec::with_capacity(64 + 64 * ordered.len());
    let mut numbers = itoa::Buffer::new();
    let limit = push(&mut text, numbers.format(decisive.quota.limit));
    let remaining = push(&mut text, numbers.format(decisive.outcome.remaining()));
    let reset = push(
        &mut text,
        numbers.format(secs_ceil(decisive.outcome.reset_after)),
    );
    // `"policy";q=100;w=60` and `"policy";r=99;t=60`: sf-string items with integer parameters.
    let list = |text: &mut Vec<u8>, keys: [&str; 2], values: fn(&Window) -> [u64; 2]| {
        let start = text.len();
        for (index, w) in ordered.iter().enumerate() {
            if index > 0 {
                text.extend_from_slice(b", ");
            }
            text.push(b'"');
            text.extend_from_slice(w.policy.as_bytes());
            text.push(b'"');
            for (key, value) in keys.into_iter().zip(values(w)) {
                text.push(b';');
                text.extend_from_slice(key.as_bytes());
                text.push(b'=');
                text.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
            }
        }
        start..text.len()
    };
    let policies = list(&mut text, ["q", "w"], |w| {
        [w.quota.limit, w.quota.window.as_secs().max(1)]
    });
    let states = list(&mut text, ["r", "t"], |w| {
        [w.outcome.remaining(), secs_ceil(w.outcome.reset_after)]
    });
    // Digits, quotes and policy names from configuration: always valid header text.
    insert_sliced(
        out,
        text,
        [
            (X_RATELIMIT_LIMIT, limit),
            (X_RATELIMIT_REMAINING, remaining),
            (X_RATELIMIT_RESET, reset),
            (RATELIMIT_POLICY, policies),
            (RATELIMIT, states),
        ],
    );
}

/// Appends `part` to `text`; where it is.
fn push(text: &mut Vec<u8>, part: &str) -> std::ops::Range<usize> {
    let start = text.len();
    text.extend_from_slice(part.as_bytes());
    start..text.len()
}

/// Inserts each header with its value a slice of `text` (one buffer shared by them all, not an
/// allocation per value). A slice that is not valid header text is left out.
fn insert_sliced<const N: usize>(
    out: &mut HeaderMap,
    text: Vec<u8>,
    headers: [(HeaderName, std::ops::Range<usize>); N],
) {
    let text = bytes::Bytes::from(text);
    out.reserve(N);
    for (name, range) in headers {
        if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(range)) {
            out.insert(name, value);
        }
    }
}

/// Adds the cost budget's headers (GitHub-style points per window, `docs/rate-limiting.md`) to
/// `out`: `X-Cost-Budget-Limit`, `X-Cost-Budget-Remaining` and `X-Cost-Budget-Reset` (seconds).
pub fn add_budget_headers(out: &mut HeaderMap, budget: &Budget) {
    let reset = (budget.reset_at - chrono::Utc::now()).num_seconds().max(0);
    // The three numbers in one buffer, each header a slice of it (one allocation, not three).
    let mut text = Vec::with_capacity(64);
    let mut numbers = itoa::Buffer::new();
    let limit = push(&mut text, numbers.format(budget.limit));
    let remaining = push(&mut text, numbers.format(budget.remaining));
    let reset = push(&mut text, numbers.format(reset));
    insert_sliced(
        out,
        text,
        [
            (X_COST_BUDGET_LIMIT, limit),
            (X_COST_BUDGET_REMAINING, remaining),
            (X_COST_BUDGET_RESET, reset),
        ],
    );
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::infra::WindowOutcome;

    fn window(policy: &'static str, limit: u64, count: u64, allowed: bool) -> Window {
        Window {
            policy: Cow::Borrowed(policy),
            quota: Quota {
                limit,
                window: Duration::from_secs(60),
            },
            outcome: WindowOutcome {
                allowed,
                count,
                limit,
                retry_after: Duration::ZERO,
                reset_after: Duration::from_millis(41_200),
            },
        }
    }

    fn headers(windows: &[Window]) -> Vec<(String, String)> {
        let mut out = HeaderMap::new();
        add_headers(&mut out, windows);
        let mut pairs: Vec<_> = out
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn one_window_gives_the_five_pacing_headers() {
        let expected = [
            ("ratelimit", "\"user\";r=93;t=42"),
            ("ratelimit-policy", "\"user\";q=100;w=60"),
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "93"),
            ("x-ratelimit-reset", "42"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(headers(&[window("user", 100, 7, true)]), expected);
        assert!(headers(&[]).is_empty());
    }

    #[test]
    fn several_windows_list_the_decisive_one_first() {
        let got = headers(&[
            window("user", 100, 7, true),
            window("login", 5, 5, false),
            window("user", 100, 8, true),
        ]);
        let value = |name: &str| &got.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(
            value("ratelimit-policy"),
            "\"login\";q=5;w=60, \"user\";q=100;w=60"
        );
        assert_eq!(value("ratelimit"), "\"login\";r=0;t=42, \"user\";r=92;t=42");
        assert_eq!(value("x-ratelimit-limit"), "5");
        assert_eq!(value("x-ratelimit-remaining"), "0");
    }
}
