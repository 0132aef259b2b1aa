//! The authentication pipeline under faults: revocations that survive restarts and store
//! outages, a hung store that costs a request at most one timeout, and an outage that answers
//! 503 (never 401) when nothing can decide.

use std::time::{Duration, Instant};

use multipult::config::RedisSettings;
use serde_json::json;

use crate::helpers::TestApp;

const ME: &str = "{ me { id } }";

/// Redis settings for a server that is not there.
fn redis_down(timeout: Duration) -> RedisSettings {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    RedisSettings {
        url: format!("redis://127.0.0.1:{port}").into(),
        pool_size: 2,
        timeout,
        circuit_threshold: 3,
        circuit_cooldown: Duration::from_secs(30),
    }
}

/// Redis settings for a server that accepts connections and never answers.
fn redis_hung(timeout: Duration) -> (RedisSettings, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let mut held = vec![];
        for stream in listener.incoming().take(16) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let settings = RedisSettings {
        url: format!("redis://127.0.0.1:{port}").into(),
        pool_size: 2,
        timeout,
        circuit_threshold: 3,
        circuit_cooldown: Duration::from_secs(30),
    };
    (settings, holder)
}

#[tokio::test]
async fn a_logout_survives_a_restart_of_the_embedded_server() {
    let dir = std::env::temp_dir().join(format!(
        "multipult-revoke-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (_shared, database_url) = match crate::helpers::test_database_url() {
        Some(admin) => {
            let (guard, url) = crate::helpers::TestDatabase::create(&admin).await;
            (Some(guard), url)
        }
        None => (None, format!("sqlite://{}/app.db?mode=rwc", dir.display())),
    };
    let configure = |s: &mut multipult::config::Settings| {
        s.database.url = database_url.clone().into();
        s.database.max_connections = 2;
        // In-process stores: a restart forgets everything they held.
        s.redis = None;
        // One signing key for both lives of the server.
        s.secrets.jwt_secret = "the same signing key before and after the restart".into();
    };
    let mut first = TestApp::spawn_with(configure).await;
    let leaving = first.signed_up("leaver@example.com").await;
    let staying = first
        .login("leaver@example.com", crate::helpers::PASSWORD)
        .await;
    let out = first
        .gql(Some(&leaving.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out.data()["logout"], true);
    assert_eq!(
        first.gql(Some(&leaving.access), ME, json!({})).await.status,
        401
    );
    first.begin_shutdown().unwrap().await.unwrap().unwrap();
    drop(first);

    let second = TestApp::spawn_with(configure).await;
    let response = second.gql(Some(&leaving.access), ME, json!({})).await;
    assert_eq!(response.status, 401, "{}", response.body);
    // The other session's token still works: the signing key is the same.
    let response = second.gql(Some(&staying.access), ME, json!({})).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

#[tokio::test]
async fn a_revoked_session_stays_revoked_while_the_store_is_down() {
    let app = TestApp::spawn_with(|s| s.redis = Some(redis_down(Duration::from_millis(200)))).await;
    let session = app.signed_up("careful@example.com").await;
    assert_eq!(
        app.gql(Some(&session.access), ME, json!({})).await.status,
        200
    );
    let out = app
        .gql(Some(&session.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out.data()["logout"], true, "{}", out.body);
    let after = app.gql(Some(&session.access), ME, json!({})).await;
    assert_eq!(after.status, 401, "{}", after.body);
    assert_eq!(after.code(), "UNAUTHENTICATED");
    assert!(after.header("www-authenticate").contains("invalid_token"));
}

#[tokio::test]
async fn a_hung_store_costs_a_request_at_most_one_timeout() {
    let timeout = Duration::from_millis(300);
    let (redis, _holder) = redis_hung(timeout);
    let app = TestApp::spawn_with(|s| {
        s.redis = Some(redis.clone());
        s.rate_limit.enabled = true;
    })
    .await;
    let session = app.user_with_roles("patient@example.com", &[]).await;
    let started = Instant::now();
    for _ in 0..5 {
        let response = app.gql(Some(&session.access), ME, json!({})).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let elapsed = started.elapsed();
    // Each request makes several store calls; without the breaker each would wait.
    assert!(
        elapsed < timeout * 4,
        "5 requests took {elapsed:?} with a {timeout:?} store timeout"
    );
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("store_circuit_open 1"), "{metrics}");
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("store_circuit_rejected_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rejected >= 5.0, "calls failed fast: {rejected}");
}

#[tokio::test]
async fn when_nothing_can_check_a_credential_the_answer_is_503_never_401() {
    let logs = crate::helpers::capture_logs();
    let app = TestApp::spawn_with(|s| s.redis = Some(redis_down(Duration::from_millis(200)))).await;
    let session = app.signed_up("outage@example.com").await;
    // Now the database goes too: nothing can say whether the token still holds.
    app.state.db.close_by_ref().await.unwrap();

    let response = app.gql(Some(&session.access), ME, json!({})).await;
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.code(), "SERVICE_UNAVAILABLE");
    assert!(response.extension("retryAfter").is_number());
    assert!(!response.header("retry-after").is_empty());
    let request_id = response.header("x-request-id").to_owned();
    let lines = logs.lines();
    let logged = lines.iter().any(|line| {
        line["span"]["request_id"] == request_id.as_str()
            && line["level"] == "ERROR"
            && line["fields"]["error"]
                .as_str()
                .is_some_and(|cause| cause.contains("closed"))
    });
    let errors: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert!(
        logged,
        "a log line with the cause and the request id {request_id}: {errors:#?}"
    );

    let mut socket = crate::ws::connect(&app, "graphql-transport-ws")
        .await
        .unwrap();
    crate::ws::send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": session.access } }),
    )
    .await;
    assert_eq!(crate::ws::close_code(&mut socket).await, 1011);
}
