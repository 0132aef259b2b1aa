//! Langfuse settings: validation and a write-only secret, connection tests against a mocked
//! Langfuse (wiremock) for every status category, the address guard, monitoring with alerts, the
//! SDK snippet — and the secret key in no response, log line, audit entry or job payload.

use std::time::Duration;

use multipult::features::langfuse::LangfuseConfig;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{GqlResponse, Session, TestApp};
use crate::organizations::{create_org, member};
use crate::ws;

pub const PUBLIC: &str = "pk-lf-1234567890";
pub const SECRET: &str = "sk-lf-TOPSECRET-abcdef123456";

const UPSERT: &str = "mutation($o: String!, $input: LangfuseSettingsInput!) { upsertLangfuseSettings(organization: $o, input: $input) { id environment host publicKey secretKey enabled sampleRate release tags status } }";
const TEST_SAVED: &str = "mutation($o: String!, $e: OrganizationEnvironment!) { testLangfuseConnection(organization: $o, environment: $e) { status httpStatus latencyMs projectName langfuseVersion message retryAfterSeconds checkedAt } }";
const TEST_UNSAVED: &str = "mutation($o: String!, $input: LangfuseCredentialsInput!) { testLangfuseCredentials(organization: $o, input: $input) { status httpStatus projectName langfuseVersion message retryAfterSeconds } }";

fn config(
    change: impl FnOnce(&mut LangfuseConfig),
) -> impl FnOnce(&mut multipult::config::Settings) {
    move |s| {
        let mut config = LangfuseConfig::for_tests();
        config.test_limit.limit = 1000;
        change(&mut config);
        s.set_section(config);
    }
}

/// Saves `env`'s settings of `org` with the test keys and `host`.
pub async fn save(app: &TestApp, by: &Session, org: &str, env: &str, host: &str) -> GqlResponse {
    let response = app
        .gql(
            Some(&by.access),
            UPSERT,
            json!({ "o": org, "input": { "environment": env, "host": host, "publicKey": PUBLIC, "secretKey": SECRET, "release": "v1.2.3", "sampleRate": 0.5 } }),
        )
        .await;
    assert!(response.body.get("errors").is_none(), "{}", response.body);
    response
}

/// A Langfuse that answers health and projects as given.
async fn langfuse(health: ResponseTemplate, projects: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/public/health"))
        .respond_with(health)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/public/projects"))
        .respond_with(projects)
        .mount(&server)
        .await;
    server
}

fn healthy() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "status": "OK", "version": "3.63.0" }))
}

fn one_project() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "data": [{ "id": "p1", "name": "demo" }] }))
}

/// Nothing sent or stored anywhere may contain the secret key.
async fn assert_secret_nowhere(app: &TestApp, responses: &[&Value]) {
    for body in responses {
        assert!(
            !body.to_string().contains(SECRET),
            "a response has the secret: {body}"
        );
    }
    for entry in app.audit_entries().await {
        assert!(!format!("{entry:?}").contains(SECRET), "{entry:?}");
    }
    use sea_orm::EntityTrait as _;
    for job in multipult::entities::jobs::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
    {
        assert!(!job.payload.contains(SECRET), "{job:?}");
    }
    for row in multipult::features::langfuse::entity::settings::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
    {
        assert!(!row.secret_encrypted.contains(SECRET));
    }
}

#[tokio::test]
async fn settings_are_validated_and_the_secret_key_is_write_only() {
    let logs = crate::helpers::capture_logs();
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let viewer = member(&app, &owner, "acme", "viewer@example.com", "VIEWER").await;

    // Every invalid field is named at once.
    let invalid = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": "http://langfuse.example.com", "publicKey": "pk-wrong", "secretKey": "secret", "sampleRate": 1.5, "tags": ["ok", "not ok!"] } }),
        )
        .await;
    assert_eq!(invalid.code(), "BAD_USER_INPUT", "{}", invalid.body);
    for field in ["host", "publicKey", "secretKey", "sampleRate", "tags"] {
        assert!(
            !invalid.field_error(field).is_empty(),
            "{field}: {}",
            invalid.body
        );
    }
    for (host, message) in [
        ("ftp://cloud.langfuse.com", "https"),
        ("https://user:pw@cloud.langfuse.com", "credentials"),
        ("https://cloud.langfuse.com/?a=b", "query"),
        ("not a url", "URL"),
    ] {
        let response = app
            .gql(
                Some(&owner.access),
                UPSERT,
                json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": host, "publicKey": PUBLIC, "secretKey": SECRET } }),
            )
            .await;
        assert!(
            response.field_error("host").contains(message),
            "{host}: {}",
            response.body
        );
    }
    let missing_secret = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "STAGING", "publicKey": PUBLIC } }),
        )
        .await;
    assert_eq!(
        missing_secret.field_error("secretKey"),
        "is required for new settings"
    );

    // Saved: the host defaults to Langfuse Cloud EU; reads show the secret masked.
    let saved = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "publicKey": PUBLIC, "secretKey": SECRET, "tags": ["web", "eu"] } }),
        )
        .await;
    let settings = &saved.data()["upsertLangfuseSettings"];
    assert_eq!(
        settings["host"], "https://cloud.langfuse.com",
        "{}",
        saved.body
    );
    assert_eq!(settings["secretKey"], "sk-lf-…3456");
    assert_eq!(settings["status"], "UNKNOWN");
    // An update without the secret keeps it.
    let updated = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": "https://us.cloud.langfuse.com/", "publicKey": PUBLIC, "enabled": false, "sampleRate": 0.25 } }),
        )
        .await;
    let updated_settings = &updated.data()["upsertLangfuseSettings"];
    assert_eq!(updated_settings["host"], "https://us.cloud.langfuse.com");
    assert_eq!(updated_settings["secretKey"], "sk-lf-…3456");
    assert_eq!(updated_settings["enabled"], false);

    // Viewers read but do not change or test.
    let read = app
        .gql(
            Some(&viewer.access),
            "{ langfuseSettings(organization: \"acme\") { environment secretKey sampleRate } }",
            json!({}),
        )
        .await;
    assert_eq!(read.data()["langfuseSettings"][0]["sampleRate"], 0.25);
    for (query, variables) in [
        (
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "publicKey": PUBLIC } }),
        ),
        (TEST_SAVED, json!({ "o": "acme", "e": "PRODUCTION" })),
        (
            "mutation { deleteLangfuseSettings(organization: \"acme\", environment: PRODUCTION) }",
            json!({}),
        ),
        (
            TEST_UNSAVED,
            json!({ "o": "acme", "input": { "publicKey": PUBLIC, "secretKey": SECRET } }),
        ),
    ] {
        let refused = app.gql(Some(&viewer.access), query, variables).await;
        assert_eq!(refused.code(), "FORBIDDEN", "{query}: {}", refused.body);
    }

    // The SDK snippets carry everything but the secret.
    let mut responses = vec![
        invalid.body.clone(),
        saved.body.clone(),
        updated.body.clone(),
    ];
    for format in ["ENV", "PYTHON", "NODE"] {
        let snippet = app
            .gql(
                Some(&viewer.access),
                "query($f: LangfuseSdkFormat!) { langfuseSdkConfig(organization: \"acme\", environment: PRODUCTION, format: $f) }",
                json!({ "f": format }),
            )
            .await;
        let text = snippet.data()["langfuseSdkConfig"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("https://us.cloud.langfuse.com"), "{text}");
        assert!(text.contains(PUBLIC) && text.contains("0.25"), "{text}");
        assert!(text.contains("sk-lf-…"), "a placeholder: {text}");
        responses.push(snippet.body);
    }

    // Deleted, audited without the secret.
    let deleted = app
        .gql(
            Some(&owner.access),
            "mutation { deleteLangfuseSettings(organization: \"acme\", environment: PRODUCTION) }",
            json!({}),
        )
        .await;
    assert_eq!(deleted.data()["deleteLangfuseSettings"], true);
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    for action in [
        "langfuse.settings_create",
        "langfuse.settings_update",
        "langfuse.settings_delete",
    ] {
        assert!(actions.contains(&action.to_owned()), "{actions:?}");
    }
    let refs: Vec<&Value> = responses.iter().collect();
    assert_secret_nowhere(&app, &refs).await;
    for line in logs.lines() {
        assert!(!line.to_string().contains(SECRET), "{line}");
    }
}

#[tokio::test]
async fn each_status_category_comes_from_langfuses_answer() {
    let logs = crate::helpers::capture_logs();
    let app = TestApp::spawn_with(config(|c| c.timeout = Duration::from_millis(1500))).await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let big = "x".repeat(100 * 1024);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{PUBLIC}:{SECRET}")
        )
    );
    let cases: Vec<(&str, ResponseTemplate, ResponseTemplate, &str)> = vec![
        ("ok", healthy(), one_project(), "OK"),
        (
            "401",
            healthy(),
            ResponseTemplate::new(401),
            "INVALID_CREDENTIALS",
        ),
        (
            "403",
            healthy(),
            ResponseTemplate::new(403),
            "ORGANIZATION_KEY",
        ),
        (
            "429",
            healthy(),
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            "RATE_LIMITED",
        ),
        (
            "500",
            ResponseTemplate::new(500),
            one_project(),
            "SERVER_ERROR",
        ),
        (
            "not json",
            healthy(),
            ResponseTemplate::new(200).set_body_string("<html>hello</html>"),
            "INVALID_RESPONSE",
        ),
        (
            "oversize",
            healthy(),
            ResponseTemplate::new(200).set_body_string(big.clone()),
            "INVALID_RESPONSE",
        ),
        (
            "slow",
            healthy(),
            one_project().set_delay(Duration::from_secs(3)),
            "TIMEOUT",
        ),
        (
            "redirect",
            ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/"),
            one_project(),
            "INVALID_RESPONSE",
        ),
    ];
    let mut responses = Vec::new();
    for (name, health, projects, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/public/health"))
            .respond_with(health)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/public/projects"))
            .and(header("authorization", basic.as_str()))
            .respond_with(projects)
            .mount(&server)
            .await;
        let response = app
            .gql(
                Some(&owner.access),
                TEST_UNSAVED,
                json!({ "o": "acme", "input": { "host": server.uri(), "publicKey": PUBLIC, "secretKey": SECRET } }),
            )
            .await;
        let result = &response.data()["testLangfuseCredentials"];
        assert_eq!(result["status"], expected, "{name}: {}", response.body);
        assert!(!result["message"].as_str().unwrap().is_empty());
        match name {
            "ok" => {
                assert_eq!(result["projectName"], "demo");
                assert_eq!(result["langfuseVersion"], "3.63.0");
                assert_eq!(result["httpStatus"], 200);
            }
            "401" => assert!(result["message"].as_str().unwrap().contains("region")),
            "429" => assert_eq!(result["retryAfterSeconds"], 7),
            "500" => assert_eq!(result["httpStatus"], 500),
            "redirect" => assert_eq!(result["httpStatus"], 302),
            _ => {}
        }
        responses.push(response.body);
    }
    // Nothing listens: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = app
        .gql(
            Some(&owner.access),
            TEST_UNSAVED,
            json!({ "o": "acme", "input": { "host": format!("http://127.0.0.1:{port}"), "publicKey": PUBLIC, "secretKey": SECRET } }),
        )
        .await;
    assert_eq!(
        refused.data()["testLangfuseCredentials"]["status"],
        "UNREACHABLE",
        "{}",
        refused.body
    );
    responses.push(refused.body);
    // Something that does not speak TLS on an https URL.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let tls = app
        .gql(
            Some(&owner.access),
            TEST_UNSAVED,
            json!({ "o": "acme", "input": { "host": format!("https://127.0.0.1:{port}"), "publicKey": PUBLIC, "secretKey": SECRET } }),
        )
        .await;
    assert_eq!(
        tls.data()["testLangfuseCredentials"]["status"],
        "TLS_ERROR",
        "{}",
        tls.body
    );
    responses.push(tls.body);
    let refs: Vec<&Value> = responses.iter().collect();
    assert_secret_nowhere(&app, &refs).await;
    for line in logs.lines() {
        assert!(!line.to_string().contains(SECRET), "{line}");
    }
}

#[tokio::test]
async fn saved_settings_are_tested_recorded_and_rate_limited_per_organization() {
    let app = TestApp::spawn_with(config(|c| c.test_limit.limit = 2)).await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let plain = member(&app, &owner, "acme", "member@example.com", "MEMBER").await;
    let server = langfuse(healthy(), one_project()).await;
    save(&app, &owner, "acme", "STAGING", &server.uri()).await;
    let vars = json!({ "o": "acme", "e": "STAGING" });
    let first = app.gql(Some(&plain.access), TEST_SAVED, vars.clone()).await;
    assert_eq!(
        first.data()["testLangfuseConnection"]["status"],
        "OK",
        "{}",
        first.body
    );
    let second = app.gql(Some(&owner.access), TEST_SAVED, vars.clone()).await;
    assert_eq!(second.data()["testLangfuseConnection"]["status"], "OK");
    let third = app.gql(Some(&owner.access), TEST_SAVED, vars.clone()).await;
    assert_eq!(third.code(), "RATE_LIMITED", "{}", third.body);
    // Tests are in the history, and do not move the status (only the monitor does).
    let status = app
        .gql(
            Some(&plain.access),
            "{ langfuseStatus(organization: \"acme\") { environment status history { status scheduled } } }",
            json!({}),
        )
        .await;
    let staging = &status.data()["langfuseStatus"][0];
    assert_eq!(staging["environment"], "STAGING");
    assert_eq!(staging["status"], "UNKNOWN");
    assert_eq!(
        staging["history"],
        json!([{ "status": "OK", "scheduled": false }, { "status": "OK", "scheduled": false }])
    );
    // Another environment without settings: NOT_FOUND.
    let none = app
        .gql(
            Some(&owner.access),
            TEST_SAVED,
            json!({ "o": "acme", "e": "DEVELOPMENT" }),
        )
        .await;
    assert!(
        ["NOT_FOUND", "RATE_LIMITED"].contains(&none.code()),
        "{}",
        none.body
    );
}

#[tokio::test]
async fn private_and_metadata_hosts_are_refused_when_saved_and_when_connecting() {
    let app = TestApp::spawn_with(config(|c| c.block_private_hosts = true)).await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    for host in [
        "https://169.254.169.254",
        "https://10.0.0.1",
        "https://localhost",
        "https://[::1]",
    ] {
        let response = app
            .gql(
                Some(&owner.access),
                UPSERT,
                json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": host, "publicKey": PUBLIC, "secretKey": SECRET } }),
            )
            .await;
        assert!(
            response.field_error("host").contains("private"),
            "{host}: {}",
            response.body
        );
        let tested = app
            .gql(
                Some(&owner.access),
                TEST_UNSAVED,
                json!({ "o": "acme", "input": { "host": host, "publicKey": PUBLIC, "secretKey": SECRET } }),
            )
            .await;
        assert_eq!(tested.code(), "BAD_USER_INPUT", "{host}: {}", tested.body);
    }
    // http is refused outright here, for any host but loopback outside production.
    let http = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": "http://10.0.0.1", "publicKey": PUBLIC, "secretKey": SECRET } }),
        )
        .await;
    assert!(!http.field_error("host").is_empty());

    // A host that was public when saved but resolves to loopback when connecting (DNS
    // rebinding) is refused at connect time: the mock never hears from us.
    let server = langfuse(healthy(), one_project()).await;
    // (A public address given literally: this machine resolves no public names.)
    let saved = app
        .gql(
            Some(&owner.access),
            UPSERT,
            json!({ "o": "acme", "input": { "environment": "PRODUCTION", "host": "https://8.8.8.8", "publicKey": PUBLIC, "secretKey": SECRET } }),
        )
        .await;
    assert!(saved.body.get("errors").is_none(), "{}", saved.body);
    {
        use multipult::features::langfuse::entity::settings;
        use sea_orm::EntityTrait as _;
        use sea_orm::sea_query::Expr;
        let port = server.address().port();
        settings::Entity::update_many()
            .col_expr(
                settings::Column::Host,
                Expr::value(format!("http://localhost:{port}")),
            )
            .exec(&app.state.db)
            .await
            .unwrap();
    }
    let rebound = app
        .gql(
            Some(&owner.access),
            TEST_SAVED,
            json!({ "o": "acme", "e": "PRODUCTION" }),
        )
        .await;
    assert_eq!(
        rebound.data()["testLangfuseConnection"]["status"],
        "UNREACHABLE",
        "{}",
        rebound.body
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    // Listed in the allowlist, the same host is reached.
    let allowed = TestApp::spawn_with(config(|c| {
        c.block_private_hosts = true;
        c.host_allowlist = vec!["127.0.0.0/8".into(), "localhost".into()];
    }))
    .await;
    let owner = allowed.signed_up("owner@example.com").await;
    create_org(&allowed, &owner, "acme").await;
    let ok = allowed
        .gql(
            Some(&owner.access),
            TEST_UNSAVED,
            json!({ "o": "acme", "input": { "host": format!("http://localhost:{}", server.address().port()), "publicKey": PUBLIC, "secretKey": SECRET } }),
        )
        .await;
    assert_eq!(
        ok.data()["testLangfuseCredentials"]["status"],
        "OK",
        "{}",
        ok.body
    );
}

async fn alerts(app: &TestApp, session: &Session) -> Vec<String> {
    let response = app
        .gql(
            Some(&session.access),
            "{ notifications(filter: { kinds: [INTEGRATION_ALERT] }) { nodes { title } } }",
            json!({}),
        )
        .await;
    response.data()["notifications"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", response.body))
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn failing_checks_turn_down_alert_once_and_recovery_alerts_once() {
    // Each scrape below must read the gauges afresh (`HEALTH_CHECK_MAX_AGE`).
    let app = TestApp::spawn_with(|s| s.http.health_check_max_age = Duration::ZERO).await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let admin = member(&app, &owner, "acme", "admin@example.com", "ADMIN").await;
    let plain = member(&app, &owner, "acme", "member@example.com", "MEMBER").await;
    let server = langfuse(ResponseTemplate::new(503), one_project()).await;
    save(&app, &owner, "acme", "PRODUCTION", &server.uri()).await;

    // Subscribed over WebSocket, a member hears the change.
    let mut socket = ws::signed_in(&app, &plain, "graphql-transport-ws").await;
    ws::send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription { langfuseStatusChanged(organization: \"acme\") { environment status previousStatus message } }" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let status = || async {
        app.gql(
            Some(&owner.access),
            "{ langfuseStatus(organization: \"acme\", history: 100) { status consecutiveFailures history { scheduled } } }",
            json!({}),
        )
        .await
    };
    for round in 1..=4 {
        multipult::features::langfuse::run_checks(&app.state)
            .await
            .unwrap();
        let now = status().await;
        let environment = &now.data()["langfuseStatus"][0];
        assert_eq!(environment["consecutiveFailures"], round, "{}", now.body);
        assert_eq!(
            environment["status"],
            if round >= 3 { "DOWN" } else { "UNKNOWN" },
            "after {round} failures"
        );
    }
    let event = ws::next_json(&mut socket).await;
    assert_eq!(
        event["payload"]["data"]["langfuseStatusChanged"]["status"], "DOWN",
        "{event}"
    );
    assert_eq!(
        event["payload"]["data"]["langfuseStatusChanged"]["previousStatus"],
        "UNKNOWN"
    );

    // Owners and admins were told once; members were not.
    let down = "Langfuse (production) of Team acme is unreachable";
    assert_eq!(alerts(&app, &owner).await, vec![down.to_owned()]);
    assert_eq!(alerts(&app, &admin).await, vec![down.to_owned()]);
    assert!(alerts(&app, &plain).await.is_empty());
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .contains("langfuse_connection_up{organization=\"acme\",environment=\"PRODUCTION\"} 0"),
        "{metrics}"
    );

    // Recovery: one more notice, once.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/public/health"))
        .respond_with(healthy())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/public/projects"))
        .respond_with(one_project())
        .mount(&server)
        .await;
    multipult::features::langfuse::run_checks(&app.state)
        .await
        .unwrap();
    multipult::features::langfuse::run_checks(&app.state)
        .await
        .unwrap();
    let back = "Langfuse (production) of Team acme is back";
    assert_eq!(
        alerts(&app, &owner).await,
        vec![back.to_owned(), down.to_owned()]
    );
    assert_eq!(alerts(&app, &admin).await.len(), 2);
    let event = ws::next_json(&mut socket).await;
    assert_eq!(
        event["payload"]["data"]["langfuseStatusChanged"]["status"],
        "UP"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .contains("langfuse_connection_up{organization=\"acme\",environment=\"PRODUCTION\"} 1")
    );
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "langfuse.down").count(), 1);
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "langfuse.recovered")
            .count(),
        1
    );
    let history = status().await;
    assert_eq!(
        history.data()["langfuseStatus"][0]["history"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // A new host is a new configuration: the monitor's verdict starts over, and the gauge says
    // nothing until it has one (NaN, which no alert compares true).
    let moved = server.uri().replace("127.0.0.1", "localhost");
    save(&app, &owner, "acme", "PRODUCTION", &moved).await;
    let fresh = status().await;
    assert_eq!(
        fresh.data()["langfuseStatus"][0]["status"],
        "UNKNOWN",
        "{}",
        fresh.body
    );
    assert_eq!(fresh.data()["langfuseStatus"][0]["consecutiveFailures"], 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            "langfuse_connection_up{organization=\"acme\",environment=\"PRODUCTION\"} NaN"
        ),
        "{metrics}"
    );

    // Another organization's member cannot subscribe to it.
    let outsider = app.signed_up("outsider@example.com").await;
    let mut other = ws::signed_in(&app, &outsider, "graphql-transport-ws").await;
    ws::send(
        &mut other,
        json!({ "id": "x", "type": "subscribe", "payload": { "query": "subscription { langfuseStatusChanged(organization: \"acme\") { status } }" } }),
    )
    .await;
    // Refused when the stream is created: a result with the error, then the end.
    let refused = ws::next_json(&mut other).await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(refused["payload"]["data"], Value::Null);
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn with_two_instances_each_setting_is_checked_once_per_interval() {
    let (one, two) = TestApp::spawn_pair_with(|s| {
        let mut config = LangfuseConfig::for_tests();
        config.check_interval =
            multipult::infra::scheduler::Every::Interval(Duration::from_secs(1));
        s.set_section(config);
    })
    .await;
    let owner = one.signed_up("owner@example.com").await;
    create_org(&one, &owner, "acme").await;
    let server = langfuse(healthy(), one_project()).await;
    save(&one, &owner, "acme", "PRODUCTION", &server.uri()).await;
    let saved_at = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(3300)).await;

    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let mut jobs = Vec::new();
    for _ in 0..100 {
        jobs = multipult::entities::jobs::Entity::find()
            .filter(multipult::entities::jobs::Column::Kind.eq("langfuse_checks"))
            .all(&one.state.db)
            .await
            .unwrap();
        if jobs.iter().all(|j| j.state == "done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slots: Vec<i64> = jobs
        .iter()
        .map(|j| {
            serde_json::from_str::<multipult::infra::scheduler::Run>(&j.payload)
                .unwrap()
                .slot
        })
        .collect();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(unique.len(), slots.len(), "a slot ran twice: {slots:?}");
    // Runs whose slot came after the settings were saved each saw them; one just before may have.
    let after = slots.iter().filter(|slot| **slot * 1000 > saved_at).count();
    assert!(after >= 2, "{slots:?}");
    let checks = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/public/health")
        .count();
    // One check per run, however many instances: never two for one slot.
    assert!(
        (after..=after + 1).contains(&checks),
        "{after} runs after saving, {checks} checks"
    );
    // Both instances report the same status, whichever ran the checks.
    for app in [&one, &two] {
        let metrics = app.metrics_text().await;
        assert!(
            metrics.contains(
                "langfuse_connection_up{organization=\"acme\",environment=\"PRODUCTION\"} 1"
            ),
            "{metrics}"
        );
    }
}
