//! HTTP caching of query responses: `Cache-Control` from the schema's cache hints (or the
//! configured defaults), a strong `ETag` over the response bytes (a fast hash, the same on every
//! instance and after a restart), and `304 Not Modified` for a matching `If-None-Match`.
//! Mutations, subscriptions and responses with errors are `no-store` and get no `ETag`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

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
    let digits = hex128(xxhash_rust::xxh3::xxh3_128(body));
    let mut tag = String::with_capacity(34);
    tag.push('"');
    tag.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    tag.push('"');
    tag
}

/// `hash` as 32 lowercase hex digits, as `{:032x}` writes it (without the formatting machinery:
/// tags and cache keys are made on every request).
pub fn hex128(hash: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (index, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((hash >> (124 - 4 * index)) & 0xf) as usize];
    }
    out
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal to ours ignoring `W/`.
pub fn if_none_match_matches(request: &HeaderMap, etag: &str) -> bool {
    // The usual case first: the one tag this server sent, sent back as it was.
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes())
    {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// `private, max-age=60` or `public, no-cache`, written straight into the header's bytes.
fn cache_control_value(
    policy: CachePolicy,
    authenticated: bool,
    settings: &CacheSettings,
) -> HeaderValue {
    let private = authenticated || policy.private;
    // Fields without a hint get the configured default (0 unless set).
    let default = if authenticated {
        settings.private_max_age
    } else {
        settings.public_max_age
    };
    // A signed-in caller's browser keeps a response at most `CACHE_PRIVATE_MAX_AGE` (0: it
    // revalidates every time, answered with 304 from the response cache): the browser cannot
    // see the changes that make the server drop its copy.
    let max_age = policy.max_age(default).map(|age| {
        if authenticated {
            age.min(settings.private_max_age)
        } else {
            age
        }
    });
    let mut value = Vec::with_capacity(32);
    value.extend_from_slice(if private { b"private" } else { b"public" });
    match max_age {
        Some(max_age) => {
            value.extend_from_slice(b", max-age=");
            value.extend_from_slice(itoa::Buffer::new().format(max_age).as_bytes());
        }
        None => value.extend_from_slice(b", no-cache"),
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// Adds `ETag`, `Cache-Control` and `Vary` to a response that may be cached, and answers a
/// matching `If-None-Match` in its place: 304 for a GET or HEAD (`revalidates`), else 412.
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
    let Cacheable {
        policy,
        authenticated,
        etag: tag,
    } = cacheable;
    let tag = tag.unwrap_or_else(|| etag(body));
    let cache_control = cache_control_value(policy, authenticated, settings);
    // `Accept-Encoding` too, on every cacheable response: the compression layer adds it only to
    // the bodies it would compress, so a 304 (no body) lost it, and a cache that refreshes its
    // stored headers from the 304 (RFC 9111 §4.3.4) would have kept a gzip body without it. RFC
    // 9110 §15.4.5: a 304 carries the `Vary` the 200 would have (the layer sees it and adds
    // nothing).
    let vary = HeaderValue::from_static(if authenticated {
        "Accept, Accept-Encoding, Authorization, X-Api-Key"
    } else {
        "Accept, Accept-Encoding"
    });
    let hit = if_none_match_matches(request, &tag);
    // The tag's own bytes become the header's (no copy).
    let etag_value = HeaderValue::try_from(tag).ok();
    // Revalidations only: a GET or HEAD that asked with If-None-Match.
    if revalidates && request.contains_key(header::IF_NONE_MATCH) {
        metrics.count(
            "http_cache_total",
            "result",
            if hit { "hit" } else { "miss" },
        );
    }
    if hit && !revalidates {
        let mut failed = crate::error::error_response(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::PreconditionFailed,
            "If-None-Match matches the current response; only GET and HEAD are answered with 304",
            None,
        );
        // Keep the budget and request-id headers the response had, and the negotiated content
        // type of its body.
        for (name, value) in response.headers() {
            let keep = name == header::CONTENT_TYPE
                || (name != header::CONTENT_LENGTH && !failed.headers().contains_key(name));
            if keep {
                failed.headers_mut().insert(name.clone(), value.clone());
            }
        }
        if let Some(tag) = etag_value {
            failed.headers_mut().insert(header::ETAG, tag);
        }
        return failed;
    }
    if hit {
        // The response's own head (budget and request-id headers, extensions) without its
        // body and what describes the body.
        let (mut parts, _body) = response.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, axum::body::Body::empty());
    }
    let headers = response.headers_mut();
    if let Some(value) = etag_value {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(header::VARY, vary);
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

    #[test]
    fn an_etag_is_the_quoted_128_bit_hash_in_hex() {
        // Tags are compared across instances and releases: their form must not drift.
        for body in [&b""[..], b"{\"data\":{}}", &[0xff; 300]] {
            let hash = xxhash_rust::xxh3::xxh3_128(body);
            assert_eq!(etag(body), format!("\"{hash:032x}\""));
        }
        for hash in [0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(hex128(hash), format!("{hash:032x}").as_bytes());
        }
    }
}
