//! The fast paths: the viewer's own data comes with authentication (no SQL), and every change
//! to it shows on the next request, on every instance.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::helpers::TestApp;

const ME: &str =
    "{ me { id email displayName lastLoginAt roles { name description } permissions } }";

async fn me(app: &TestApp, token: &str) -> Value {
    let (status, _, body) = app.graphql_as(Some(token), ME, json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["me"].clone()
}

#[tokio::test]
async fn the_viewers_own_data_runs_no_sql() {
    // No job worker polling its table meanwhile (every statement counted is the request's), and
    // no response cache: identity-aware loading alone runs no SQL.
    let app = TestApp::spawn_with(|s| {
        s.jobs.workers = 0;
        s.cache.responses = false;
    })
    .await;
    let session = app
        .user_with_roles("fast@example.com", &["moderator"])
        .await;
    // The first request loads (and caches) the caller's state.
    let first = me(&app, &session.access).await;
    assert_eq!(first["email"], "fast@example.com");
    let before = app.statements.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(me(&app, &session.access).await, first);
    }
    let after = app.statements.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "me {{ … roles permissions }} ran SQL");
    let roles: Vec<&str> = first["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "moderator"]);
    assert!(
        first["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("admin:read"))
    );
}

#[tokio::test]
async fn another_users_data_is_never_served_from_the_viewers() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let other = app.signed_up("other@example.com").await;
    let (_, _, body) = app
        .graphql_as(
            Some(&admin.access),
            "query($id: ID!) { me { email roles { name } } user(id: $id) { email roles { name } permissions } }",
            json!({ "id": other.user_id }),
        )
        .await;
    assert_eq!(body["data"]["me"]["email"], "root@example.com", "{body}");
    assert_eq!(body["data"]["user"]["email"], "other@example.com", "{body}");
    assert_eq!(body["data"]["user"]["roles"], json!([{ "name": "user" }]));
    assert_eq!(body["data"]["user"]["permissions"], json!([]));
}

#[tokio::test]
async fn every_change_shows_on_the_next_read_on_every_instance() {
    let (first, second) = TestApp::spawn_pair_with(|_| {}).await;
    let admin = first.admin().await;
    let user = first.signed_up("changes@example.com").await;
    // Warm both instances' view of the user.
    me(&first, &user.access).await;
    me(&second, &user.access).await;

    // A profile update through instance A shows through instance B.
    let (_, _, body) = first
        .graphql_as(
            Some(&user.access),
            "mutation { updateProfile(input: { displayName: \"New Name\" }) { displayName } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["displayName"], "New Name",
        "{body}"
    );
    assert_eq!(me(&second, &user.access).await["displayName"], "New Name");

    // A role given through A shows through B.
    let (_, _, body) = first
        .graphql_as(
            Some(&admin.access),
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [user.user_id] }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let seen = me(&second, &user.access).await;
    assert!(
        seen["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "moderator"),
        "{seen}"
    );
    assert!(
        seen["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("admin:read"))
    );

    // A new sign-in changes lastLoginAt.
    let before = seen["lastLoginAt"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = first
        .login("changes@example.com", crate::helpers::PASSWORD)
        .await;
    assert_ne!(me(&second, &again.access).await["lastLoginAt"], before);

    // A ban through A: the next request through B is refused.
    let (_, _, body) = first
        .graphql_as(
            Some(&admin.access),
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": user.user_id }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let (status, _, body) = second.graphql_as(Some(&again.access), ME, json!({})).await;
    assert_eq!(status, 401, "{body}");
}
