//! Notifications: who sees what, cursor pages, preferences and the unsubscribe link, the
//! security notices identity and admin send, announcements, and the real-time subscriptions —
//! live, replayed from a cursor, across instances, and ended with the session.

use std::collections::HashSet;
use std::time::Duration;

use multipult::features::notifications::{self, Content, NotificationKind};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Session, TestApp};
use crate::ws::{Socket, close_code, connect, next_json, send, signed_in};

/// Notifies users straight through the service, as another feature would.
async fn notify(app: &TestApp, users: &[&Session], kind: NotificationKind, title: &str) {
    let ids: Vec<uuid::Uuid> = users
        .iter()
        .map(|s| uuid::Uuid::parse_str(&s.user_id).unwrap())
        .collect();
    let txn = multipult::infra::db::begin(&app.state.db).await.unwrap();
    let delivery = notifications::notify(
        &app.state,
        &txn,
        &ids,
        kind,
        &Content::new(title, format!("about {title}")).link("/somewhere"),
        None,
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    delivery.publish(&app.state).await;
}

const PAGE: &str = "query($first: Int!, $after: String, $filter: NotificationFilter) {
  notifications(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { cursor node { id kind title read link } }
    pageInfo { hasNextPage endCursor }
  }
}";

async fn page(app: &TestApp, session: &Session, first: i32, after: Option<&str>) -> Value {
    let response = app
        .gql(
            Some(&session.access),
            PAGE,
            json!({ "first": first, "after": after }),
        )
        .await;
    assert!(response.body.get("errors").is_none(), "{}", response.body);
    response.data()["notifications"].clone()
}

fn node_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn unread(app: &TestApp, session: &Session) -> u64 {
    let response = app
        .gql(
            Some(&session.access),
            "{ unreadNotificationCount }",
            json!({}),
        )
        .await;
    response.data()["unreadNotificationCount"].as_u64().unwrap()
}

/// Notification email jobs waiting (with workers off).
async fn mail_jobs(app: &TestApp) -> usize {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    multipult::entities::jobs::Entity::find()
        .filter(multipult::entities::jobs::Column::Kind.eq("notification_mail"))
        .all(&app.state.db)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_user_sees_only_their_own_and_another_users_ids_are_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.user_with_roles("alice@example.com", &[]).await;
    let bob = app.user_with_roles("bob@example.com", &[]).await;
    notify(&app, &[&alice], NotificationKind::Mention, "for alice").await;
    notify(&app, &[&bob], NotificationKind::Mention, "for bob").await;

    let mine = page(&app, &alice, 20, None).await;
    assert_eq!(mine["totalCount"], 1, "{mine}");
    assert_eq!(mine["edges"][0]["node"]["title"], "for alice");
    assert_eq!(mine["edges"][0]["node"]["link"], "/somewhere");
    let alices = node_ids(&mine)[0].clone();
    let bobs = node_ids(&page(&app, &bob, 20, None).await)[0].clone();

    for mutation in [
        "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) { id } }",
        "mutation($ids: [ID!]!) { markNotificationsUnread(ids: $ids) { id } }",
        "mutation($ids: [ID!]!) { deleteNotifications(ids: $ids) }",
    ] {
        for ids in [json!([bobs]), json!([alices, bobs]), json!(["not-an-id"])] {
            let response = app
                .gql(Some(&alice.access), mutation, json!({ "ids": ids }))
                .await;
            assert_eq!(
                response.code(),
                "NOT_FOUND",
                "{mutation} {ids}: {}",
                response.body
            );
        }
    }
    // Nothing changed for either.
    assert_eq!(unread(&app, &alice).await, 1);
    assert_eq!(unread(&app, &bob).await, 1);
    assert_eq!(page(&app, &bob, 20, None).await["totalCount"], 1);

    let read = app
        .gql(
            Some(&alice.access),
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) { id read readAt } }",
            json!({ "ids": [alices] }),
        )
        .await;
    assert_eq!(read.data()["markNotificationsRead"][0]["read"], true);
    assert_eq!(unread(&app, &alice).await, 0);
    let deleted = app
        .gql(
            Some(&alice.access),
            "mutation($ids: [ID!]!) { deleteNotifications(ids: $ids) }",
            json!({ "ids": [alices] }),
        )
        .await;
    assert_eq!(deleted.data()["deleteNotifications"], json!([alices]));
    assert_eq!(page(&app, &alice, 20, None).await["totalCount"], 0);

    // Anonymous callers get nothing.
    let anonymous = app
        .gql(None, "{ unreadNotificationCount }", json!({}))
        .await;
    assert_eq!(anonymous.code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn cursor_pages_return_every_notification_once_while_new_ones_arrive() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let user = app.user_with_roles("pager@example.com", &[]).await;
    for i in 0..23 {
        notify(&app, &[&user], NotificationKind::Reply, &format!("old {i}")).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let connection = page(&app, &user, 5, after.as_deref()).await;
        seen.extend(node_ids(&connection));
        // New notifications keep arriving between pages.
        notify(&app, &[&user], NotificationKind::Reply, "new").await;
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(seen.len(), 23, "{seen:?}");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        23,
        "no duplicates"
    );

    // Filters: unread only and kinds.
    let first = page(&app, &user, 1, None).await;
    let newest = node_ids(&first)[0].clone();
    app.gql(
        Some(&user.access),
        "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) { id } }",
        json!({ "ids": [newest] }),
    )
    .await;
    let filtered = app
        .gql(
            Some(&user.access),
            PAGE,
            json!({ "first": 50, "filter": { "unreadOnly": true, "kinds": ["REPLY"] } }),
        )
        .await;
    let total = first["totalCount"].as_u64().unwrap();
    assert!(filtered.body.get("errors").is_none(), "{}", filtered.body);
    assert_eq!(
        filtered.data()["notifications"]["totalCount"]
            .as_u64()
            .unwrap(),
        total - 1
    );
    let none = app
        .gql(
            Some(&user.access),
            PAGE,
            json!({ "first": 50, "filter": { "kinds": ["ANNOUNCEMENT"] } }),
        )
        .await;
    assert_eq!(none.data()["notifications"]["totalCount"], 0);

    // Bad input has a code.
    for (first, after) in [(0, None), (101, None), (5, Some("garbage"))] {
        let response = app
            .gql(
                Some(&user.access),
                "query($first: Int!, $after: String) { notifications(first: $first, after: $after) { totalCount } }",
                json!({ "first": first, "after": after }),
            )
            .await;
        assert_eq!(response.code(), "BAD_USER_INPUT", "{}", response.body);
    }
}

#[tokio::test]
async fn preferences_decide_rows_events_and_email_jobs() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let user = app.user_with_roles("prefs@example.com", &[]).await;
    let update = "mutation($p: [NotificationPreferenceInput!]!) {
      updateNotificationPreferences(preferences: $p) { kind inApp email inAppRequired }
    }";
    let changed = app
        .gql(
            Some(&user.access),
            update,
            json!({ "p": [
                { "kind": "MENTION", "email": false },
                { "kind": "REPLY", "inApp": false }
            ] }),
        )
        .await;
    let prefs = changed.data()["updateNotificationPreferences"]
        .as_array()
        .unwrap()
        .clone();
    let of = |kind: &str| prefs.iter().find(|p| p["kind"] == kind).unwrap().clone();
    assert_eq!(
        of("MENTION"),
        json!({ "kind": "MENTION", "inApp": true, "email": false, "inAppRequired": false })
    );
    assert_eq!(
        of("REPLY"),
        json!({ "kind": "REPLY", "inApp": false, "email": true, "inAppRequired": false })
    );
    assert_eq!(of("SECURITY")["inAppRequired"], true);

    // Email off: a row, no email job.
    let jobs = mail_jobs(&app).await;
    notify(&app, &[&user], NotificationKind::Mention, "mentioned").await;
    assert_eq!(unread(&app, &user).await, 1);
    assert_eq!(mail_jobs(&app).await, jobs);
    // In-app off: no row (but the email still goes).
    notify(&app, &[&user], NotificationKind::Reply, "replied").await;
    assert_eq!(unread(&app, &user).await, 1);
    assert_eq!(mail_jobs(&app).await, jobs + 1);
    // Both on (the default): a row and a job.
    notify(&app, &[&user], NotificationKind::IntegrationAlert, "alert").await;
    assert_eq!(unread(&app, &user).await, 2);
    assert_eq!(mail_jobs(&app).await, jobs + 2);

    // Security notices cannot be hidden; a kind named twice is refused.
    for p in [
        json!([{ "kind": "SECURITY", "inApp": false }]),
        json!([{ "kind": "REPLY", "email": false }, { "kind": "REPLY", "inApp": true }]),
    ] {
        let response = app.gql(Some(&user.access), update, json!({ "p": p })).await;
        assert_eq!(response.code(), "BAD_USER_INPUT", "{}", response.body);
    }
    let read_back = app
        .gql(
            Some(&user.access),
            "{ notificationPreferences { kind inApp email } }",
            json!({}),
        )
        .await;
    let reply = read_back.data()["notificationPreferences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "REPLY")
        .unwrap()
        .clone();
    assert_eq!(
        reply,
        json!({ "kind": "REPLY", "inApp": false, "email": true })
    );
}

/// The `List-Unsubscribe` URL of a mail.
fn unsubscribe_url(mail: &str) -> String {
    let start =
        mail.find("List-Unsubscribe: <").expect("List-Unsubscribe") + "List-Unsubscribe: <".len();
    let end = mail[start..].find('>').unwrap() + start;
    mail[start..end].replace("=\r\n", "")
}

async fn email_preference(app: &TestApp, session: &Session, kind: &str) -> bool {
    let response = app
        .gql(
            Some(&session.access),
            "{ notificationPreferences { kind email } }",
            json!({}),
        )
        .await;
    response.data()["notificationPreferences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind)
        .unwrap()["email"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn the_one_click_unsubscribe_link_flips_exactly_that_preference() {
    let app = TestApp::spawn().await;
    let user = app.user_with_roles("reader@example.com", &[]).await;
    let other = app.user_with_roles("other@example.com", &[]).await;
    notify(
        &app,
        &[&user],
        NotificationKind::Mention,
        "You were mentioned",
    )
    .await;
    let mail = app
        .wait_for_mail("reader@example.com", "You were mentioned")
        .await;
    assert!(
        mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mail}"
    );
    let url = unsubscribe_url(&mail);
    let path = url
        .split_once("/notifications/unsubscribe")
        .map(|(_, rest)| format!("/notifications/unsubscribe{rest}"))
        .unwrap();
    let token = path.split_once("token=").unwrap().1.to_owned();

    // The page changes nothing (mail scanners follow links).
    let shown = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    assert!(
        shown
            .text()
            .await
            .unwrap()
            .contains("<form method=\"post\"")
    );
    assert!(email_preference(&app, &user, "MENTION").await);

    // A tampered token, or one re-pointed at another user or kind, changes nothing.
    let (claim, mac) = token.rsplit_once('.').unwrap();
    let (_, kind) = claim.split_once('.').unwrap();
    let other_id = other.user_id.replace('-', "");
    let forged = [
        format!("{claim}.{}", mac.chars().rev().collect::<String>()),
        format!("{other_id}.{kind}.{mac}"),
        format!("{}.REPLY.{mac}", claim.split_once('.').unwrap().0),
        "garbage".to_owned(),
    ];
    for forged in forged {
        let response = app
            .client
            .post(app.url(&format!("/notifications/unsubscribe?token={forged}")))
            .body("List-Unsubscribe=One-Click")
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{forged}");
    }
    assert!(email_preference(&app, &other, "MENTION").await);
    assert!(email_preference(&app, &user, "REPLY").await);

    // The one-click POST (RFC 8058).
    let response = app
        .client
        .post(app.url(&path))
        .body("List-Unsubscribe=One-Click")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!email_preference(&app, &user, "MENTION").await);
    assert!(email_preference(&app, &user, "REPLY").await);
    assert!(email_preference(&app, &other, "MENTION").await);
}

#[tokio::test]
async fn identity_and_admin_changes_send_security_notices() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user_with_roles("secure@example.com", &[]).await;
    let titles = |connection: &Value| -> Vec<String> {
        connection["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["node"]["kind"] == "SECURITY")
            .map(|e| e["node"]["title"].as_str().unwrap().to_owned())
            .collect()
    };

    // A sign-in from a browser the account never used.
    let other_browser = reqwest::Client::builder()
        .user_agent("SomeOtherBrowser/1.0")
        .build()
        .unwrap();
    let response = other_browser
        .post(app.url("/graphql"))
        .json(&json!({ "query": crate::helpers::LOGIN, "variables": { "input": { "email": "secure@example.com", "password": PASSWORD } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        titles(&page(&app, &user, 50, None).await)
            .contains(&"New sign-in to your account".to_owned())
    );

    // A role change.
    let granted = app
        .gql(
            Some(&admin.access),
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [user.user_id] }),
        )
        .await;
    assert!(granted.body.get("errors").is_none(), "{}", granted.body);
    let user = app.login("secure@example.com", PASSWORD).await;
    assert!(titles(&page(&app, &user, 50, None).await).contains(&"You have a new role".to_owned()));

    // A password change: the notice survives the end of the other sessions.
    let changed = app
        .gql(
            Some(&user.access),
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { accessToken } }",
            json!({ "c": PASSWORD, "n": "another horse battery staple" }),
        )
        .await;
    assert!(changed.body.get("errors").is_none(), "{}", changed.body);
    let access = changed.data()["changePassword"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = Session { access, ..user };
    assert!(
        titles(&page(&app, &user, 50, None).await)
            .contains(&"Your password was changed".to_owned())
    );
    app.wait_for_mail("secure@example.com", "Your password was changed")
        .await;

    // A ban: the suspended account is told by email.
    let ban = app
        .gql(
            Some(&admin.access),
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": user.user_id }),
        )
        .await;
    assert!(ban.body.get("errors").is_none(), "{}", ban.body);
    let mail = app
        .wait_for_mail("secure@example.com", "Your account was suspended")
        .await;
    assert!(mail.contains("spam"), "{mail}");
}

#[tokio::test]
async fn an_announcement_to_a_role_reaches_exactly_its_holders_in_batches() {
    let app = TestApp::spawn_with(|s| {
        s.set_section(notifications::settings::NotificationSettings { broadcast_batch: 2 });
    })
    .await;
    let admin = app.admin().await;
    let mut moderators = Vec::new();
    for i in 0..5 {
        moderators.push(
            app.user_with_roles(&format!("mod{i}@example.com"), &["moderator"])
                .await,
        );
    }
    let plain = app.user_with_roles("plain@example.com", &[]).await;
    // One moderator does not want announcements by email.
    app.gql(
        Some(&moderators[0].access),
        "mutation { updateNotificationPreferences(preferences: [{ kind: ANNOUNCEMENT, email: false }]) { kind } }",
        json!({}),
    )
    .await;

    let broadcast = "mutation($input: BroadcastAnnouncementInput!) { broadcastAnnouncement(input: $input) { announcementId } }";
    // Only with the permission; exactly one audience.
    let refused = app
        .gql(
            Some(&moderators[1].access),
            broadcast,
            json!({ "input": { "title": "t", "body": "b", "audience": { "all": true } } }),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    for audience in [
        json!({}),
        json!({ "all": true, "roles": ["moderator"] }),
        json!({ "roles": ["no-such-role"] }),
    ] {
        let response = app
            .gql(
                Some(&admin.access),
                broadcast,
                json!({ "input": { "title": "t", "body": "b", "audience": audience } }),
            )
            .await;
        assert_eq!(
            response.code(),
            "BAD_USER_INPUT",
            "{audience}: {}",
            response.body
        );
    }

    let sent = app
        .gql(
            Some(&admin.access),
            broadcast,
            json!({ "input": {
                "title": "Maintenance tonight",
                "body": "<p>We <b>upgrade</b> at 22:00.</p><script>alert(1)</script>",
                "audience": { "roles": ["moderator"] },
                "email": true
            } }),
        )
        .await;
    assert!(sent.body.get("errors").is_none(), "{}", sent.body);

    // Every moderator gets it (in three batches of at most two), nobody else does.
    for moderator in &moderators {
        let mut found = Value::Null;
        // The batches run as background jobs: allow for a busy machine.
        for _ in 0..600 {
            let connection = page(moderator, &app).await;
            // The page and `totalCount` are two statements: a batch may land
            // between them, so wait for the edge itself.
            if connection["edges"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                found = connection;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = &found["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["kind"] == "ANNOUNCEMENT")
            .expect("the announcement")["node"];
        assert_eq!(node["title"], "Maintenance tonight");
    }
    async fn page(session: &Session, app: &TestApp) -> Value {
        let response = app
            .gql(
                Some(&session.access),
                "{ notifications(first: 10, filter: { kinds: [ANNOUNCEMENT] }) { totalCount edges { node { kind title body } } } }",
                json!({}),
            )
            .await;
        response.data()["notifications"].clone()
    }
    let body = page(&moderators[1], &app).await["edges"][0]["node"]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        body.contains("<b>upgrade</b>") && !body.contains("script"),
        "{body}"
    );
    assert_eq!(page(&plain, &app).await["totalCount"], 0);
    assert_eq!(page(&admin, &app).await["totalCount"], 0);

    // By email per preference.
    for i in 1..5 {
        app.wait_for_mail(&format!("mod{i}@example.com"), "Maintenance tonight")
            .await;
    }
    assert!(
        !app.outbox()
            .iter()
            .any(|m| m.contains("To: mod0@example.com") && m.contains("Maintenance tonight")),
        "email off means no email"
    );
    assert!(
        !app.outbox()
            .iter()
            .any(|m| m.contains("To: plain@example.com") && m.contains("Maintenance tonight"))
    );
    let audited = app.audit_entries().await;
    assert!(
        audited
            .iter()
            .any(|e| e.action == "notifications.broadcast")
    );
}

// --- subscriptions ---

/// A socket initialised with `session`'s token.
async fn socket(app: &TestApp, session: &Session, protocol: &str) -> Socket {
    signed_in(app, session, protocol).await
}

async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(
        socket,
        json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } }),
    )
    .await;
}

const ADDED: &str =
    "subscription($after: String) { notificationAdded(after: $after) { id title cursor kind } }";

/// The next `next` payload of operation `id`.
async fn next_of(socket: &mut Socket, id: &str) -> Value {
    loop {
        let message = next_json(socket).await;
        if message["id"] == id {
            assert_eq!(message["type"], "next", "{message}");
            return message["payload"]["data"].clone();
        }
    }
}

/// Waits until the hub has the subscription (subscribing is asynchronous).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn subscribers_receive_their_notifications_and_unread_counts_live() {
    let app = TestApp::spawn().await;
    let user = app.user_with_roles("live@example.com", &[]).await;
    let stranger = app.user_with_roles("stranger@example.com", &[]).await;
    let mut socket = socket(&app, &user, "graphql-transport-ws").await;
    subscribe(&mut socket, "added", ADDED, json!({})).await;
    subscribe(
        &mut socket,
        "count",
        "subscription { unreadCountChanged }",
        json!({}),
    )
    .await;
    assert_eq!(next_of(&mut socket, "count").await["unreadCountChanged"], 0);
    settle().await;

    notify(&app, &[&stranger], NotificationKind::Mention, "not yours").await;
    notify(&app, &[&user], NotificationKind::Mention, "yours").await;
    let added = next_of(&mut socket, "added").await;
    assert_eq!(added["notificationAdded"]["title"], "yours");
    assert_eq!(next_of(&mut socket, "count").await["unreadCountChanged"], 1);

    let done = app
        .gql(
            Some(&user.access),
            "mutation { markAllNotificationsRead }",
            json!({}),
        )
        .await;
    assert_eq!(done.data()["markAllNotificationsRead"], 1);
    assert_eq!(next_of(&mut socket, "count").await["unreadCountChanged"], 0);

    // Anonymous sockets may not subscribe to a viewer's streams.
    let mut anonymous = connect(&app, "graphql-transport-ws").await.unwrap();
    crate::ws::init(&mut anonymous).await;
    subscribe(&mut anonymous, "a", ADDED, json!({})).await;
    let refused = next_json(&mut anonymous).await;
    // A resolver's error: a `next` with errors, then `complete` (graphql-transport-ws).
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    assert_eq!(next_json(&mut anonymous).await["type"], "complete");
}

#[tokio::test]
async fn reconnecting_with_the_last_cursor_replays_the_missed_then_live_ones_none_twice() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let user = app.user_with_roles("replay@example.com", &[]).await;
    let mut first = socket(&app, &user, "graphql-transport-ws").await;
    subscribe(&mut first, "n", ADDED, json!({})).await;
    settle().await;
    notify(&app, &[&user], NotificationKind::Reply, "one").await;
    let one = next_of(&mut first, "n").await["notificationAdded"].clone();
    drop(first);

    // Missed while away.
    for title in ["two", "three", "four"] {
        notify(&app, &[&user], NotificationKind::Reply, title).await;
    }
    let mut second = socket(&app, &user, "graphql-transport-ws").await;
    subscribe(&mut second, "n", ADDED, json!({ "after": one["cursor"] })).await;
    // Created while the backlog is being read or just after: delivered once.
    let racing = {
        let state = app.state.clone();
        let user_id = uuid::Uuid::parse_str(&user.user_id).unwrap();
        tokio::spawn(async move {
            let txn = multipult::infra::db::begin(&state.db).await.unwrap();
            let delivery = notifications::notify(
                &state,
                &txn,
                &[user_id],
                NotificationKind::Reply,
                &Content::new("five", "racing the replay"),
                None,
            )
            .await
            .unwrap();
            txn.commit().await.unwrap();
            delivery.publish(&state).await;
        })
    };
    let mut titles = Vec::new();
    for _ in 0..4 {
        titles.push(
            next_of(&mut second, "n").await["notificationAdded"]["title"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    racing.await.unwrap();
    assert_eq!(&titles[..3], ["two", "three", "four"], "{titles:?}");
    assert_eq!(titles[3], "five");
    settle().await;
    notify(&app, &[&user], NotificationKind::Reply, "six").await;
    let live = next_of(&mut second, "n").await;
    assert_eq!(
        live["notificationAdded"]["title"], "six",
        "nothing twice: {live}"
    );
}

const SESSION_EVENTS: &str = "subscription { sessionEvents { reason message at } }";

/// A socket watching its session; returns it once the subscription is registered.
async fn watching_session(app: &TestApp, session: &Session, protocol: &str) -> Socket {
    let mut socket = socket(app, session, protocol).await;
    subscribe(&mut socket, "s", SESSION_EVENTS, json!({})).await;
    settle().await;
    socket
}

/// The session event, then the close code.
async fn farewell(socket: &mut Socket) -> (String, u16) {
    let event = loop {
        let message = next_json(socket).await;
        if message["id"] == "s" {
            assert!(
                message["type"] == "next" || message["type"] == "data",
                "{message}"
            );
            break message["payload"]["data"]["sessionEvents"]["reason"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    };
    (event, close_code(socket).await)
}

#[tokio::test]
async fn session_events_tell_the_reason_before_the_socket_closes_with_4403() {
    let app = TestApp::spawn_with(|s| s.auth.access_token_ttl = Duration::from_secs(3)).await;
    let admin = app.user_with_roles("boss@example.com", &["admin"]).await;

    // Logout of this session (legacy subprotocol too).
    let user = app.user_with_roles("out@example.com", &[]).await;
    let mut socket = watching_session(&app, &user, "graphql-ws").await;
    app.gql(Some(&user.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(
        farewell(&mut socket).await,
        ("SESSION_REVOKED".to_owned(), 4403)
    );

    // A password change elsewhere.
    let user = app.user_with_roles("pw@example.com", &[]).await;
    let elsewhere = app.login("pw@example.com", PASSWORD).await;
    let mut socket = watching_session(&app, &user, "graphql-transport-ws").await;
    let changed = app
        .gql(
            Some(&elsewhere.access),
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { accessToken } }",
            json!({ "c": PASSWORD, "n": "another horse battery staple" }),
        )
        .await;
    assert!(changed.body.get("errors").is_none(), "{}", changed.body);
    assert_eq!(
        farewell(&mut socket).await,
        ("PASSWORD_CHANGED".to_owned(), 4403)
    );

    // A ban.
    let user = app.user_with_roles("banme@example.com", &[]).await;
    let mut socket = watching_session(&app, &user, "graphql-transport-ws").await;
    app.gql(
        Some(&admin.access),
        "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
        json!({ "id": user.user_id }),
    )
    .await;
    assert_eq!(farewell(&mut socket).await, ("BANNED".to_owned(), 4403));

    // The access token's expiry.
    let user = app.user_with_roles("expire@example.com", &[]).await;
    let mut socket = watching_session(&app, &user, "graphql-transport-ws").await;
    assert_eq!(
        farewell(&mut socket).await,
        ("TOKEN_EXPIRED".to_owned(), 4403)
    );
}

#[tokio::test]
async fn connections_per_user_are_bounded() {
    let app = TestApp::spawn_with(|s| s.websocket.max_connections_per_user = 2).await;
    let user = app.user_with_roles("many@example.com", &[]).await;
    let _one = socket(&app, &user, "graphql-transport-ws").await;
    let _two = socket(&app, &user, "graphql-transport-ws").await;
    let mut three = connect(&app, "graphql-transport-ws").await.unwrap();
    send(
        &mut three,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", user.access) } }),
    )
    .await;
    assert_eq!(close_code(&mut three).await, 4429);
    // Another user is not affected.
    let other = app.user_with_roles("few@example.com", &[]).await;
    let _theirs = socket(&app, &other, "graphql-transport-ws").await;
}

#[tokio::test]
async fn events_cross_instances_both_ways() {
    let (a, b) = TestApp::spawn_pair_with(|_| {}).await;
    let admin = a.admin().await;
    let user = a.user_with_roles("far@example.com", &[]).await;
    let mut on_b = socket(&b, &user, "graphql-transport-ws").await;
    subscribe(&mut on_b, "n", ADDED, json!({})).await;
    subscribe(&mut on_b, "s", SESSION_EVENTS, json!({})).await;
    settle().await;

    // A notification created through instance A reaches the subscriber on B.
    let granted = a
        .gql(
            Some(&admin.access),
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [user.user_id] }),
        )
        .await;
    assert!(granted.body.get("errors").is_none(), "{}", granted.body);
    let added = next_of(&mut on_b, "n").await;
    assert_eq!(added["notificationAdded"]["title"], "You have a new role");
    assert_eq!(added["notificationAdded"]["kind"], "SECURITY");

    // A ban on A ends the session on B: the reason first, then 4403.
    a.gql(
        Some(&admin.access),
        "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
        json!({ "id": user.user_id }),
    )
    .await;
    assert_eq!(farewell(&mut on_b).await, ("BANNED".to_owned(), 4403));
}
