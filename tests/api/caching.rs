//! HTTP caching: Cache-Control from hints and defaults, ETags, 304s.

use serde_json::json;

use crate::helpers::{TestApp, header, read};

async fn get(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> reqwest::Response {
    app.get_query(query, token, if_none_match).await
}

#[tokio::test]
async fn a_query_gets_a_stable_etag_and_a_matching_revalidation_is_304() {
    let app = TestApp::spawn().await;
    let first = get(&app, "{ apiInfo { version } }", None, None).await;
    assert_eq!(first.status(), 200);
    let tag = header(first.headers(), "etag").to_owned();
    assert!(tag.starts_with('"') && tag.len() == 34, "{tag}");
    assert_eq!(
        header(first.headers(), "cache-control"),
        "public, max-age=60",
        "the field's hint"
    );
    assert_eq!(varies(first.headers()), ["Accept, Accept-Encoding"]);

    let second = get(&app, "{ apiInfo { version } }", None, None).await;
    assert_eq!(header(second.headers(), "etag"), tag);

    // Another instance (and so a restart) computes the same tag for the same bytes.
    let other = TestApp::spawn().await;
    let elsewhere = get(&other, "{ apiInfo { version } }", None, None).await;
    assert_eq!(header(elsewhere.headers(), "etag"), tag);

    for candidate in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"stale\", {tag}"),
        "*".to_owned(),
    ] {
        let revalidated = get(&app, "{ apiInfo { version } }", None, Some(&candidate)).await;
        assert_eq!(revalidated.status(), 304, "{candidate}");
        assert_eq!(header(revalidated.headers(), "etag"), tag);
        assert_eq!(
            header(revalidated.headers(), "cache-control"),
            "public, max-age=60"
        );
        // The same `Vary` as the 200 (RFC 9110 §15.4.5), compression's `Accept-Encoding`
        // included although a 304 has no body to compress.
        assert_eq!(varies(revalidated.headers()), varies(first.headers()));
        assert!(!header(revalidated.headers(), "x-request-id").is_empty());
        assert!(revalidated.bytes().await.unwrap().is_empty());
    }
    let changed = get(&app, "{ apiInfo { version } }", None, Some("\"stale\"")).await;
    assert_eq!(changed.status(), 200);

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"http_cache_total{result="hit"} 4"#),
        "{metrics}"
    );
    // Only conditional requests count: the two plain GETs do not, the stale tag does.
    assert!(
        metrics.contains(r#"http_cache_total{result="miss"} 1"#),
        "{metrics}"
    );
}

/// Every `Vary` line of a response.
fn varies(headers: &reqwest::header::HeaderMap) -> Vec<&str> {
    headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

#[tokio::test]
async fn a_compressed_response_and_its_304_vary_alike() {
    // A body large enough to compress, asked for with gzip: one `Vary` naming
    // `Accept-Encoding` once, and the revalidation (signed in, so answered from the response
    // cache) says the same. The tag of the compressed form is weak (RFC 9110 §8.8.3: a strong
    // tag is for one exact sequence of bytes), the 304's too, and the identity form keeps the
    // strong one. A POST with the tag gets its 412 error, not the compressed data. (Compressed
    // from 64 bytes here: the default minimum is 1 KiB.)
    let app = TestApp::spawn_with(|s| {
        s.http.compression = Some(multipult::config::CompressionSettings {
            min_size: 64,
            level: 4,
            cache_size: 1024 * 1024,
        });
    })
    .await;
    let session = app.signed_up("vary@example.com").await;
    let ask = |etag: Option<String>| {
        let mut request = app
            .client
            .get(app.url("/graphql"))
            .query(&[("query", "{ me { id email createdAt roles { name } } }")])
            .bearer_auth(&session.access)
            .header("accept-encoding", "gzip");
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    let full = ask(None).await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(header(full.headers(), "content-encoding"), "gzip");
    assert_eq!(
        varies(full.headers()),
        ["Accept, Accept-Encoding, Authorization, X-Api-Key"]
    );
    let tag = header(full.headers(), "etag").to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    let revalidated = ask(Some(tag.clone())).await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(revalidated.headers(), "etag"), tag);
    assert_eq!(varies(revalidated.headers()), varies(full.headers()));
    assert!(revalidated.headers().get("content-encoding").is_none());

    let identity = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { id email createdAt roles { name } } }")])
        .bearer_auth(&session.access)
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert!(identity.headers().get("content-encoding").is_none());
    assert_eq!(header(identity.headers(), "etag"), &tag[2..]);

    let failed = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&session.access)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &tag)
        .json(&serde_json::json!({ "query": "{ me { id email createdAt roles { name } } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 412);
    assert_eq!(header(failed.headers(), "etag"), tag);
    // Its own error body (compressed as any body from 64 bytes here), not the data.
    let gzipped = header(failed.headers(), "content-encoding") == "gzip";
    let mut body = failed.bytes().await.unwrap().to_vec();
    if gzipped {
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded)
            .unwrap();
        body = decoded;
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PRECONDITION_FAILED"
    );
    assert!(body.get("data").is_none(), "{body}");
}

#[tokio::test]
async fn a_post_whose_if_none_match_matches_is_412_not_304() {
    // RFC 9110 §13.1.2: a matching If-None-Match is answered with 304 for GET and HEAD only,
    // with 412 for every other method.
    let app = TestApp::spawn_with(|s| {
        s.graphql.anonymous_budget = Some(multipult::config::Quota {
            limit: 1000,
            window: std::time::Duration::from_secs(3600),
        });
    })
    .await;
    let tag = header(
        get(&app, "{ apiInfo { version } }", None, None)
            .await
            .headers(),
        "etag",
    )
    .to_owned();
    let post = |query: &'static str, condition: String| {
        app.client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .header("accept", "application/graphql-response+json")
            .header("if-none-match", condition)
            .json(&json!({ "query": query }))
            .send()
    };
    for condition in [tag.clone(), "*".to_owned()] {
        let failed = post("{ apiInfo { version } }", condition.clone())
            .await
            .unwrap();
        assert_eq!(failed.status(), 412, "{condition}");
        assert_eq!(header(failed.headers(), "etag"), tag);
        assert!(
            header(failed.headers(), "content-type")
                .starts_with("application/graphql-response+json")
        );
        let body: serde_json::Value = failed.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "PRECONDITION_FAILED"
        );
    }
    // Not cached yet: it executes, is charged, and `*` matches what it answered. What the
    // response carried besides its body stays (the cost budget it was charged).
    let executed = post("{ apiInfo { v: version } }", "*".to_owned())
        .await
        .unwrap();
    assert_eq!(executed.status(), 412);
    assert!(!header(executed.headers(), "x-cost-budget-remaining").is_empty());
    let other = post("{ apiInfo { version } }", "\"stale\"".to_owned())
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(header(other.headers(), "etag"), tag);
    // Nothing to match for a mutation (never cacheable): it runs.
    let mutation = post(
        "mutation { register(input: { email: \"p@example.com\", password: \"correct horse battery\" }) { message } }",
        "*".to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(mutation.status(), 200);
    // HEAD revalidates like GET.
    let head = app
        .client
        .head(app.url("/graphql"))
        .query(&[("query", "{ apiInfo { version } }")])
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 304);
}

#[tokio::test]
async fn configured_defaults_apply_and_cap_hints() {
    let app = TestApp::spawn_with(|s| s.cache.public_max_age = 30).await;
    let capped = get(&app, "{ apiInfo { version } }", None, None).await;
    assert_eq!(
        header(capped.headers(), "cache-control"),
        "public, max-age=30"
    );
    let unhinted = get(&app, "{ __typename }", None, None).await;
    assert_eq!(
        header(unhinted.headers(), "cache-control"),
        "public, max-age=30"
    );
}

#[tokio::test]
async fn authenticated_responses_are_private_and_vary_by_authorization() {
    let app = TestApp::spawn_with(|s| s.cache.private_max_age = 10).await;
    let session = app.signed_up("cached@example.com").await;
    let response = get(&app, "{ me { email } }", Some(&session.access), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "cache-control"),
        "private, max-age=10"
    );
    assert_eq!(
        varies(response.headers()),
        ["Accept, Accept-Encoding, Authorization, X-Api-Key"]
    );
    assert!(!header(response.headers(), "etag").is_empty());
}

#[tokio::test]
async fn mutations_errors_and_partial_errors_are_never_cacheable() {
    let app = TestApp::spawn_with(|s| s.cache.public_max_age = 60).await;
    let (_, headers, _) = app
        .graphql_as(None, "mutation { register(input: { email: \"c@example.com\", password: \"correct horse battery\" }) { message } }", json!({}))
        .await;
    assert_eq!(header(&headers, "cache-control"), "no-store");
    assert!(headers.get("etag").is_none());

    let failed = get(&app, "{ nope }", None, None).await;
    assert_eq!(header(failed.headers(), "cache-control"), "no-store");
    assert!(failed.headers().get("etag").is_none());

    // A field error (anonymous `me`) next to data: partial, so not cacheable.
    let partial = get(&app, "{ apiInfo { version } sessions { id } }", None, None).await;
    let headers = partial.headers().clone();
    let (_, _, body) = read(partial).await;
    assert!(body["errors"].is_array(), "{body}");
    assert_eq!(header(&headers, "cache-control"), "no-store");
    assert!(headers.get("etag").is_none());
}

#[tokio::test]
async fn a_response_is_only_as_cacheable_as_its_least_cacheable_field() {
    let app = TestApp::spawn().await;
    // `apiInfo` declares 60 s; `rateLimit` (this caller's budget) declares nothing, so the pair
    // is not cacheable for 60 s.
    let both = get(
        &app,
        "{ apiInfo { version } rateLimit { remaining } }",
        None,
        None,
    )
    .await;
    assert_eq!(both.status(), 200);
    assert_eq!(header(both.headers(), "cache-control"), "public, max-age=0");
    // However the unhinted field is reached: an alias, a fragment, an inline fragment.
    for query in [
        "{ apiInfo { version } r: rateLimit { remaining } }",
        "{ apiInfo { version } ...F } fragment F on QueryRoot { rateLimit { remaining } }",
        "{ apiInfo { version } ... on QueryRoot { rateLimit { remaining } } }",
    ] {
        let response = get(&app, query, None, None).await;
        assert_eq!(
            header(response.headers(), "cache-control"),
            "public, max-age=0",
            "{query}"
        );
    }
    // The hinted field alone keeps its hint.
    let alone = get(&app, "{ apiInfo { version } }", None, None).await;
    assert_eq!(
        header(alone.headers(), "cache-control"),
        "public, max-age=60"
    );

    // Signed in: a field that opts out makes the whole response `no-cache`, and an unhinted one
    // (`sessions`) keeps it from the server's cache.
    let session = app.signed_up("stale@example.com").await;
    let opted_out = get(
        &app,
        "{ me { twoFactorEnabled } }",
        Some(&session.access),
        None,
    )
    .await;
    assert_eq!(
        header(opted_out.headers(), "cache-control"),
        "private, no-cache"
    );
}

#[tokio::test]
async fn signed_in_browsers_revalidate_by_default_so_they_never_show_a_stale_me() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("browser@example.com").await;
    let first = get(&app, "{ me { displayName } }", Some(&session.access), None).await;
    assert_eq!(
        header(first.headers(), "cache-control"),
        "private, max-age=0"
    );
    let tag = header(first.headers(), "etag").to_owned();
    // Unchanged: revalidation is a 304.
    let revalidated = get(
        &app,
        "{ me { displayName } }",
        Some(&session.access),
        Some(&tag),
    )
    .await;
    assert_eq!(revalidated.status(), 304);
    // After `updateProfile` the same tag no longer matches: the browser gets the new name.
    let (_, _, body) = app
        .graphql_as(
            Some(&session.access),
            "mutation { updateProfile(input: { displayName: \"Renamed\" }) { displayName } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["displayName"], "Renamed",
        "{body}"
    );
    let after = get(
        &app,
        "{ me { displayName } }",
        Some(&session.access),
        Some(&tag),
    )
    .await;
    assert_eq!(after.status(), 200);
    let (_, _, body) = read(after).await;
    assert_eq!(body["data"]["me"]["displayName"], "Renamed");
}
