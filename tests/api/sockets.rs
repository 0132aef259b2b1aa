//! A WebSocket follows its session: every operation runs with the caller's current state and
//! counts against the same limits as HTTP, and the socket closes with 4403 when the session ends
//! — token expiry, logout, revocation, ban, deletion — on whichever instance that happened.

use std::time::Duration;

use multipult::config::Quota;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp};
use crate::ws::{Socket, close_code, connect, next_json, send, signed_in};

/// A socket initialised with `session`'s access token, running a heartbeat subscription.
async fn watching(app: &TestApp, session: &Session) -> Socket {
    let mut socket = signed_in(app, session, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "beat", "payload": { "query": "subscription { heartbeat(intervalMs: 100) { sequence } }" } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
    socket
}

/// Runs one operation on the socket and returns its first message.
async fn operation(socket: &mut Socket, id: &str, query: &str, variables: Value) -> Value {
    send(
        socket,
        json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } }),
    )
    .await;
    loop {
        let message = next_json(socket).await;
        if message["id"] == id {
            return message;
        }
    }
}

/// The close code, skipping whatever the subscription still sends; panics after 5 s.
async fn closed_with(socket: &mut Socket) -> u16 {
    close_code(socket).await
}

#[tokio::test]
async fn a_socket_closes_with_4403_when_its_access_token_expires() {
    let app = TestApp::spawn_with(|s| s.auth.access_token_ttl = Duration::from_secs(2)).await;
    let session = app.signed_up("expiring@example.com").await;
    let mut socket = watching(&app, &session).await;
    assert_eq!(closed_with(&mut socket).await, 4403);
}

#[tokio::test]
async fn a_socket_closes_with_4403_on_logout_revocation_ban_and_deletion() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;

    // Logout of this session.
    let session = app.signed_up("leaving@example.com").await;
    let mut socket = watching(&app, &session).await;
    let logout = app
        .gql(Some(&session.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(logout.data()["logout"], true, "{}", logout.body);
    assert_eq!(closed_with(&mut socket).await, 4403, "logout");

    // Revocation from another session of the same user.
    let first = app
        .login("leaving@example.com", crate::helpers::PASSWORD)
        .await;
    let second = app
        .login("leaving@example.com", crate::helpers::PASSWORD)
        .await;
    let mut socket = watching(&app, &first).await;
    let sessions = app
        .gql(
            Some(&second.access),
            "{ sessions { id current } }",
            json!({}),
        )
        .await;
    let other = sessions.data()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .clone();
    let revoked = app
        .gql(
            Some(&second.access),
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(revoked.data()["revokeSession"], true, "{}", revoked.body);
    assert_eq!(closed_with(&mut socket).await, 4403, "revocation");

    // A ban.
    let banned = app.signed_up("banned@example.com").await;
    let mut socket = watching(&app, &banned).await;
    let ban = app
        .gql(
            Some(&admin.access),
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": banned.user_id }),
        )
        .await;
    assert!(ban.body.get("errors").is_none(), "{}", ban.body);
    assert_eq!(closed_with(&mut socket).await, 4403, "ban");

    // Deletion.
    let doomed = app.signed_up("doomed@example.com").await;
    let mut socket = watching(&app, &doomed).await;
    let deleted = app
        .gql(
            Some(&admin.access),
            "mutation($id: ID!) { deleteUserPermanently(userId: $id, confirmEmail: \"doomed@example.com\") }",
            json!({ "id": doomed.user_id }),
        )
        .await;
    assert!(deleted.body.get("errors").is_none(), "{}", deleted.body);
    assert_eq!(closed_with(&mut socket).await, 4403, "deletion");
}

#[tokio::test]
async fn a_demoted_admin_cannot_use_an_old_socket_to_take_power_back() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let fallen = app.user_with_roles("fallen@example.com", &["admin"]).await;
    let mut socket = watching(&app, &fallen).await;

    let demoted = app
        .gql(
            Some(&root.access),
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"admin\") { updated } }",
            json!({ "ids": [fallen.user_id] }),
        )
        .await;
    assert_eq!(
        demoted.data()["bulkRemoveRole"]["updated"],
        1,
        "{}",
        demoted.body
    );

    let regrant = operation(
        &mut socket,
        "regrant",
        "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"admin\") { updated } }",
        json!({ "ids": [fallen.user_id] }),
    )
    .await;
    assert_eq!(
        regrant["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{regrant}"
    );
    let roles = app
        .gql(
            Some(&root.access),
            "query($id: ID!) { user(id: $id) { roles { name } } }",
            json!({ "id": fallen.user_id }),
        )
        .await;
    assert!(
        !roles.data()["user"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "admin" })),
        "{}",
        roles.body
    );
}

#[tokio::test]
async fn a_ban_on_one_instance_closes_the_socket_on_the_other() {
    let (first, second) = TestApp::spawn_pair_with(|_| {}).await;
    let admin = first.admin().await;
    let user = first.signed_up("elsewhere@example.com").await;
    let mut socket = watching(&second, &user).await;
    let ban = first
        .gql(
            Some(&admin.access),
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": user.user_id }),
        )
        .await;
    assert!(ban.body.get("errors").is_none(), "{}", ban.body);
    assert_eq!(closed_with(&mut socket).await, 4403);
}

#[tokio::test]
async fn a_logout_on_one_instance_closes_the_socket_on_the_other() {
    let (first, second) = TestApp::spawn_pair_with(|_| {}).await;
    let user = first.signed_up("roaming@example.com").await;
    let mut socket = watching(&second, &user).await;
    first
        .gql(Some(&user.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(closed_with(&mut socket).await, 4403);
}

#[tokio::test]
async fn socket_operations_count_against_the_request_rate_limit() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.user = Quota {
            limit: 5,
            window: Duration::from_secs(60),
        };
    })
    .await;
    let user = app.signed_up("chatty@example.com").await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": user.access } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let mut refused = 0;
    for i in 0..10 {
        let message = operation(&mut socket, &format!("q{i}"), "{ __typename }", json!({})).await;
        if message["type"] == "error" {
            assert_eq!(message["payload"][0]["extensions"]["code"], "RATE_LIMITED");
            assert!(message["payload"][0]["extensions"]["retryAfter"].is_number());
            refused += 1;
        } else {
            assert_eq!(message["type"], "next", "{message}");
        }
    }
    // The signup and login used two of the five requests; the socket the rest.
    assert!(refused >= 5, "{refused} of 10 operations refused");
}

#[tokio::test]
async fn root_field_rules_apply_over_websocket_too() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = Quota {
            limit: 1000,
            window: Duration::from_secs(60),
        };
        s.rate_limit.rules = vec![(
            multipult::config::RuleTarget::Field("login".into()),
            Quota {
                limit: 3,
                window: Duration::from_secs(60),
            },
        )];
    })
    .await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    crate::ws::init(&mut socket).await;
    let login = "mutation { login(input: { email: \"x@example.com\", password: \"wrong password\" }) { accessToken } }";
    let mut codes = vec![];
    for i in 0..5 {
        let message = operation(&mut socket, &format!("l{i}"), login, json!({})).await;
        let code = if message["type"] == "error" {
            message["payload"][0]["extensions"]["code"].clone()
        } else {
            message["payload"]["errors"][0]["extensions"]["code"].clone()
        };
        codes.push(code.as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
}

#[tokio::test]
async fn socket_operations_spend_the_same_cost_budget_as_http() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.user_budget = Some(Quota {
            limit: 10,
            window: Duration::from_secs(3600),
        });
    })
    .await;
    let user = app.signed_up("spender@example.com").await;
    // Four points over HTTP…
    let spent = app
        .gql(
            Some(&user.access),
            "{ a: __typename b: __typename c: __typename d: __typename }",
            json!({}),
        )
        .await;
    assert!(spent.body.get("errors").is_none(), "{}", spent.body);
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": user.access } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    // …four over the socket, then the next four do not fit in the ten.
    let query = "{ a: __typename b: __typename c: __typename d: __typename }";
    let first = operation(&mut socket, "a", query, json!({})).await;
    assert_eq!(first["type"], "next", "{first}");
    let second = operation(&mut socket, "b", query, json!({})).await;
    assert_eq!(second["type"], "error", "{second}");
    assert_eq!(second["payload"][0]["extensions"]["code"], "RATE_LIMITED");
}
