//! Persisted queries: Apollo APQ across instances, and safelist mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use multipult::config::PersistedQueryMode;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{TestApp, read};

const DOCUMENT: &str = "query Version { apiInfo { version } }";

fn sha(document: &str) -> String {
    hex::encode(sha2::Sha256::digest(document.as_bytes()))
}

fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn by_hash_over_get(app: &TestApp, hash: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", extension(hash).to_string())])
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    (status, body)
}

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    (status, body)
}

#[tokio::test]
async fn apq_registers_a_document_and_then_runs_it_by_hash() {
    let app = TestApp::spawn().await;
    let hash = sha(DOCUMENT);

    let (status, body) = by_hash_over_get(&app, &hash).await;
    assert_eq!(status, 200, "Apollo clients retry on a 200 with this code");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{body}"
    );
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");

    let (status, body) = post(
        &app,
        json!({ "query": DOCUMENT, "extensions": extension(&hash) }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );

    let (status, body) = by_hash_over_get(&app, &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );

    let (status, body) = post(
        &app,
        json!({ "query": "{ __typename }", "extensions": extension(&hash) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let (status, _) = post(
        &app,
        json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": hash } } }),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_hash_registered_on_one_instance_resolves_on_another() {
    // One in-process store set on the embedded default; Redis with TEST_REDIS_URL.
    let (first, second) = TestApp::spawn_pair_with(|_| {}).await;
    let hash = sha(DOCUMENT);
    post(
        &first,
        json!({ "query": DOCUMENT, "extensions": extension(&hash) }),
    )
    .await;
    let (_, body) = by_hash_over_get(&second, &hash).await;
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{body}"
    );
}

#[tokio::test]
async fn safelist_mode_runs_only_manifest_documents() {
    let manifest: BTreeMap<String, String> = [(sha(DOCUMENT), DOCUMENT.to_owned())].into();
    let app = TestApp::spawn_with(|s| {
        s.persisted_queries.mode = PersistedQueryMode::Safelist;
        s.persisted_queries.manifest = Arc::new(manifest);
    })
    .await;
    let (status, body) = by_hash_over_get(&app, &sha(DOCUMENT)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let (_, body) = post(&app, json!({ "query": DOCUMENT })).await;
    assert_eq!(
        body["data"]["apiInfo"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the full text of a listed document is fine"
    );

    let (_, body) = post(&app, json!({ "query": "{ __typename }" })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_ALLOWED",
        "{body}"
    );
    assert!(body.get("data").is_none());
    let (_, body) = by_hash_over_get(&app, &sha("{ __typename }")).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_ALLOWED"
    );

    // The socket obeys the same list.
    use crate::ws::{connect, init, next_json, send};
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "x", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "error");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_ALLOWED"
    );
}

#[test]
fn manifests_in_both_formats_are_read_and_checked() {
    let apollo = json!({
        "format": "apollo-persisted-query-manifest", "version": 1,
        "operations": [{ "id": sha(DOCUMENT), "name": "Version", "type": "query", "body": DOCUMENT }]
    });
    let parsed = multipult::config::parse_manifest(&apollo.to_string()).unwrap();
    assert_eq!(
        parsed.get(&sha(DOCUMENT)).map(String::as_str),
        Some(DOCUMENT)
    );
    let map = json!({ sha(DOCUMENT): DOCUMENT });
    assert_eq!(
        multipult::config::parse_manifest(&map.to_string())
            .unwrap()
            .len(),
        1
    );
    let wrong = json!({ sha("{ other }"): DOCUMENT });
    assert!(multipult::config::parse_manifest(&wrong.to_string()).is_err());
}

#[test]
fn safelist_mode_without_a_readable_manifest_is_a_configuration_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
        .env_clear()
        .envs([
            ("APP_ENV", "test"),
            ("PERSISTED_QUERIES", "safelist"),
            ("PERSISTED_QUERIES_MANIFEST", "/nonexistent/manifest.json"),
        ])
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("PERSISTED_QUERIES_MANIFEST"));
}

#[tokio::test]
async fn only_documents_that_validate_and_pass_the_limits_are_registered() {
    let app = TestApp::spawn().await;
    let invalid = "{ noSuchField }";
    let (_, body) = post(
        &app,
        json!({ "query": invalid, "extensions": extension(&sha(invalid)) }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    let (_, body) = by_hash_over_get(&app, &sha(invalid)).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "an invalid document was not stored: {body}"
    );

    let aliases: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
    let too_complex = format!("{{ {aliases} }}");
    let (_, body) = post(
        &app,
        json!({ "query": too_complex, "extensions": extension(&sha(&too_complex)) }),
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX");
    let (_, body) = by_hash_over_get(&app, &sha(&too_complex)).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
}

#[tokio::test]
async fn the_persisted_query_store_keeps_only_the_most_recently_used_documents() {
    let app = TestApp::spawn_with(|s| s.persisted_queries.max_entries = 3).await;
    let documents: Vec<String> = (0..5)
        .map(|i| format!("query Q{i} {{ apiInfo {{ version }} }}"))
        .collect();
    for document in &documents {
        let (_, body) = post(
            &app,
            json!({ "query": document, "extensions": extension(&sha(document)) }),
        )
        .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    for (i, document) in documents.iter().enumerate() {
        let (_, body) = by_hash_over_get(&app, &sha(document)).await;
        let found = body.get("errors").is_none();
        assert_eq!(found, i >= 2, "document {i}: {body}");
    }
}

#[tokio::test]
async fn registrations_count_against_their_own_rate_limit() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = multipult::config::Quota {
            limit: 1000,
            window: std::time::Duration::from_secs(60),
        };
        s.persisted_queries.registrations = multipult::config::Quota {
            limit: 2,
            window: std::time::Duration::from_secs(60),
        };
    })
    .await;
    let documents: Vec<String> = (0..4)
        .map(|i| format!("query R{i} {{ __typename }}"))
        .collect();
    for document in &documents {
        let (_, body) = post(
            &app,
            json!({ "query": document, "extensions": extension(&sha(document)) }),
        )
        .await;
        // Past the limit the document still runs; it is just not stored.
        assert_eq!(body["data"]["__typename"], "QueryRoot", "{body}");
    }
    let stored: Vec<bool> = futures_util::future::join_all(documents.iter().map(|d| async {
        by_hash_over_get(&app, &sha(d))
            .await
            .1
            .get("errors")
            .is_none()
    }))
    .await;
    assert_eq!(stored, [true, true, false, false]);
}
