//! Hostile document shapes: each is refused with a request error before async-graphql validates
//! it (validation is exponential in fragment fan-out), while the server keeps answering
//! `/health/live` and other clients; responses stay small; operations stop at their deadline.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{GqlResponse, TestApp, registrations};
use crate::ws::{connect, init, next_json, send};

/// Each fragment spreads the next one twice: 2^levels `__typename` selections in ~1 KB.
fn fragment_fan_out(levels: usize) -> String {
    let mut doc = String::from("query { ...F0 }\n");
    for i in 0..levels {
        doc.push_str(&format!(
            "fragment F{i} on QueryRoot {{ ...F{} ...F{} }}\n",
            i + 1,
            i + 1
        ));
    }
    doc.push_str(&format!(
        "fragment F{levels} on QueryRoot {{ __typename }}\n"
    ));
    doc
}

/// Accounts in the database.
async fn accounts(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    multipult::entities::users::Entity::find()
        .count(&app.state.db)
        .await
        .unwrap()
}

/// Inline fragments nested `levels` deep.
fn nested_inline_fragments(levels: usize) -> String {
    let mut doc = String::from("{ ");
    for _ in 0..levels {
        doc.push_str("... on QueryRoot { __typename ");
    }
    doc.push_str(&"}".repeat(levels));
    doc.push_str(" }");
    doc
}

/// 30 aliases in a fragment spread 30 times: 900 aliases after expansion.
fn aliases_times_fragments() -> String {
    let aliases: String = (0..30).map(|i| format!("a{i}: __typename ")).collect();
    let spreads: String = (0..30).map(|i| format!("...G{i} ")).collect();
    let mut doc = format!("query {{ {spreads} }}\nfragment A on QueryRoot {{ {aliases} }}\n");
    for i in 0..30 {
        doc.push_str(&format!("fragment G{i} on QueryRoot {{ ...A }}\n"));
    }
    doc
}

/// A list argument nested far deeper than any real input.
fn deep_lists(levels: usize) -> String {
    format!(
        "{{ allUsers(filter: {{ search: {}\"x\"{} }}) {{ totalCount }} }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// Sends `query` while a probe keeps asking `/health/live`; returns the response and how many
/// probes were answered while it was in flight.
async fn refused_while_live(app: &TestApp, query: &str) -> (GqlResponse, usize) {
    let client = app.client.clone();
    let live_url = app.url("/health/live");
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let probe = tokio::spawn(async move {
        let mut answered = 0;
        loop {
            if let Ok(response) = client.get(&live_url).send().await
                && response.status() == 200
            {
                answered += 1;
            }
            if done_rx.try_recv().is_ok() {
                return answered;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let response = tokio::time::timeout(Duration::from_secs(10), app.gql(None, query, json!({})))
        .await
        .expect("a hostile document is answered, not left running");
    let _ = done_tx.send(());
    let answered = probe.await.unwrap();
    (response, answered)
}

#[tokio::test]
async fn fragment_fan_out_is_refused_before_validation_while_the_server_stays_live() {
    let app = TestApp::spawn().await;
    let document = fragment_fan_out(25);
    assert!(
        document.len() < 2048,
        "a small document: {}",
        document.len()
    );
    let (response, answered) = refused_while_live(&app, &document).await;
    assert_eq!(response.code(), "QUERY_TOO_COMPLEX", "{}", response.body);
    assert_eq!(response.extension("limit"), json!(2000));
    assert!(response.body.get("data").is_none(), "nothing executed");
    assert!(answered >= 1, "/health/live answered during the request");
    // Other clients are served.
    let other = app.gql(None, "{ apiInfo { version } }", json!({})).await;
    assert!(other.data()["apiInfo"]["version"].is_string());
}

#[tokio::test]
async fn every_fan_out_shape_is_a_request_error() {
    let app = TestApp::spawn().await;
    let many_fragments: String = (0..150)
        .map(|i| format!("fragment M{i} on QueryRoot {{ __typename }}\n"))
        .collect::<String>()
        + "{ __typename }";
    let spreads: String = (0..60).map(|_| "...S ").collect();
    let many_spreads = format!("{{ {spreads} }} fragment S on QueryRoot {{ __typename }}");
    let cycle = "{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }";
    let shapes: Vec<(&str, String, &str, Option<&str>)> = vec![
        (
            "fragment fan-out",
            fragment_fan_out(25),
            "QUERY_TOO_COMPLEX",
            Some("selections"),
        ),
        (
            "nested inline fragments",
            nested_inline_fragments(80),
            "QUERY_TOO_COMPLEX",
            Some("nesting"),
        ),
        (
            "aliases × fragments",
            aliases_times_fragments(),
            "QUERY_TOO_COMPLEX",
            Some("aliases"),
        ),
        (
            "deep lists",
            deep_lists(200),
            "QUERY_TOO_COMPLEX",
            Some("nesting"),
        ),
        (
            "many fragments",
            many_fragments,
            "QUERY_TOO_COMPLEX",
            Some("fragments"),
        ),
        (
            "many spreads in one selection set",
            many_spreads,
            "QUERY_TOO_COMPLEX",
            Some("spreads"),
        ),
        (
            "too many tokens",
            format!("{{ {} }}", "a ".repeat(12_000)),
            "QUERY_TOO_COMPLEX",
            Some("tokens"),
        ),
        (
            "too large",
            format!("{{ __typename }} # {}", "x".repeat(40 * 1024)),
            "QUERY_TOO_COMPLEX",
            Some("size"),
        ),
        (
            "a fragment cycle",
            cycle.to_owned(),
            "GRAPHQL_VALIDATION_FAILED",
            None,
        ),
    ];
    for (name, document, code, measure) in shapes {
        let response =
            tokio::time::timeout(Duration::from_secs(10), app.gql(None, &document, json!({})))
                .await
                .unwrap_or_else(|_| panic!("{name}: answered"));
        assert_eq!(response.code(), code, "{name}: {}", response.body);
        if let Some(measure) = measure {
            assert!(
                response.extension(measure).is_number(),
                "{name}: names its measure: {}",
                response.body
            );
        }
        assert!(response.body.get("data").is_none(), "{name}");
        // A request error under the GraphQL-over-HTTP media type is a 400.
        let strict = app
            .client
            .post(app.url("/graphql"))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": document }))
            .send()
            .await
            .unwrap();
        assert_eq!(strict.status(), 400, "{name}");
    }
}

#[tokio::test]
async fn typename_counts_toward_the_cost() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.max_complexity = 50;
        s.graphql.max_aliases = 100;
        s.graphql.max_root_fields = 100;
    })
    .await;
    let typenames: String = (0..60).map(|i| format!("t{i}: __typename ")).collect();
    let response = app
        .gql(None, &format!("{{ {typenames} }}"), json!({}))
        .await;
    assert_eq!(response.code(), "QUERY_TOO_COMPLEX", "{}", response.body);
    assert_eq!(response.extension("cost"), json!(60));
}

#[tokio::test]
async fn fan_out_over_websocket_is_an_error_message() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "1", "payload": { "query": fragment_fan_out(25) } }),
    )
    .await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "QUERY_TOO_COMPLEX"
    );
    // The socket still works.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "2", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
}

#[tokio::test]
async fn errors_are_deduplicated_and_capped() {
    let app = TestApp::spawn().await;
    // 1,500 selections of fields that do not exist: each is a validation error.
    let unknown: String = (0..1500).map(|i| format!("missing{} ", i % 3)).collect();
    let response = app.gql(None, &format!("{{ {unknown} }}"), json!({})).await;
    let errors = response.body["errors"].as_array().unwrap();
    assert!(errors.len() <= 21, "{} errors", errors.len());
    assert!(errors.iter().all(|e| e["extensions"]["code"].is_string()));
    let bytes = response.body.to_string().len();
    assert!(bytes < 20_000, "a small response: {bytes} bytes");
}

#[tokio::test]
async fn an_operation_past_its_deadline_is_stopped_and_answers_timeout() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.execution_timeout = Duration::from_millis(100);
        s.graphql.max_aliases = 50;
        s.graphql.max_root_fields = 50;
    })
    .await;
    // Each registration hashes a password (tens of milliseconds); forty run one after another.
    let registrations = registrations("slow", 40);
    let response = app.gql(None, &registrations, json!({})).await;
    assert_eq!(response.code(), "TIMEOUT", "{}", response.body);
    assert_eq!(response.status, 503);
    // Stopped: the remaining registrations never ran.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accounts = accounts(&app).await;
    assert!(accounts < 40, "{accounts} of 40 registrations ran");
}

#[tokio::test]
async fn a_mutation_whose_client_goes_away_runs_to_its_end() {
    use tokio::io::AsyncWriteExt as _;
    let app = TestApp::spawn_with(|s| {
        s.graphql.max_aliases = 50;
        s.graphql.max_root_fields = 50;
    })
    .await;
    // Each registration hashes a password (tens of milliseconds): the client is gone long
    // before the tenth.
    let registrations = registrations("gone", 10);
    let body = json!({ "query": registrations }).to_string();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(stream);
    // (Run inline in the request's task, the operation was dropped with the connection.)
    let started = std::time::Instant::now();
    while accounts(&app).await < 10 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accounts(&app).await, 10, "every registration ran");
}

#[tokio::test]
async fn a_nul_character_in_any_value_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let login =
        "mutation($e: String!) { login(input: { email: $e, password: \"x\" }) { accessToken } }";
    let response = app
        .gql(None, login, json!({ "e": "a\u{0}b@example.com" }))
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT", "{}", response.body);
    let inline = "mutation { login(input: { email: \"a\\u0000b@example.com\", password: \"x\" }) { accessToken } }";
    let response = app.gql(None, inline, json!({})).await;
    assert_eq!(response.code(), "BAD_USER_INPUT", "{}", response.body);
}

#[tokio::test]
async fn a_document_seen_before_is_still_checked_against_each_requests_variables() {
    // Known documents are parsed once (`graphql::document::Documents`); what depends on the
    // variables is checked every time, and a refused document is refused every time.
    let app = TestApp::spawn().await;
    let login =
        "mutation($e: String!) { login(input: { email: $e, password: \"x\" }) { accessToken } }";
    for _ in 0..2 {
        let fine = app
            .gql(None, login, json!({ "e": "nobody@example.com" }))
            .await;
        assert_eq!(fine.code(), "UNAUTHENTICATED", "{}", fine.body);
    }
    let documents = app.state.local::<multipult::graphql::document::Documents>();
    let known = documents.len();
    assert!(known >= 1, "the document was not kept");
    let nul = app
        .gql(None, login, json!({ "e": "a\u{0}b@example.com" }))
        .await;
    assert_eq!(nul.code(), "BAD_USER_INPUT", "{}", nul.body);
    let missing = app.gql(None, login, json!({})).await;
    assert!(missing.body.get("data").is_none(), "{}", missing.body);
    assert!(
        ["BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"].contains(&missing.code()),
        "{}",
        missing.body
    );
    // Refused for its own shape: every time, and never kept.
    let nul_inline = "mutation { login(input: { email: \"a\\u0000b@example.com\", password: \"x\" }) { accessToken } }";
    for _ in 0..2 {
        let refused = app.gql(None, nul_inline, json!({})).await;
        assert_eq!(refused.code(), "BAD_USER_INPUT", "{}", refused.body);
    }
    let fine = app.gql(None, "{ apiInfo { version } }", json!({})).await;
    assert!(
        fine.body["data"]["apiInfo"]["version"].is_string(),
        "{}",
        fine.body
    );
    assert_eq!(documents.len(), known + 1, "a refused document was kept");
}

#[tokio::test]
async fn a_missing_required_variable_is_a_request_error() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(
            None,
            "query($id: ID!) { user(id: $id) { id } }",
            Value::Object(Default::default()),
        )
        .await;
    assert_ne!(
        response.code(),
        "INTERNAL_SERVER_ERROR",
        "{}",
        response.body
    );
    assert!(response.body.get("data").is_none(), "{}", response.body);
    assert!(
        ["BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"].contains(&response.code()),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn an_operation_over_websocket_is_stopped_at_its_deadline_too() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.execution_timeout = Duration::from_millis(100);
        s.graphql.max_aliases = 50;
        s.graphql.max_root_fields = 50;
    })
    .await;
    let registrations = registrations("ws", 40);
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "slow", "payload": { "query": registrations } }),
    )
    .await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["payload"][0]["extensions"]["code"], "TIMEOUT");
    // The socket goes on.
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "next", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
}
