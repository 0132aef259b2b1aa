//! The request pipeline: GraphQL over POST and GET, request ids, error shape, body limit.

use serde_json::json;

use crate::helpers::{TestApp, header, read};

#[tokio::test]
async fn typename_and_api_info_answer_over_post_and_get() {
    let app = TestApp::spawn().await;

    let (status, _, body) = app
        .post_graphql("{ __typename apiInfo { version environment } }", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["__typename"], "QueryRoot");
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(body["data"]["apiInfo"]["environment"], "TEST");
    assert!(body.get("errors").is_none());

    let (status, headers, body) = app
        .get_graphql(&[("query", "{ apiInfo { version } }")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        header(&headers, "content-type"),
        "application/json; charset=utf-8"
    );
}

#[tokio::test]
async fn responses_carry_a_generated_uuid_v7_request_id() {
    let app = TestApp::spawn().await;
    let (_, headers, _) = app.post_graphql("{ __typename }", json!({})).await;
    let id = header(&headers, "x-request-id");
    let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 7);
}

#[tokio::test]
async fn a_valid_incoming_request_id_is_echoed() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-request-id", "client-abc_123.XYZ")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "x-request-id"),
        "client-abc_123.XYZ"
    );
}

#[tokio::test]
async fn invalid_incoming_request_ids_are_replaced() {
    let app = TestApp::spawn().await;
    for bad in [
        "a".repeat(300),
        "has space".to_owned(),
        "tab\there".to_owned(),
        "semi;colon".to_owned(),
    ] {
        let response = app
            .client
            .get(app.url("/health/live"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = header(response.headers(), "x-request-id");
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?} replaced {bad:?}");
    }
}

#[tokio::test]
async fn a_request_id_with_a_newline_never_reaches_the_response() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    // A bare LF ends the header line (RFC 9112): whatever follows must not become a header of
    // the response, and only the sane part before it can be echoed.
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Request-ID: evil\ninjected: 1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(!text.contains("injected"), "{text}");
    let echoed = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_default();
    assert!(
        multipult::http::request_id::is_valid(echoed.trim()),
        "{text}"
    );
}

#[tokio::test]
async fn a_mutation_over_get_is_refused_with_405() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = app
        .get_graphql(&[("query", "mutation { __typename }")])
        .await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), "POST");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "METHOD_NOT_ALLOWED"
    );
    assert!(body.get("data").is_none());
}

#[tokio::test]
async fn malformed_json_is_a_400_with_a_code() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert_eq!(
        body["errors"][0]["extensions"]["requestId"],
        header(&headers, "x-request-id")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_the_error_shape() {
    let app = TestApp::spawn_with(|s| s.http.body_limit = 1024).await;
    let query = format!("{{ __typename }} # {}", "x".repeat(4096));
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, 413);
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(
        body["errors"][0]["extensions"]["requestId"],
        header(&headers, "x-request-id")
    );
}

/// A body without `Content-Length` (chunked) is stopped at the limit as well: 413 in the error
/// shape.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413_too() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn_with(|s| s.http.body_limit = 1024).await;
    let body = format!("{{\"query\":\"{{ __typename }} # {}\"}}", "x".repeat(4096));
    let mut request = b"POST /graphql HTTP/1.1\r\nHost: localhost\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    for chunk in body.as_bytes().chunks(512) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"PAYLOAD_TOO_LARGE\""), "{answer}");
}

#[tokio::test]
async fn every_graphql_error_carries_the_request_id_of_the_response() {
    let app = TestApp::spawn().await;
    let cases = [
        "{ nope }",                                // validation
        "{ apiInfo { version ",                    // parse
        "subscription { heartbeat { sequence } }", // wrong transport
    ];
    for query in cases {
        let (_, headers, body) = app.post_graphql(query, json!({})).await;
        let id = header(&headers, "x-request-id");
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {body}"));
        assert!(!errors.is_empty());
        for error in errors {
            assert_eq!(error["extensions"]["requestId"], id, "{query}: {body}");
            assert!(error["extensions"]["code"].is_string(), "{query}: {body}");
        }
    }
}

#[tokio::test]
async fn an_unknown_route_answers_404_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let (status, headers, body) =
        read(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(
        body["errors"][0]["extensions"]["requestId"],
        header(&headers, "x-request-id")
    );
}

#[tokio::test]
async fn graphiql_is_served_to_browsers_outside_production_only() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    let csp = header(response.headers(), "content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self';"));
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    let page = response.text().await.unwrap();

    // Every asset comes from the binary, pinned by Subresource Integrity and cached for good.
    let mut assets = Vec::new();
    for tag in page.split('<').filter(|tag| tag.contains("integrity=")) {
        let attribute = |name: &str| {
            let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            tag[start..start + tag[start..].find('"').unwrap()].to_owned()
        };
        let href = attribute(if tag.starts_with("link") {
            "href"
        } else {
            "src"
        });
        assets.push((href, attribute("integrity")));
    }
    assert_eq!(assets.len(), 6, "{page}");
    assert!(!page.contains("https://") && !page.contains("<script>"));
    for (href, integrity) in &assets {
        assert!(href.starts_with("graphiql/"), "{href}");
        let response = app
            .client
            .get(app.url(&format!("/{href}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{href}");
        assert_eq!(
            header(response.headers(), "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            header(response.headers(), "x-content-type-options"),
            "nosniff"
        );
        let kind = header(response.headers(), "content-type");
        assert!(kind.starts_with(if href.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        }));
        let body = response.bytes().await.unwrap();
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(&body));
        assert_eq!(*integrity, format!("sha384-{digest}"), "{href}");
    }
    // Another build's (or a made-up) version of an asset is not served.
    let (href, _) = &assets[0];
    let name = href.rsplit('/').next().unwrap();
    let stale = app
        .client
        .get(app.url(&format!("/graphiql/0000000000000000/{name}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);

    // Without GraphiQL, a browser asking for HTML only gets "not acceptable".
    let app = TestApp::spawn_with(|s| s.graphql.graphiql = false).await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    let asset = app
        .client
        .get(app.url(&format!("/{}", assets[0].0)))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 404);
}

#[tokio::test]
async fn introspection_can_be_disabled() {
    let query = "{ __schema { queryType { name } } }";
    let app = TestApp::spawn().await;
    let (_, _, body) = app.post_graphql(query, json!({})).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot");

    let app = TestApp::spawn_with(|s| s.graphql.introspection = false).await;
    let (_, _, body) = app.post_graphql(query, json!({})).await;
    assert!(body["data"]["__schema"].is_null(), "{body}");
}

#[tokio::test]
async fn a_query_deeper_than_the_limit_is_refused() {
    let app = TestApp::spawn_with(|s| s.graphql.max_depth = 3).await;
    let (_, _, body) = app
        .post_graphql(
            "{ __schema { types { fields { type { name } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{body}"
    );
    assert!(body.get("data").is_none());
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app =
        TestApp::spawn_with(|s| s.http.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        header(allowed.headers(), "access-control-allow-origin"),
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// The kernel's count of connections dropped because a listener's accept queue was full.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
}

/// A burst of clients (sockets reconnecting after a deploy) is queued, not dropped: the
/// listener asks for `HTTP_LISTEN_BACKLOG` (4096) rather than the standard library's 128, whose
/// overflow costs every dropped client a SYN retransmit of a second or more.
#[tokio::test]
async fn a_burst_of_connections_overflows_no_accept_queue() {
    // Linux only: elsewhere the kernel does not count overflows where we can read them.
    let Some(before) = listen_overflows() else {
        return;
    };
    let app = TestApp::spawn().await;
    let address = format!("127.0.0.1:{}", app.port);
    // All at once, before the accept loop (on this test's runtime) runs again.
    let connects = (0..300).map(|_| tokio::net::TcpStream::connect(address.as_str()));
    let streams = futures_util::future::join_all(connects).await;
    assert!(streams.iter().all(Result::is_ok));
    let after = listen_overflows().unwrap_or(before);
    assert_eq!(
        after - before,
        0,
        "connections dropped by a full accept queue"
    );
    drop(streams);
    let (status, _, _) = app.post_graphql("{ __typename }", json!({})).await;
    assert_eq!(status, 200);
}

/// Compression: a small body goes as it is, with its length, whatever the client accepts (a
/// browser asks for gzip, br and zstd on every request); a body past `HTTP_COMPRESSION_MIN_SIZE`
/// goes in the coding the client prefers and decodes to the same bytes; with compression off,
/// nothing is compressed.
#[tokio::test]
async fn only_bodies_past_the_minimum_size_are_compressed() {
    use std::io::Read as _;
    const BROWSER: &str = "gzip, deflate, br, zstd";
    let large = large_query();
    let on = TestApp::spawn().await;
    let off = TestApp::spawn_with(|s| s.http.compression = None).await;
    let post = |app: &TestApp, query: &str, encoding: &str| {
        app.client
            .post(app.url("/graphql"))
            .header("accept-encoding", encoding)
            .json(&json!({ "query": query }))
            .send()
    };

    let small = post(&on, "{ apiInfo { version } }", BROWSER).await.unwrap();
    assert_eq!(small.status(), 200);
    assert!(small.headers().get("content-encoding").is_none());
    let length = header(small.headers(), "content-length").parse::<usize>();
    let body = small.bytes().await.unwrap();
    assert_eq!(length, Ok(body.len()));
    assert!(body.len() < 1024, "{} bytes", body.len());

    let plain = post(&on, &large, "identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() >= 1024, "{}", String::from_utf8_lossy(&plain));
    let data: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(data["data"]["a19"]["version"], env!("CARGO_PKG_VERSION"));

    let gzip = post(&on, &large, "gzip").await.unwrap();
    assert_eq!(header(gzip.headers(), "content-encoding"), "gzip");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gzip.bytes().await.unwrap()[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);

    // Twice: the second is the kept compression of the same body.
    for _ in 0..2 {
        let brotli = post(&on, &large, BROWSER).await.unwrap();
        assert_eq!(header(brotli.headers(), "content-encoding"), "br");
        assert!(header(brotli.headers(), "vary").contains("Accept-Encoding"));
        let compressed = brotli.bytes().await.unwrap();
        assert!(
            compressed.len() < plain.len() / 2,
            "{} bytes",
            compressed.len()
        );
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&compressed[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, plain);
    }

    // Compressed twice (gzip, then brotli), the second brotli answer kept from the first.
    let metrics = on.metrics_text().await;
    for (result, count) in [("compressed", 2), ("kept", 1)] {
        let line = format!("http_compression_total{{result=\"{result}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    let uncompressed = post(&off, &large, BROWSER).await.unwrap();
    assert!(uncompressed.headers().get("content-encoding").is_none());
    assert_eq!(uncompressed.bytes().await.unwrap(), plain);
}

/// The other routes (here `/metrics`) are compressed by the layer, as tower-http decides: the
/// coding the client prefers, with `Vary`; the identity body, with `Vary`, for a client that
/// sends no `Accept-Encoding`; and 406 for a client that refuses the identity coding when
/// nothing else is offered — which `/graphql`, without that layer, answers alike, in its error
/// shape.
#[tokio::test]
async fn the_compression_layer_compresses_other_routes_and_refuses_an_unmet_encoding() {
    use std::io::Read as _;
    let app = TestApp::spawn().await;
    // Requests first, so that `/metrics` has a body past the minimum size.
    for _ in 0..3 {
        app.post_graphql("{ apiInfo { version } }", json!({})).await;
    }
    let metrics = |encoding: Option<&'static str>| {
        let request = app.client.get(app.url("/metrics"));
        match encoding {
            Some(encoding) => request.header("accept-encoding", encoding),
            None => request,
        }
        .send()
    };
    let varies = |response: &reqwest::Response| {
        response.headers().get_all("vary").iter().any(|v| {
            v.to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        })
    };

    let plain = metrics(None).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_varies = varies(&plain);
    let plain = plain.text().await.unwrap();
    assert!(plain_varies, "{} bytes", plain.len());
    assert!(plain.len() >= 1024, "{} bytes", plain.len());
    assert!(plain.contains("http_requests_total"), "{plain}");

    let gzip = metrics(Some("gzip")).await.unwrap();
    assert_eq!(header(gzip.headers(), "content-encoding"), "gzip");
    assert!(gzip.headers().get("content-length").is_none());
    assert!(varies(&gzip));
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gzip.bytes().await.unwrap()[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert!(decoded.contains("http_requests_total"), "{decoded}");

    let small = |encoding: &'static str| {
        app.client
            .post(app.url("/graphql"))
            .header("accept-encoding", encoding)
            .json(&json!({ "query": "{ apiInfo { version } }" }))
            .send()
    };
    for refusing in ["identity;q=0", "*;q=0", "gzip;q=0, br;q=0, identity;q=0"] {
        assert_eq!(
            metrics(Some(refusing)).await.unwrap().status(),
            406,
            "{refusing}"
        );
        let (status, _, body) = read(small(refusing).await.unwrap()).await;
        assert_eq!(status, 406, "{refusing}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_ACCEPTABLE");
    }
    // Named but not refused: the small answer goes as it is.
    for accepting in ["identity", "*", "gzip, identity;q=0.5", "br;q=0"] {
        let response = small(accepting).await.unwrap();
        assert_eq!(response.status(), 200, "{accepting}");
        assert!(response.headers().get("content-encoding").is_none());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["data"]["apiInfo"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    }
}

/// `/graphql` compresses its bodies itself (the compression layer is on the other routes only):
/// one too large for the memo is compressed for its response alone, each time; a batch's array
/// and the GraphiQL page go compressed too.
#[tokio::test]
async fn graphql_compresses_large_bodies_batches_and_its_page_itself() {
    use std::io::Read as _;
    let app = TestApp::spawn_with(|s| {
        if let Some(compression) = s.http.compression.as_mut() {
            compression.min_size = 64;
            // Bodies over 1 KiB are not kept.
            compression.cache_size = 16 * 1024;
        }
        s.graphql.max_batch_size = 2;
    })
    .await;
    let gunzip = |bytes: &[u8]| {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut decoded)
            .unwrap();
        decoded
    };
    let large = large_query();
    let post = |body: serde_json::Value, encoding: &'static str| {
        app.client
            .post(app.url("/graphql"))
            .header("accept-encoding", encoding)
            .json(&body)
            .send()
    };

    let plain = post(json!({ "query": large }), "identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 1024, "{} bytes", plain.len());
    for _ in 0..2 {
        let gzip = post(json!({ "query": large }), "gzip").await.unwrap();
        assert_eq!(header(gzip.headers(), "content-encoding"), "gzip");
        assert!(header(gzip.headers(), "etag").starts_with("W/"));
        assert_eq!(gunzip(&gzip.bytes().await.unwrap()), plain);
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("http_compression_total{result=\"compressed\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("result=\"kept\""), "{metrics}");

    let operation = json!({ "query": "{ apiInfo { version environment } }" });
    let batch = post(json!([operation, operation]), "gzip").await.unwrap();
    assert_eq!(batch.status(), 200);
    assert_eq!(header(batch.headers(), "content-encoding"), "gzip");
    let results: serde_json::Value =
        serde_json::from_slice(&gunzip(&batch.bytes().await.unwrap())).unwrap();
    assert_eq!(
        results[1]["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );

    let page = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header(page.headers(), "content-encoding"), "br");
    let mut html = String::new();
    brotli::Decompressor::new(&page.bytes().await.unwrap()[..], 4096)
        .read_to_string(&mut html)
        .unwrap();
    assert!(html.contains("<div id=\"graphiql\">"), "{html}");
}

/// A query whose answer is past 1 KiB: twenty aliases of `apiInfo`.
fn large_query() -> String {
    format!(
        "{{ {} }}",
        (0..20)
            .map(|i| format!("a{i}: apiInfo {{ version environment __typename }}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}
