//! `/metrics`: RED metrics per route and per GraphQL operation, optional bearer token.

use serde_json::json;

use crate::helpers::TestApp;

/// The value of the first sample line that starts with `prefix` and contains every label.
fn sample(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `GET /metrics` without a token.
async fn scrape(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn counters_and_histograms_grow_with_graphql_requests_by_operation_name() {
    let app = TestApp::spawn().await;
    let scrape = || scrape(&app);
    let op = r#"operation="MetricsProbe""#;
    let before = scrape().await;
    assert_eq!(sample(&before, "graphql_operations_total", &[op]), 0.0);

    for _ in 0..3 {
        app.post_graphql("query MetricsProbe { __typename }", json!({}))
            .await;
    }
    let after = scrape().await;
    assert_eq!(
        sample(
            &after,
            "graphql_operations_total",
            &[op, r#"type="query""#, r#"outcome="ok""#]
        ),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "graphql_operation_duration_seconds_count", &[op]),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "graphql_operation_duration_seconds_bucket",
            &[op, r#"le="+Inf""#]
        ),
        3.0
    );
    assert!(
        sample(
            &after,
            "http_requests_total",
            &[r#"route="/graphql""#, r#"method="POST""#, r#"status="200""#]
        ) >= 3.0
    );
    assert!(
        sample(
            &after,
            "http_request_duration_seconds_count",
            &[r#"route="/graphql""#]
        ) >= 3.0
    );
}

#[tokio::test]
async fn a_metrics_token_protects_the_endpoint() {
    let app =
        TestApp::spawn_with(|s| s.http.metrics_token = Some("scrape-me".to_owned().into())).await;
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(
        right.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

/// Open sockets (by subprotocol) and the operations running on them (by type) are gauges that
/// go back down when the client completes an operation or goes away.
#[tokio::test]
async fn websocket_connections_and_operations_are_gauged() {
    let app = TestApp::spawn().await;
    let scrape = || scrape(&app);
    let connections = |text: &str| {
        sample(
            text,
            "websocket_connections",
            &[r#"protocol="graphql-transport-ws""#],
        )
    };
    let subscriptions =
        |text: &str| sample(text, "websocket_operations", &[r#"type="subscription""#]);
    let session = app.signed_up("gauged@example.com").await;
    let mut socket = crate::ws::signed_in(&app, &session, "graphql-transport-ws").await;
    for id in ["a", "b"] {
        crate::ws::send(
            &mut socket,
            json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { notificationAdded { id } }" } }),
        )
        .await;
    }
    // The server counts what it has started: wait for it, as a scraper would.
    let mut text = scrape().await;
    for _ in 0..200 {
        if subscriptions(&text) == 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = scrape().await;
    }
    assert_eq!(connections(&text), 1.0, "{text}");
    assert_eq!(subscriptions(&text), 2.0, "{text}");

    crate::ws::send(&mut socket, json!({ "id": "a", "type": "complete" })).await;
    for _ in 0..200 {
        text = scrape().await;
        if subscriptions(&text) == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(subscriptions(&text), 1.0, "{text}");

    socket.close(None).await.unwrap();
    drop(socket);
    for _ in 0..200 {
        text = scrape().await;
        if connections(&text) == 0.0 && subscriptions(&text) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(connections(&text), 0.0, "{text}");
    assert_eq!(subscriptions(&text), 0.0, "{text}");
}
