//! Liveness and readiness.

use std::time::{Duration, Instant};

use multipult::config::RedisSettings;

use crate::helpers::{TestApp, read};

#[tokio::test]
async fn live_is_200() {
    let app = TestApp::spawn().await;
    let (status, _, body) = read(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_is_200_and_lists_the_database_check() {
    let app = TestApp::spawn().await;
    let (status, _, body) = read(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    let checks = body["checks"].as_array().unwrap();
    let database = checks
        .iter()
        .find(|c| c["name"] == "database")
        .expect("database check");
    assert_eq!(database["ok"], true);
    assert!(database["latencyMs"].is_u64());
    let has_redis = checks.iter().any(|c| c["name"] == "redis");
    assert_eq!(has_redis, app.state.settings.redis.is_some());
}

#[tokio::test]
async fn ready_is_503_naming_redis_when_redis_is_unreachable() {
    // A port nothing listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let timeout = Duration::from_millis(800);
    let app = TestApp::spawn_with(|s| {
        s.redis = Some(RedisSettings {
            url: format!("redis://127.0.0.1:{port}").into(),
            pool_size: 2,
            timeout: Duration::from_millis(300),
            circuit_threshold: 3,
            circuit_cooldown: Duration::from_secs(1),
        });
        s.http.health_check_timeout = timeout;
    })
    .await;
    let started = Instant::now();
    let (status, _, body) = read(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let redis = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redis")
        .unwrap();
    assert_eq!(redis["ok"], false);
    assert!(redis["error"].is_string());
    let database = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .unwrap();
    assert_eq!(database["ok"], true);
    // The per-check timeout bounds the answer (generous margin for a loaded machine).
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "took {elapsed:?}"
    );
}
