//! API keys: shown once, used over HTTP and WebSocket, scoped, rate limited per key, revoked,
//! expired and rotated — and never shown, logged or audited after their creation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{GqlResponse, Session, TestApp, read};
use crate::organizations::{create_org, member};
use crate::ws;

const CREATE_KEY: &str = "mutation($o: String!, $input: CreateApiKeyInput!) { createApiKey(organization: $o, input: $input) { key apiKey { id prefix environment scopes status } } }";
const ORG_NAME: &str = "{ organization(slug: \"acme\") { name } }";

async fn create(app: &TestApp, by: &Session, org: &str, input: Value) -> GqlResponse {
    app.gql(
        Some(&by.access),
        CREATE_KEY,
        json!({ "o": org, "input": input }),
    )
    .await
}

/// A production key of `org` with `scopes`, made by `by`.
pub async fn create_key(app: &TestApp, by: &Session, org: &str, scopes: &[&str]) -> String {
    let response = create(
        app,
        by,
        org,
        json!({ "name": "ci", "environment": "PRODUCTION", "scopes": scopes }),
    )
    .await;
    response.data()["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", response.body))
        .to_owned()
}

/// The id of `org`'s newest key.
pub async fn key_id(app: &TestApp, by: &Session, org: &str) -> String {
    let response = app
        .gql(
            Some(&by.access),
            "query($o: String!) { apiKeys(organization: $o) { id } }",
            json!({ "o": org }),
        )
        .await;
    response.data()["apiKeys"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", response.body))
        .to_owned()
}

/// `{ organization(slug: "acme") { name } }` with `key` as a bearer token.
pub async fn org_name_with_key(app: &TestApp, key: &str) -> GqlResponse {
    app.gql(Some(key), ORG_NAME, json!({})).await
}

#[tokio::test]
async fn a_key_is_shown_once_scoped_and_never_logged_or_audited() {
    let logs = crate::helpers::capture_logs();
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let made = create(
        &app,
        &owner,
        "acme",
        json!({ "name": "deploy bot", "environment": "PRODUCTION", "scopes": ["org:read", "org:manage", "members:read"] }),
    )
    .await;
    let key = made.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = &made.data()["createApiKey"]["apiKey"];
    assert!(
        key.starts_with("mpk_prod_") && key.len() == "mpk_prod_".len() + 40,
        "{key}"
    );
    assert!(key.starts_with(shown["prefix"].as_str().unwrap()));
    assert_eq!(shown["status"], "ACTIVE");
    assert_eq!(
        shown["scopes"],
        json!(["members:read", "org:manage", "org:read"])
    );

    // Listed afterwards by its prefix only.
    let listed = app
        .gql(
            Some(&owner.access),
            "{ apiKeys(organization: \"acme\") { id name prefix environment scopes lastUsedAt } }",
            json!({}),
        )
        .await;
    assert_eq!(listed.data()["apiKeys"][0]["name"], "deploy bot");
    assert!(!listed.body.to_string().contains(&key));

    // Used as a bearer token and as X-Api-Key.
    assert_eq!(
        org_name_with_key(&app, &key).await.data()["organization"]["name"],
        "Team acme"
    );
    let (status, _, body) = read(
        app.client
            .post(app.url("/graphql"))
            .header("x-api-key", &key)
            .json(&json!({ "query": "{ organization(slug: \"acme\") { viewerRole viewerPermissions members { totalCount } } }" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["organization"]["viewerRole"], Value::Null);
    assert_eq!(
        body["data"]["organization"]["viewerPermissions"],
        json!(["members:read", "org:manage", "org:read"])
    );
    assert_eq!(body["data"]["organization"]["members"]["totalCount"], 1);

    // Outside its scopes: FORBIDDEN; fields for people: FORBIDDEN; other organizations: NOT_FOUND.
    for (query, code) in [
        ("{ apiKeys(organization: \"acme\") { id } }", "FORBIDDEN"),
        (
            "{ organization(slug: \"acme\") { invitations { id } } }",
            "FORBIDDEN",
        ),
        ("{ me { id } }", "FORBIDDEN"),
        ("{ myOrganizations { slug } }", "FORBIDDEN"),
        ("{ notifications { totalCount } }", "FORBIDDEN"),
        ("{ allUsers { totalCount } }", "FORBIDDEN"),
        ("{ organization(slug: \"other\") { name } }", "NOT_FOUND"),
    ] {
        let response = app.gql(Some(&key), query, json!({})).await;
        assert_eq!(response.code(), code, "{query}: {}", response.body);
    }
    // Keys do not make keys.
    let minted_by_key = app
        .gql(
            Some(&key),
            CREATE_KEY,
            json!({ "o": "acme", "input": { "name": "x", "environment": "DEVELOPMENT", "scopes": ["org:read"] } }),
        )
        .await;
    assert_eq!(minted_by_key.code(), "FORBIDDEN");

    // A change made with the key is audited in its name.
    let renamed = app
        .gql(
            Some(&key),
            "mutation { updateOrganization(organization: \"acme\", name: \"Acme Inc\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        renamed.data()["updateOrganization"]["name"],
        "Acme Inc",
        "{}",
        renamed.body
    );
    let entries = app.audit_entries().await;
    let by_key = entries
        .iter()
        .find(|e| e.action == "organization.update")
        .unwrap();
    assert_eq!(by_key.actor_id, None);
    assert_eq!(
        by_key.actor_api_key_id.map(|id| id.to_string()).as_deref(),
        shown["id"].as_str()
    );
    let metadata: Value = serde_json::from_str(&by_key.metadata).unwrap();
    assert_eq!(metadata["apiKey"]["name"], "deploy bot");
    assert_eq!(metadata["apiKey"]["prefix"], shown["prefix"]);

    // The key appears in no audit entry and no log line.
    for entry in &entries {
        assert!(!format!("{entry:?}").contains(&key), "{entry:?}");
    }
    let lines = logs.lines();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(!line.to_string().contains(&key[9..]), "{line}");
    }
}

#[tokio::test]
async fn scopes_are_checked_against_the_creators_own_permissions() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let admin = member(&app, &owner, "acme", "admin@example.com", "ADMIN").await;
    let plain = member(&app, &owner, "acme", "member@example.com", "MEMBER").await;
    let input = |scopes: Value| json!({ "name": "k", "environment": "STAGING", "scopes": scopes });

    let beyond = create(&app, &admin, "acme", input(json!(["org:own"]))).await;
    assert_eq!(beyond.code(), "BAD_USER_INPUT");
    assert!(
        beyond.field_error("scopes").contains("org:own"),
        "{}",
        beyond.body
    );
    let unknown = create(&app, &admin, "acme", input(json!(["admin:read"]))).await;
    assert!(
        unknown
            .field_error("scopes")
            .contains("not an organization permission")
    );
    let empty = create(&app, &admin, "acme", input(json!([]))).await;
    assert_eq!(empty.code(), "BAD_USER_INPUT");
    let many: Vec<String> = (0..1000).map(|_| "org:read".to_owned()).collect();
    let flood = create(&app, &admin, "acme", input(json!(many))).await;
    assert!(
        flood.field_error("scopes").starts_with("name at most"),
        "{}",
        flood.body
    );
    let past = create(
        &app,
        &admin,
        "acme",
        json!({ "name": "k", "environment": "STAGING", "scopes": ["org:read"], "expiresAt": "2001-01-01T00:00:00Z" }),
    )
    .await;
    assert!(!past.field_error("expiresAt").is_empty(), "{}", past.body);
    let by_member = create(&app, &plain, "acme", input(json!(["org:read"]))).await;
    assert_eq!(by_member.code(), "FORBIDDEN");
    let fine = create(
        &app,
        &admin,
        "acme",
        input(json!(["org:read", "apikeys:read"])),
    )
    .await;
    let key = fine.data()["createApiKey"]["key"].as_str().unwrap();
    assert!(key.starts_with("mpk_staging_"), "{}", fine.body);
    let listed = app
        .gql(
            Some(key),
            "{ apiKeys(organization: \"acme\") { environment } }",
            json!({}),
        )
        .await;
    assert_eq!(listed.data()["apiKeys"][0]["environment"], "STAGING");
}

#[tokio::test]
async fn a_key_works_over_websocket_and_its_socket_closes_when_it_is_revoked() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let key = create_key(&app, &owner, "acme", &["org:read"]).await;

    let mut socket = ws::connect(&app, "graphql-transport-ws").await.unwrap();
    ws::send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "apiKey": key } }),
    )
    .await;
    assert_eq!(ws::next_json(&mut socket).await["type"], "connection_ack");
    ws::send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": ORG_NAME } }),
    )
    .await;
    let next = ws::next_json(&mut socket).await;
    assert_eq!(
        next["payload"]["data"]["organization"]["name"], "Team acme",
        "{next}"
    );
    assert_eq!(ws::next_json(&mut socket).await["type"], "complete");

    let id = key_id(&app, &owner, "acme").await;
    let revoked = app
        .gql(
            Some(&owner.access),
            "mutation($id: ID!) { revokeApiKey(organization: \"acme\", id: $id) { status revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(revoked.data()["revokeApiKey"]["status"], "REVOKED");
    assert_eq!(ws::close_code(&mut socket).await, 4403);

    // A revoked key cannot open a socket either.
    let mut again = ws::connect(&app, "graphql-transport-ws").await.unwrap();
    ws::send(
        &mut again,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } }),
    )
    .await;
    assert_eq!(ws::close_code(&mut again).await, 4403);
}

#[tokio::test]
async fn keys_are_rate_limited_per_key_with_their_own_quota() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.api_key = multipult::config::Quota {
            limit: 3,
            window: Duration::from_secs(60),
        };
        s.graphql.api_key_budget = Some(multipult::config::Quota {
            limit: 50,
            window: Duration::from_secs(3600),
        });
    })
    .await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let first = create_key(&app, &owner, "acme", &["org:read"]).await;
    let second = create_key(&app, &owner, "acme", &["org:read"]).await;
    for _ in 0..3 {
        let ok = org_name_with_key(&app, &first).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.header("x-ratelimit-limit"), "3");
    }
    let limited = org_name_with_key(&app, &first).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "RATE_LIMITED");
    assert!(!limited.header("retry-after").is_empty());
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    assert!(
        limited.header("ratelimit-policy").contains("api_key"),
        "{:?}",
        limited.headers
    );
    // Another key, and the owner, have windows (and cost budgets) of their own.
    let budget = app
        .gql(
            Some(&second),
            "{ rateLimit { limit remaining } }",
            json!({}),
        )
        .await;
    assert_eq!(budget.data()["rateLimit"]["limit"], 50, "{}", budget.body);
    let owners = app
        .gql(Some(&owner.access), "{ rateLimit { limit } }", json!({}))
        .await;
    assert_ne!(owners.data()["rateLimit"]["limit"], 50, "{}", owners.body);
    assert_eq!(org_name_with_key(&app, &second).await.status, 200);
    let as_owner = app.gql(Some(&owner.access), ORG_NAME, json!({})).await;
    assert_eq!(as_owner.status, 200);

    // Guessed keys count against the caller's address like any anonymous call.
    let guess = format!("mpk_prod_{}", "A".repeat(40));
    let refused = app.gql(Some(&guess), ORG_NAME, json!({})).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_on_another_instance() {
    let (one, two) = TestApp::spawn_pair_with(|_| {}).await;
    let owner = one.signed_up("owner@example.com").await;
    create_org(&one, &owner, "acme").await;
    let key = create_key(&one, &owner, "acme", &["org:read"]).await;
    // Both instances have used (and cached) it.
    assert_eq!(org_name_with_key(&one, &key).await.code(), "");
    assert_eq!(org_name_with_key(&two, &key).await.code(), "");
    let id = key_id(&one, &owner, "acme").await;
    one.gql(
        Some(&owner.access),
        "mutation($id: ID!) { revokeApiKey(organization: \"acme\", id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let refused = org_name_with_key(&two, &key).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let made = create(
        &app,
        &owner,
        "acme",
        json!({ "name": "short", "environment": "DEVELOPMENT", "scopes": ["org:read"], "expiresAt": soon.to_rfc3339() }),
    )
    .await;
    let key = made.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("mpk_dev_"));
    assert_eq!(org_name_with_key(&app, &key).await.code(), "");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(org_name_with_key(&app, &key).await.status, 401);
    let listed = app
        .gql(
            Some(&owner.access),
            "{ apiKeys(organization: \"acme\") { status } }",
            json!({}),
        )
        .await;
    assert_eq!(listed.data()["apiKeys"][0]["status"], "EXPIRED");
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_its_grace_period_only() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let old = create_key(&app, &owner, "acme", &["org:read"]).await;
    let id = key_id(&app, &owner, "acme").await;
    assert_eq!(org_name_with_key(&app, &old).await.code(), "");
    const ROTATE: &str = "mutation($id: ID!, $g: Int) { rotateApiKey(organization: \"acme\", id: $id, gracePeriodSeconds: $g) { key apiKey { id prefix previousKeyExpiresAt } } }";

    let rotated = app
        .gql(Some(&owner.access), ROTATE, json!({ "id": id, "g": 3600 }))
        .await;
    let new = rotated.data()["rotateApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated.data()["rotateApiKey"]["apiKey"]["id"], json!(id));
    assert!(!rotated.data()["rotateApiKey"]["apiKey"]["previousKeyExpiresAt"].is_null());
    assert_eq!(
        org_name_with_key(&app, &old).await.code(),
        "",
        "old works in grace"
    );
    assert_eq!(org_name_with_key(&app, &new).await.code(), "");

    // Rotating again without grace ends both older secrets at once.
    let again = app
        .gql(Some(&owner.access), ROTATE, json!({ "id": id, "g": 0 }))
        .await;
    let newest = again.data()["rotateApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(org_name_with_key(&app, &old).await.status, 401);
    assert_eq!(org_name_with_key(&app, &new).await.status, 401);
    assert_eq!(org_name_with_key(&app, &newest).await.code(), "");

    let too_long = app
        .gql(
            Some(&owner.access),
            ROTATE,
            json!({ "id": id, "g": 9_999_999 }),
        )
        .await;
    assert!(!too_long.field_error("gracePeriodSeconds").is_empty());
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "api_key.rotate").count(), 2);
}

#[tokio::test]
async fn last_use_is_recorded_without_a_write_per_request() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let key = create_key(&app, &owner, "acme", &["org:read"]).await;
    const LAST_USED: &str = "{ apiKeys(organization: \"acme\") { lastUsedAt } }";
    for _ in 0..5 {
        assert_eq!(org_name_with_key(&app, &key).await.code(), "");
    }
    // No request wrote it.
    let unflushed = app.gql(Some(&owner.access), LAST_USED, json!({})).await;
    assert_eq!(unflushed.data()["apiKeys"][0]["lastUsedAt"], Value::Null);
    // The periodic flush (every 30 s, and at shutdown) writes one statement per key.
    let written = multipult::identity::api_keys::flush_usage(&app.state)
        .await
        .unwrap();
    assert_eq!(written, 1);
    let flushed = app.gql(Some(&owner.access), LAST_USED, json!({})).await;
    assert!(
        flushed.data()["apiKeys"][0]["lastUsedAt"].is_string(),
        "{}",
        flushed.body
    );
}
