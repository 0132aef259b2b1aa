//! Content negotiation (`Accept`): `application/graphql-response+json` or `application/json`.

use axum::http::{HeaderMap, HeaderValue, header};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const APPLICATION_JSON: &str = "application/json";

/// The response media type the client accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

/// Picks the media type from `Accept` by quality; a missing header, `*/*` and `application/*`
/// mean `application/json`. `None` when nothing we can produce is acceptable.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    // The field's lines read as one list, without joining them into a new string.
    let mut lines = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    let first = lines.next();
    if first.is_none_or(|line| line.trim().is_empty() && lines.peek().is_none()) {
        return Some(MediaType::Json);
    }
    let mut best: Option<(f32, u8, MediaType)> = None;
    for range in first
        .into_iter()
        .chain(lines)
        .flat_map(|line| line.split(','))
    {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        // Specific types win over wildcards at equal quality.
        let candidate = if media.eq_ignore_ascii_case(GRAPHQL_RESPONSE_JSON) {
            (3, MediaType::GraphqlResponseJson)
        } else if media.eq_ignore_ascii_case(APPLICATION_JSON) {
            (2, MediaType::Json)
        } else if media.eq_ignore_ascii_case("application/*") || media == "*/*" {
            (1, MediaType::Json)
        } else {
            continue;
        };
        if quality <= 0.0 {
            continue;
        }
        if best.is_none_or(|(q, s, _)| quality > q || (quality == q && candidate.0 > s)) {
            best = Some((quality, candidate.0, candidate.1));
        }
    }
    best.map(|(_, _, media)| media)
}

/// A request error before anything executed, in the negotiated media type (or JSON when the
/// failure is the negotiation itself).
#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_follows_quality_and_prefers_specific_types() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("text/html")), None);
        assert_eq!(negotiate(&accept("application/json;q=0")), None);
        assert_eq!(negotiate(&accept("  ")), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept("Application/GraphQL-Response+JSON")),
            Some(MediaType::GraphqlResponseJson)
        );
    }

    #[test]
    fn several_lines_are_one_list() {
        let mut headers = accept("text/html;q=0.9");
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0.5"),
        );
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/graphql-response+json;q=0.7"),
        );
        assert_eq!(negotiate(&headers), Some(MediaType::GraphqlResponseJson));
    }
}
