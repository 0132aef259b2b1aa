//! HTTP caching of query responses: `Cache-Control` from the schema's cache hints (or the
//! configured defaults), a strong `ETag` over the response bytes (a fast hash, the same on every
//! instance and after a restart), and `304 Not Modified` for a matching `If-None-Match`.
//! Mutations, subscriptions and responses with errors are `no-store` and get no `ETag`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use crate::config::CacheSettings;
use crate::error::ErrorCode;
use crate::graphql::CachePolicy;
use crate::infra::metrics::Metrics;

/// What decides a response's caching.
pub struct Cacheable {
    /// From the schema's hints (`crate::graphql::cache_policy`).
    pub policy: CachePolicy,
    pub authenticated: bool,
    /// The body's tag when already known (an answer from the response cache).
    pub etag: Option<String>,
}

pub fn etag(body: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body))
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal to ours ignoring `W/`.
pub fn if_none_match_matches(request: &HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

fn cache_control_value(cacheable: &Cacheable, settings: &CacheSettings) -> String {
    let policy = cacheable.policy;
    let private = cacheable.authenticated || policy.private;
    // Fields without a hint get the configured default (0 unless set).
    let default = if cacheable.authenticated {
        settings.private_max_age
    } else {
        settings.public_max_age
    };
    let scope = if private { "private" } else { "public" };
    // A signed-in caller's browser keeps a response at most `CACHE_PRIVATE_MAX_AGE` (0: it
    // revalidates every time, answered with 304 from the response cache): the browser cannot
    // see the changes that make the server drop its copy.
    let max_age = policy.max_age(default).map(|age| {
        if cacheable.authenticated {
            age.min(settings.private_max_age)
        } else {
            age
        }
    });
    match max_age {
        Some(max_age) => format!("{scope}, max-age={max_age}"),
        None => format!("{scope}, no-cache"),
    }
}

/// Adds caching headers to a finished response, or answers 304 — for a GET or HEAD
/// (`revalidates`); a POST whose `If-None-Match` matches gets 412 instead, as RFC 9110 §13.1.2
/// requires of every other method.
pub fn apply(
    response: Response,
    body: &[u8],
    cacheable: Option<Cacheable>,
    settings: &CacheSettings,
    request: &HeaderMap,
    revalidates: bool,
    metrics: &Metrics,
) -> Response {
    let mut response = response;
    let Some(cacheable) = cacheable.filter(|_| response.status() == StatusCode::OK) else {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    };
    let tag = cacheable.etag.clone().unwrap_or_else(|| etag(body));
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache_control_value(&cacheable, settings)) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    // `Accept-Encoding` too, on every cacheable response: the compression layer adds it only to
    // the bodies it would compress, so a 304 (no body) lost it, and a cache that refreshes its
    // stored headers from the 304 (RFC 9111 §4.3.4) would have kept a gzip body without it. RFC
    // 9110 §15.4.5: a 304 carries the `Vary` the 200 would have (the layer sees it and adds
    // nothing).
    headers.insert(
        header::VARY,
        HeaderValue::from_static(if cacheable.authenticated {
            "Accept, Accept-Encoding, Authorization, X-Api-Key"
        } else {
            "Accept, Accept-Encoding"
        }),
    );
    let hit = if_none_match_matches(request, &tag);
    // Revalidations only: a GET or HEAD that asked with If-None-Match.
    if revalidates && request.contains_key(header::IF_NONE_MATCH) {
        metrics.count(
            "http_cache_total",
            "result",
            if hit { "hit" } else { "miss" },
        );
    }
    if hit {
        let mut answer = if revalidates {
            let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
            not_modified.headers_mut().extend(headers);
            not_modified
        } else {
            let mut failed = crate::error::error_response(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::PreconditionFailed,
                "If-None-Match matches the current response; only GET and HEAD are answered with 304",
                None,
            );
            if let Some(tag) = headers.remove(header::ETAG) {
                failed.headers_mut().insert(header::ETAG, tag);
            }
            failed
        };
        // Keep the budget and request-id headers the response had, and for a 412 the
        // negotiated content type of its body (a 304 has none).
        for (name, value) in response.headers() {
            let keep = if name == header::CONTENT_TYPE {
                !revalidates
            } else {
                name != header::CONTENT_LENGTH && !answer.headers().contains_key(name)
            };
            if keep {
                answer.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return answer;
    }
    response.headers_mut().extend(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_handles_lists_stars_and_weak_tags() {
        let tag = etag(b"{\"data\":{}}");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", W/{tag}")).unwrap(),
        );
        assert!(if_none_match_matches(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match_matches(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"nope\""));
        assert!(!if_none_match_matches(&headers, &tag));
        assert_eq!(etag(b"same"), etag(b"same"));
        assert_ne!(etag(b"same"), etag(b"different"));
    }
}
