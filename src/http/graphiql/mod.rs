//! GraphiQL served from the binary: no CDN, no third-party request, so the page works on a
//! machine without internet and leaks nothing about who explores the API.
//!
//! The vendored files in `assets/` are byte-for-byte the npm packages named in
//! `assets/README.md` (pinned versions, checked against their published hashes by a test below).
//! Every asset is addressed by its content hash (`/graphiql/<hash>/<name>`), so it is cached
//! for a year (`immutable`) and a new build never serves a stale one; the page pins each with
//! Subresource Integrity and answers with a Content-Security-Policy that allows only itself.
//! The page's own script (`init.js`) is a separate file because the policy forbids inline
//! script. It reads `#query=…&variables=…` from the URL and keeps it there as you type, so a
//! link opens a ready query.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha384};

use super::HttpState;

/// Where the assets are served; the page refers to them relative to `/graphql`.
pub const ASSET_PREFIX: &str = "/graphiql/";

/// Only the page itself, same-origin fetches and WebSocket (CSP 3: `'self'` covers `ws:`/`wss:`
/// on the same host), fonts and images inlined in GraphiQL's stylesheet as `data:` URLs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Source {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// A file of `assets/`, embedded at build time.
macro_rules! source {
    ($name:literal, $content_type:expr) => {
        Source {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

/// In page order: stylesheets, then scripts in the order they must run.
const SOURCES: [Source; 6] = [
    source!("graphiql.min.css", CSS),
    source!("page.css", CSS),
    source!("react.production.min.js", JS),
    source!("react-dom.production.min.js", JS),
    source!("graphiql.min.js", JS),
    source!("init.js", JS),
];

/// An asset with what the page needs to refer to it.
struct Asset {
    source: &'static Source,
    /// `sha384-<base64>`, the page's `integrity` attribute.
    integrity: String,
    /// The first 16 hex digits of the same digest: the path segment that versions the URL.
    version: String,
}

impl Asset {
    fn href(&self) -> String {
        // Relative to the page at `/graphql`, so a deployment under a path prefix works as is.
        format!(
            "{}{}/{}",
            ASSET_PREFIX.trim_start_matches('/'),
            self.version,
            self.source.name
        )
    }
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|source| {
            let digest = Sha384::digest(source.bytes);
            Asset {
                source,
                integrity: format!(
                    "sha384-{}",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                ),
                version: hex::encode(&digest[..8]),
            }
        })
        .collect()
});

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let mut head = String::new();
    let mut body = String::new();
    for asset in ASSETS.iter() {
        if asset.source.name.ends_with(".css") {
            head.push_str(&format!(
                "    <link rel=\"stylesheet\" href=\"{}\" integrity=\"{}\" crossorigin=\"anonymous\">\n",
                asset.href(),
                asset.integrity
            ));
        } else {
            // `defer` keeps document order: React, ReactDOM, GraphiQL, then init.js.
            body.push_str(&format!(
                "    <script defer src=\"{}\" integrity=\"{}\" crossorigin=\"anonymous\"></script>\n",
                asset.href(),
                asset.integrity
            ));
        }
    }
    format!(
        "<!doctype html>\n<html lang=\"en\">\n  <head>\n    <meta charset=\"utf-8\">\n    \
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n    \
         <meta name=\"referrer\" content=\"no-referrer\">\n    <title>multipult GraphiQL</title>\n\
         {head}  </head>\n  <body>\n    <div id=\"graphiql\">Loading GraphiQL…</div>\n\
         {body}  </body>\n</html>\n"
    )
});

/// The page, with headers that keep it to itself; compressed as `request` asks (once, then kept).
pub fn page(state: &HttpState, request: &HeaderMap) -> Response {
    let body = Bytes::from_static(PAGE.as_bytes());
    let mut response = Html(body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    state
        .compression
        .compress(request, &body, response, true, &state.app.metrics)
}

/// `GET /graphiql/{version}/{name}`: an asset of the current build; anything else is 404.
pub async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    let Some(asset) = ASSETS
        .iter()
        .find(|asset| asset.source.name == name && asset.version == version)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.source.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.source.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files are exactly what npm published for the pinned versions
    /// (`assets/README.md` says how these digests were taken and how to update them).
    #[test]
    fn vendored_files_are_the_pinned_npm_releases() {
        let pinned = [
            (
                "graphiql.min.css",
                "sha384-QMux00XgRtwRLSYIY3kw2rj1ovk5AuuliAchk+HSQbqdbGFnz9GYuqIlOqxhwCE2",
            ),
            (
                "graphiql.min.js",
                "sha384-8NGfVj4CVlqHajlZj+bPJT4thxPMHMJYn7DWK2CvtopLd02E7qsPHazniBYvVjOO",
            ),
            (
                "react-dom.production.min.js",
                "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
            ),
            (
                "react.production.min.js",
                "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
            ),
        ];
        for (name, integrity) in pinned {
            let asset = ASSETS.iter().find(|a| a.source.name == name).unwrap();
            assert_eq!(
                asset.integrity, integrity,
                "{name} differs from the npm release"
            );
        }
    }

    #[test]
    fn the_page_refers_to_every_asset_in_order_and_nothing_outside() {
        let page = PAGE.as_str();
        let mut last = 0;
        for asset in ASSETS.iter() {
            let at = page
                .find(&asset.href())
                .expect("asset missing from the page");
            assert!(page.contains(&asset.integrity));
            if asset.source.name.ends_with(".js") {
                assert!(at > last, "{} out of order", asset.source.name);
                last = at;
            }
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(
            !page.contains("<script>"),
            "inline script is forbidden by the policy"
        );
    }
}
