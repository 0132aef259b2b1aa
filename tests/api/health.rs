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
    let body = readiness(&app).await;
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

/// `GET /health/ready`'s body, which must be a 200.
async fn readiness(app: &TestApp) -> serde_json::Value {
    let (status, _, body) = read(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn probes_at_any_rate_cost_the_dependencies_one_check_per_max_age() {
    let app = TestApp::spawn_with(|s| s.http.health_check_max_age = Duration::from_secs(600)).await;
    let statements = || app.statements.load(std::sync::atomic::Ordering::SeqCst);

    // The first scrape reads the gauges from the database (the job queue, active sessions,
    // each feature's). Background work (the job worker, the scheduler) runs statements too, so
    // what follows compares with one scrape's worth, not with zero.
    let before = statements();
    let first = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let one_scrape = statements() - before;
    assert!(one_scrape >= 2, "a scrape reads its gauges: {one_scrape}");
    let checked_at = readiness(&app).await["checkedAt"].clone();
    assert!(checked_at.is_string(), "{checked_at}");

    // A flood of probes and scrapes, all at once: no statement, one answer.
    let before = statements();
    let probes = (0..40).map(|_| readiness(&app));
    let scrapes = (0..40).map(|_| async {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    });
    let (answers, texts) = tokio::join!(
        futures_util::future::join_all(probes),
        futures_util::future::join_all(scrapes)
    );
    let ran = statements() - before;
    assert!(
        ran < one_scrape,
        "80 probes within the max age ran {ran} statements (one scrape: {one_scrape})"
    );
    for answer in &answers {
        assert_eq!(answer["checkedAt"], checked_at, "{answer}");
    }
    // The request counters are not cached: each scrape shows the requests before it.
    assert!(texts.iter().all(|t| t.contains("http_requests_total")));
}

#[tokio::test]
async fn with_no_max_age_every_probe_asks_the_dependencies_again() {
    let app = TestApp::spawn_with(|s| s.http.health_check_max_age = Duration::ZERO).await;
    let statements = || app.statements.load(std::sync::atomic::Ordering::SeqCst);
    let first = readiness(&app).await["checkedAt"].clone();
    let second = readiness(&app).await["checkedAt"].clone();
    assert!(
        second.as_str().unwrap() > first.as_str().unwrap(),
        "{first} then {second}"
    );
    for _ in 0..2 {
        let before = statements();
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(statements() > before, "each scrape reads its gauges");
    }
}
