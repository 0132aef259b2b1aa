//! GraphQL-over-HTTP conformance: negotiation, status codes per media type, parameter shapes.

use serde_json::{Value, json};

use crate::helpers::{TestApp, header, read};

const GQL_JSON: &str = "application/graphql-response+json";

async fn post(
    app: &TestApp,
    accept: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.post(app.url("/graphql")).body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn the_negotiated_media_type_is_answered_with_utf8() {
    let app = TestApp::spawn().await;
    for (accept, expected) in [
        (
            Some(GQL_JSON),
            "application/graphql-response+json; charset=utf-8",
        ),
        (Some("application/json"), "application/json; charset=utf-8"),
        (Some("*/*"), "application/json; charset=utf-8"),
        (None, "application/json; charset=utf-8"),
    ] {
        let (status, headers, body) = post(
            &app,
            accept,
            Some("application/json"),
            r#"{"query":"{ __typename }"}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), expected, "{accept:?}");
        assert_eq!(body["data"]["__typename"], "QueryRoot");
    }
}

#[tokio::test]
async fn an_unacceptable_accept_header_is_406() {
    let app = TestApp::spawn().await;
    let (status, _, body) = post(
        &app,
        Some("text/xml"),
        Some("application/json"),
        r#"{"query":"{ __typename }"}"#,
    )
    .await;
    assert_eq!(status, 406);
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_ACCEPTABLE");
}

#[tokio::test]
async fn request_errors_are_400_without_data_under_graphql_response_json() {
    let app = TestApp::spawn().await;
    for query in [
        "{ apiInfo { ",
        "{ doesNotExist }",
        "query($n: Int!) { __typename }",
    ] {
        let body = json!({ "query": query }).to_string();
        let (status, _, response) =
            post(&app, Some(GQL_JSON), Some("application/json"), &body).await;
        assert_eq!(status, 400, "{query}: {response}");
        assert!(response.get("data").is_none(), "{query}: {response}");
        assert!(response["errors"].as_array().is_some_and(|e| !e.is_empty()));
    }
}

#[tokio::test]
async fn request_errors_are_200_under_legacy_application_json() {
    let app = TestApp::spawn().await;
    let (status, _, response) = post(
        &app,
        Some("application/json"),
        Some("application/json"),
        r#"{"query":"{ doesNotExist }"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(response.get("data").is_none());
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    let (_, _, response) = post(
        &app,
        Some("application/json"),
        Some("application/json"),
        r#"{"query":"{ x"}"#,
    )
    .await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
}

#[tokio::test]
async fn variables_that_fail_coercion_are_a_request_error() {
    let app = TestApp::spawn().await;
    let body = json!({
        "query": "subscription($n: Int) { heartbeat(count: $n) { sequence } }",
        "variables": { "n": "not a number" },
    })
    .to_string();
    let (status, _, response) = post(&app, Some(GQL_JSON), Some("application/json"), &body).await;
    assert_eq!(status, 400, "{response}");
    assert!(response.get("data").is_none());
}

#[tokio::test]
async fn post_without_a_json_content_type_is_415_once_past_csrf_prevention() {
    let app = TestApp::spawn().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/graphql"))
            .header("apollo-require-preflight", "true")
            .body(r#"{"query":"{ __typename }"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, headers, body) = read(request.send().await.unwrap()).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
        assert!(header(&headers, "content-type").starts_with("application/json"));
    }
}

#[tokio::test]
async fn a_json_body_in_a_charset_other_than_utf8_is_415() {
    let app = TestApp::spawn().await;
    for (content_type, expected) in [
        ("application/json; charset=utf-16", 415),
        ("application/json;charset=ISO-8859-1", 415),
        ("application/json; charset=\"latin1\"", 415),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON; Charset=\"UTF-8\"", 200),
        ("application/json; charset=utf8", 200),
    ] {
        let (status, headers, body) = post(
            &app,
            Some(GQL_JSON),
            Some(content_type),
            r#"{"query":"{ __typename }"}"#,
        )
        .await;
        assert_eq!(status, expected, "{content_type}: {body}");
        assert!(header(&headers, "content-type").starts_with(GQL_JSON));
        if expected == 415 {
            assert_eq!(
                body["errors"][0]["extensions"]["code"],
                "UNSUPPORTED_MEDIA_TYPE"
            );
        }
    }
}

#[tokio::test]
async fn a_compressed_request_body_is_415_naming_the_codings_accepted() {
    let app = TestApp::spawn().await;
    for (coding, expected) in [
        (Some("gzip"), 415),
        (Some("br"), 415),
        (Some("identity, gzip"), 415),
        (Some("identity"), 200),
        (Some("IDENTITY"), 200),
        (None, 200),
    ] {
        let mut request = app
            .client
            .post(app.url("/graphql"))
            .header("accept", GQL_JSON)
            .header("content-type", "application/json")
            .body(r#"{"query":"{ __typename }"}"#);
        if let Some(coding) = coding {
            request = request.header("content-encoding", coding);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{coding:?}");
        if expected == 415 {
            assert_eq!(response.headers()["accept-encoding"], "identity");
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["errors"][0]["extensions"]["code"],
                "UNSUPPORTED_MEDIA_TYPE"
            );
        }
    }
}

#[tokio::test]
async fn malformed_parameters_are_400_for_both_media_types() {
    let app = TestApp::spawn().await;
    let cases = [
        r#"[1, 2]"#,
        r#""a string""#,
        r#"{}"#,
        r#"{"query": 1}"#,
        r#"{"query": "{ __typename }", "variables": [1]}"#,
        r#"{"query": "{ __typename }", "extensions": "x"}"#,
        r#"{"query": "{ __typename }", "operationName": 3}"#,
    ];
    for accept in [GQL_JSON, "application/json"] {
        for case in cases {
            let (status, headers, body) =
                post(&app, Some(accept), Some("application/json"), case).await;
            assert_eq!(status, 400, "{accept} {case}: {body}");
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
                "{case}"
            );
            assert!(
                header(&headers, "content-type").starts_with(accept),
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn get_takes_parameters_from_the_query_string() {
    let app = TestApp::spawn().await;
    let (status, _, body) = app
        .get_graphql(&[
            (
                "query",
                "query Info($skip: Boolean!) { apiInfo @skip(if: $skip) { version } __typename }",
            ),
            ("operationName", "Info"),
            ("variables", r#"{"skip": true}"#),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].get("apiInfo").is_none());

    let (status, _, body) = app.get_graphql(&[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let (status, _, _) = app
        .get_graphql(&[("query", "{ __typename }"), ("variables", "not json")])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn get_runs_the_operation_named_in_operation_name() {
    let app = TestApp::spawn().await;
    let document = "query A { __typename } query B { apiInfo { version } }";
    let (status, _, body) = app
        .get_graphql(&[("query", document), ("operationName", "B")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(body["data"].get("__typename").is_none());

    let (status, _, body) = app
        .get_graphql(&[("query", document), ("operationName", "C")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    assert!(body.get("data").is_none());
}

#[tokio::test]
async fn a_named_mutation_over_get_is_refused_even_beside_queries() {
    let app = TestApp::spawn().await;
    let document = "query Q { __typename } mutation M { __typename }";
    let (status, headers, _) = app
        .get_graphql(&[("query", document), ("operationName", "M")])
        .await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), "POST");
}

#[tokio::test]
async fn batches_are_refused_unless_enabled_then_capped_and_answered_in_order() {
    let app = TestApp::spawn().await;
    let batch = r#"[{"query":"{ __typename }"},{"query":"{ apiInfo { version } }"}]"#;
    let (status, _, _) = post(&app, None, Some("application/json"), batch).await;
    assert_eq!(status, 400);

    let app = TestApp::spawn_with(|s| s.graphql.max_batch_size = 2).await;
    let (status, _, body) = post(&app, None, Some("application/json"), batch).await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["data"]["__typename"], "QueryRoot");
    assert_eq!(
        body[1]["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );

    let three =
        r#"[{"query":"{ __typename }"},{"query":"{ __typename }"},{"query":"{ __typename }"}]"#;
    let (status, _, body) = post(&app, None, Some("application/json"), three).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn no_response_of_the_endpoint_is_a_500_or_html() {
    let app = TestApp::spawn().await;
    let bodies = [
        "",
        "null",
        "{",
        r#"{"query":""}"#,
        r#"{"query":"{ __typename }","variables":{"a":{"b":[1,{}]}}}"#,
    ];
    for accept in [GQL_JSON, "application/json", "*/*"] {
        for body in bodies {
            let (status, headers, _) =
                post(&app, Some(accept), Some("application/json"), body).await;
            assert!(status < 500, "{body}");
            assert!(!header(&headers, "content-type").contains("html"), "{body}");
        }
    }
}

/// The raw body of a JSON POST to `/graphql`.
async fn post_text(app: &TestApp, token: Option<&str>, body: &str) -> String {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().text().await.unwrap()
}

/// Byte offsets of each needle in `text`, in the order given (panics on a missing one).
fn offsets(text: &str, needles: &[&str]) -> Vec<usize> {
    needles
        .iter()
        .map(|needle| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in {text}"))
        })
        .collect()
}

#[tokio::test]
async fn response_fields_come_in_the_order_the_selection_set_gives_them() {
    // GraphQL spec, "Serialized Map Ordering": a response's maps keep the selection order, for
    // single operations and for each result of a batch (a refused one beside an executed one).
    let app = TestApp::spawn_with(|s| s.graphql.max_batch_size = 2).await;
    let session = app.signed_up("ordered@example.com").await;
    let text = post_text(
        &app,
        Some(&session.access),
        r#"{"query":"{ zeta: apiInfo { version } me { roles { name } id email } alpha: __typename }"}"#,
    )
    .await;
    let at = offsets(
        &text,
        &[
            r#""zeta""#,
            r#""me""#,
            r#""roles""#,
            r#""id""#,
            r#""email""#,
            r#""alpha""#,
        ],
    );
    assert!(at.is_sorted(), "{text}");

    let batch = r#"[{"query":"{ apiInfo { version environment } b: __typename a: __typename }"},{"query":"{ nope }"}]"#;
    let text = post_text(&app, None, batch).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{text}");
    assert_eq!(body[0]["data"]["b"], "QueryRoot");
    assert!(body[1]["errors"][0]["message"].is_string(), "{text}");
    let at = offsets(
        &text,
        &[r#""version""#, r#""environment""#, r#""b""#, r#""a""#],
    );
    assert!(at.is_sorted(), "{text}");
}
