//! The admin API and its audit trail.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sea_orm::{ConnectionTrait as _, DatabaseBackend};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, REFRESH, Session, TestApp, code, header};

async fn gql(app: &TestApp, session: &Session, query: &str, vars: Value) -> Value {
    app.graphql_as(Some(&session.access), query, vars).await.2
}

#[tokio::test]
async fn every_admin_operation_needs_its_permission() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let plain = app.signed_up("plain@example.com").await;
    let target = app.signed_up("target@example.com").await;
    let t = target.user_id.as_str();
    let operations = [
        ("{ allUsers { totalCount } }", json!({})),
        ("{ systemStats { users { total } } }", json!({})),
        ("{ roles { name } }", json!({})),
        ("{ auditLog { totalCount } }", json!({})),
        (
            "query($id: ID!) { user(id: $id) { email isBanned } }",
            json!({ "id": t }),
        ),
        (
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": t }),
        ),
        (
            "mutation($id: ID!) { unbanUser(userId: $id) { id } }",
            json!({ "id": t }),
        ),
        (
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [t] }),
        ),
        (
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [t] }),
        ),
        (
            "mutation { createRole(name: \"editor\", permissions: [\"users:read\"]) { name } }",
            json!({}),
        ),
        (
            "mutation { updateRolePermissions(name: \"editor\", permissions: []) { name } }",
            json!({}),
        ),
        ("mutation { deleteRole(name: \"editor\") }", json!({})),
        (
            "mutation($id: ID!) { deleteUserPermanently(userId: $id, confirmEmail: \"target@example.com\") }",
            json!({ "id": t }),
        ),
    ];
    for (query, vars) in &operations {
        let (_, _, anonymous) = app.graphql_as(None, query, vars.clone()).await;
        assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{query}: {anonymous}");
        let forbidden = gql(&app, &plain, query, vars.clone()).await;
        assert_eq!(code(&forbidden), "FORBIDDEN", "{query}: {forbidden}");
    }
    for (query, vars) in operations {
        let allowed = gql(&app, &admin, query, vars).await;
        assert!(allowed.get("errors").is_none(), "{query}: {allowed}");
    }
}

#[tokio::test]
async fn all_users_filters_searches_orders_and_pages() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for i in 0..24 {
        let email = format!("member{i:02}@example.com");
        let session = app.signed_up(&email).await;
        if i % 3 == 0 {
            app.grant_role(&session.user_id, "moderator").await;
        }
        if i % 4 == 0 {
            multipult::identity::accounts::set_active(
                &app.state,
                uuid::Uuid::parse_str(&session.user_id).unwrap(),
                false,
            )
            .await
            .unwrap();
        }
    }
    app.signed_up("Needle.Person@Example.com").await;
    let (_, _, profile) = app
        .graphql_as(
            Some(&app.login("needle.person@example.com", PASSWORD).await.access),
            "mutation { updateProfile(input: { displayName: \"Héloïse NEEDLE\", username: \"needle_user\" }) { username } }",
            json!({}),
        )
        .await;
    assert!(profile.get("errors").is_none(), "{profile}");

    let list = |vars: Value| {
        let admin = admin.clone();
        let app = &app;
        async move {
            gql(
                app,
                &admin,
                "query($f: UserFilter, $o: UserOrder, $l: Int!, $off: Int!) { allUsers(filter: $f, orderBy: $o, limit: $l, offset: $off) { totalCount limit offset items { email } } }",
                vars,
            )
            .await
        }
    };
    let emails = |body: &Value| -> Vec<String> {
        body["data"]["allUsers"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    };

    // 24 members + needle + admin.
    let all = list(json!({ "l": 100, "off": 0 })).await;
    assert_eq!(all["data"]["allUsers"]["totalCount"], 26, "{all}");

    let moderators = list(json!({ "f": { "roleName": "moderator" }, "l": 100, "off": 0 })).await;
    assert_eq!(moderators["data"]["allUsers"]["totalCount"], 8);
    let inactive = list(json!({ "f": { "isActive": false }, "l": 100, "off": 0 })).await;
    assert_eq!(inactive["data"]["allUsers"]["totalCount"], 6);
    let both =
        list(json!({ "f": { "isActive": false, "roleName": "moderator" }, "l": 100, "off": 0 }))
            .await;
    assert_eq!(
        both["data"]["allUsers"]["totalCount"], 2,
        "members 0 and 12"
    );

    for term in ["NEEDLE", "needle_u", "héloïse", "person@example"] {
        let found = list(json!({ "f": { "search": term }, "l": 10, "off": 0 })).await;
        assert_eq!(
            emails(&found),
            vec!["needle.person@example.com"],
            "{term}: {found}"
        );
    }
    // LIKE wildcards are taken literally.
    let literal = list(json!({ "f": { "search": "%" }, "l": 10, "off": 0 })).await;
    assert_eq!(literal["data"]["allUsers"]["totalCount"], 0);

    let ordered = list(json!({ "f": { "search": "member" }, "o": { "field": "EMAIL", "direction": "ASC" }, "l": 5, "off": 5 })).await;
    assert_eq!(
        emails(&ordered),
        vec![
            "member05@example.com",
            "member06@example.com",
            "member07@example.com",
            "member08@example.com",
            "member09@example.com"
        ]
    );
    assert_eq!(ordered["data"]["allUsers"]["totalCount"], 24);
    assert_eq!(ordered["data"]["allUsers"]["offset"], 5);
    let last = list(json!({ "f": { "search": "member" }, "o": { "field": "EMAIL", "direction": "DESC" }, "l": 1, "off": 0 })).await;
    assert_eq!(emails(&last), vec!["member23@example.com"]);

    let future =
        list(json!({ "f": { "createdAfter": "2999-01-01T00:00:00Z" }, "l": 10, "off": 0 })).await;
    assert_eq!(future["data"]["allUsers"]["totalCount"], 0);

    let too_many = list(json!({ "l": 101, "off": 0 })).await;
    assert_eq!(code(&too_many), "BAD_USER_INPUT", "{too_many}");
    assert!(too_many["errors"][0]["extensions"]["fields"]["limit"].is_string());
    let negative = list(json!({ "l": 10, "off": -1 })).await;
    assert_eq!(code(&negative), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_ban_ends_sessions_at_once_and_login_says_banned_until_unbanned() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let victim = app.signed_up("victim@example.com").await;
    let ban = "mutation($id: ID!, $until: DateTime) { banUser(userId: $id, reason: \"abuse\", until: $until) { isBanned banReason } }";
    let banned = gql(&app, &admin, ban, json!({ "id": victim.user_id })).await;
    assert_eq!(
        banned["data"]["banUser"],
        json!({ "isBanned": true, "banReason": "abuse" }),
        "{banned}"
    );

    assert_eq!(
        app.graphql_as(Some(&victim.access), "{ me { id } }", json!({}))
            .await
            .0,
        401
    );
    let (_, _, refresh) = app
        .graphql_as(None, REFRESH, json!({ "t": victim.refresh }))
        .await;
    assert_eq!(code(&refresh), "UNAUTHENTICATED");
    let login = app.login_body("victim@example.com", PASSWORD).await;
    assert_eq!(code(&login), "ACCOUNT_BANNED", "{login}");

    let unbanned = gql(
        &app,
        &admin,
        "mutation($id: ID!) { unbanUser(userId: $id) { isBanned } }",
        json!({ "id": victim.user_id }),
    )
    .await;
    assert_eq!(unbanned["data"]["unbanUser"]["isBanned"], false);
    assert!(app.login_body("victim@example.com", PASSWORD).await["data"]["login"].is_object());

    // A timed ban ends by itself.
    let until = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let timed = gql(
        &app,
        &admin,
        ban,
        json!({ "id": victim.user_id, "until": until }),
    )
    .await;
    assert_eq!(timed["data"]["banUser"]["isBanned"], true);
    let login = app.login_body("victim@example.com", PASSWORD).await;
    assert_eq!(code(&login), "ACCOUNT_BANNED");
    assert!(login["errors"][0]["extensions"]["bannedUntil"].is_string());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(app.login_body("victim@example.com", PASSWORD).await["data"]["login"].is_object());

    let past = gql(
        &app,
        &admin,
        ban,
        json!({ "id": victim.user_id, "until": "2000-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(code(&past), "BAD_USER_INPUT");
}

#[tokio::test]
async fn admins_cannot_lock_the_system_out_of_administration() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // Admin actions only (sign-ins of the accounts made below are audited too).
    let admin_entries = || async {
        app.audit_entries()
            .await
            .into_iter()
            .filter(|e| !e.action.starts_with("auth."))
            .count()
    };
    let before = admin_entries().await;
    let me = admin.user_id.as_str();

    let cases = [
        (
            "mutation($id: ID!) { banUser(userId: $id, reason: \"x\") { id } }",
            json!({ "id": me }),
            "SELF_ACTION",
        ),
        (
            "mutation($id: ID!) { deleteUserPermanently(userId: $id, confirmEmail: \"root@example.com\") }",
            json!({ "id": me }),
            "SELF_ACTION",
        ),
        (
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"admin\") { updated } }",
            json!({ "ids": [me] }),
            "SELF_ACTION",
        ),
        (
            "mutation { deleteRole(name: \"admin\") }",
            json!({}),
            "SYSTEM_ROLE",
        ),
        (
            "mutation { updateRolePermissions(name: \"admin\", permissions: []) { name } }",
            json!({}),
            "ADMIN_ROLE",
        ),
    ];
    for (query, vars, reason) in cases {
        let body = gql(&app, &admin, query, vars).await;
        assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["reason"], reason, "{query}");
    }

    // A second admin (not the last one) can act on the first — but not once it is the last.
    let other = app.user_with_roles("other@example.com", &["admin"]).await;
    multipult::identity::accounts::set_active(
        &app.state,
        uuid::Uuid::parse_str(&other.user_id).unwrap(),
        false,
    )
    .await
    .unwrap();
    let second = app.user_with_roles("second@example.com", &["admin"]).await;
    let body = gql(
        &app,
        &second,
        "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"admin\") { updated } }",
        json!({ "ids": [me] }),
    )
    .await;
    assert_eq!(body["data"]["bulkRemoveRole"]["updated"], 1, "{body}");
    // Now `second` is the last active admin; the (former) admin cannot act anyway, and `second`
    // cannot remove itself.
    let body = gql(
        &app,
        &second,
        "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"admin\") { updated } }",
        json!({ "ids": [second.user_id] }),
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "SELF_ACTION");

    // Nothing changed but the one successful demotion: one new audit entry.
    assert_eq!(admin_entries().await, before + 1);
    let (_, _, me_now) = app
        .graphql_as(Some(&second.access), "{ me { roles { name } } }", json!({}))
        .await;
    assert!(
        me_now["data"]["me"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "admin" }))
    );
}

#[tokio::test]
async fn a_moderator_can_neither_ban_nor_demote_an_admin_who_outranks_them() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // A role that may ban and change roles, but holds less than an admin.
    let operator = app
        .user_with_roles("operator@example.com", &["moderator"])
        .await;
    let ban = gql(
        &app,
        &operator,
        "mutation($id: ID!) { banUser(userId: $id, reason: \"coup\") { id } }",
        json!({ "id": admin.user_id }),
    )
    .await;
    assert_eq!(
        ban["errors"][0]["extensions"]["reason"], "INSUFFICIENT_RANK",
        "{ban}"
    );
    let demote = gql(
        &app,
        &operator,
        "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"admin\") { updated } }",
        json!({ "ids": [admin.user_id] }),
    )
    .await;
    // Taking `admin` needs holding every permission of it.
    assert_eq!(
        demote["errors"][0]["extensions"]["reason"], "ROLE_NOT_GRANTABLE",
        "{demote}"
    );
    assert_eq!(
        app.graphql_as(Some(&admin.access), "{ me { id } }", json!({}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn bulk_assign_reports_unknown_ids_and_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let mut ids = vec![];
    for i in 0..6 {
        ids.push(app.signed_up(&format!("bulk{i}@example.com")).await.user_id);
    }
    app.grant_role(&ids[0], "moderator").await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut with_ghost = ids.clone();
    with_ghost.push(ghost.clone());
    let assign = "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated unchanged notFound } }";
    let body = gql(&app, &admin, assign, json!({ "ids": with_ghost })).await;
    assert_eq!(
        body["data"]["bulkAssignRole"],
        json!({ "updated": 5, "unchanged": 1, "notFound": [ghost] }),
        "{body}"
    );

    let too_many: Vec<String> = (0..501).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let body = gql(&app, &admin, assign, json!({ "ids": too_many })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let unknown_role = gql(
        &app,
        &admin,
        "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"wizard\") { updated } }",
        json!({ "ids": [ids[0]] }),
    )
    .await;
    assert_eq!(code(&unknown_role), "NOT_FOUND");

    // A database failure part way (on the 4th of 6 users) undoes everything: no role, no entry.
    let audit_before = app.audit_entries().await.len();
    let doomed = ids[3].clone();
    let db = &app.state.db;
    let blob = |id: &str| uuid::Uuid::parse_str(id).unwrap().as_simple().to_string();
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            db.execute_unprepared(&format!(
                "CREATE TRIGGER fail_bulk BEFORE INSERT ON user_roles WHEN hex(NEW.user_id) = upper('{}') OR NEW.user_id = '{}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
                blob(&doomed), doomed
            ))
            .await
            .unwrap();
        }
        _ => {
            db.execute_unprepared(&format!(
                "CREATE FUNCTION fail_bulk() RETURNS trigger AS $$ BEGIN IF NEW.user_id = '{doomed}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
                 CREATE TRIGGER fail_bulk BEFORE INSERT ON user_roles FOR EACH ROW EXECUTE FUNCTION fail_bulk();"
            ))
            .await
            .unwrap();
        }
    }
    let body = gql(
        &app,
        &admin,
        "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"admin\") { updated } }",
        json!({ "ids": ids }),
    )
    .await;
    assert_eq!(code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    assert!(
        !body.to_string().contains("injected"),
        "no internals leak: {body}"
    );
    assert_eq!(app.audit_entries().await.len(), audit_before);
    let admins = gql(
        &app,
        &admin,
        "{ allUsers(filter: { roleName: \"admin\" }) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        admins["data"]["allUsers"]["totalCount"], 1,
        "nobody became admin: {admins}"
    );
}

#[tokio::test]
async fn permanent_deletion_removes_everything_but_the_audit_entry() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let gone = app.signed_up("Gone@Example.com").await;
    let delete =
        "mutation($id: ID!, $e: String!) { deleteUserPermanently(userId: $id, confirmEmail: $e) }";
    let wrong = gql(
        &app,
        &admin,
        delete,
        json!({ "id": gone.user_id, "e": "someone@example.com" }),
    )
    .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT");
    assert!(wrong["errors"][0]["extensions"]["fields"]["confirmEmail"].is_string());

    let done = gql(
        &app,
        &admin,
        delete,
        json!({ "id": gone.user_id, "e": "gone@example.com" }),
    )
    .await;
    assert_eq!(done["data"]["deleteUserPermanently"], true, "{done}");
    assert_eq!(
        app.graphql_as(Some(&gone.access), "{ me { id } }", json!({}))
            .await
            .0,
        401
    );
    let (_, _, refresh) = app
        .graphql_as(None, REFRESH, json!({ "t": gone.refresh }))
        .await;
    assert_eq!(code(&refresh), "UNAUTHENTICATED");
    let lookup = gql(
        &app,
        &admin,
        "query($id: ID!) { user(id: $id) { id } }",
        json!({ "id": gone.user_id }),
    )
    .await;
    assert!(lookup["data"]["user"].is_null());
    for table in ["refresh_tokens", "user_roles", "email_tokens"] {
        let id = uuid::Uuid::parse_str(&gone.user_id).unwrap();
        let rows = app
            .state
            .db
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                app.state.db.get_database_backend(),
                format!(
                    "SELECT user_id FROM {table} WHERE user_id = {}",
                    if app.state.db.get_database_backend() == DatabaseBackend::Postgres {
                        "$1"
                    } else {
                        "?"
                    }
                ),
                [id.into()],
            ))
            .await
            .unwrap();
        assert!(
            rows.is_empty(),
            "{table} still has rows of the deleted user"
        );
    }
    let entry = app
        .audit_entries()
        .await
        .into_iter()
        .find(|e| e.action == "user.delete")
        .unwrap();
    assert_eq!(entry.target_id.as_deref(), Some(gone.user_id.as_str()));
    let metadata: Value = serde_json::from_str(&entry.metadata).unwrap();
    assert_eq!(metadata["email"], "gone@example.com");
}

#[tokio::test]
async fn each_admin_mutation_leaves_exactly_its_audit_entry_with_the_request_id() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let target = app.signed_up("audited@example.com").await;
    let t = target.user_id.as_str();
    let cases = [
        (
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": t }),
            "user.ban",
            Some(t.to_owned()),
        ),
        (
            "mutation($id: ID!) { unbanUser(userId: $id) { id } }",
            json!({ "id": t }),
            "user.unban",
            Some(t.to_owned()),
        ),
        (
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [t] }),
            "role.bulk_assign",
            Some("moderator".to_owned()),
        ),
        (
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [t] }),
            "role.bulk_remove",
            Some("moderator".to_owned()),
        ),
        (
            "mutation { createRole(name: \"support\", permissions: [\"users:read\"]) { name } }",
            json!({}),
            "role.create",
            Some("support".to_owned()),
        ),
        (
            "mutation { updateRolePermissions(name: \"support\", permissions: [\"audit:read\"]) { name } }",
            json!({}),
            "role.update_permissions",
            Some("support".to_owned()),
        ),
        (
            "mutation { deleteRole(name: \"support\") }",
            json!({}),
            "role.delete",
            Some("support".to_owned()),
        ),
        (
            "mutation($id: ID!) { deleteUserPermanently(userId: $id, confirmEmail: \"audited@example.com\") }",
            json!({ "id": t }),
            "user.delete",
            Some(t.to_owned()),
        ),
    ];
    for (query, vars, action, target_id) in cases {
        let before = app.audit_entries().await.len();
        let (status, headers, body) = app.graphql_as(Some(&admin.access), query, vars).await;
        assert_eq!(status, 200);
        assert!(body.get("errors").is_none(), "{query}: {body}");
        let entries = app.audit_entries().await;
        assert_eq!(entries.len(), before + 1, "{action}");
        let entry = &entries[0];
        assert_eq!(entry.action, action);
        assert_eq!(
            entry.actor_id.map(|id| id.to_string()),
            Some(admin.user_id.clone())
        );
        assert_eq!(entry.actor_email.as_deref(), Some("root@example.com"));
        assert_eq!(entry.target_id, target_id, "{action}");
        assert_eq!(
            entry.request_id.as_deref(),
            Some(header(&headers, "x-request-id")),
            "{action}"
        );
        assert_eq!(entry.ip.as_deref(), Some("127.0.0.1"));
    }

    // The log is readable (with filters) through the API.
    let log = gql(
        &app,
        &admin,
        "query($a: ID) { auditLog(filter: { actorId: $a, action: \"user.ban\" }) { totalCount items { action actorEmail targetId metadata } } }",
        json!({ "a": admin.user_id }),
    )
    .await;
    assert_eq!(log["data"]["auditLog"]["totalCount"], 1, "{log}");
    assert_eq!(
        log["data"]["auditLog"]["items"][0]["metadata"]["reason"],
        "spam"
    );
}

#[tokio::test]
async fn sign_in_events_are_audited() {
    let app = TestApp::spawn().await;
    app.signed_up("events@example.com").await;
    app.login_body("events@example.com", "definitely wrong")
        .await;
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"auth.login".to_owned()), "{actions:?}");
    assert!(
        actions.contains(&"auth.login_failed".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn listing_users_with_roles_runs_a_bounded_number_of_statements() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let admin = app.admin().await;
    let query =
        "{ allUsers(limit: 100) { totalCount items { email roles { name } permissions } } }";
    let mut counts = vec![];
    for batch in [5, 40] {
        for i in 0..batch {
            app.user_with_roles(&format!("n{batch}-{i}@example.com"), &["moderator"])
                .await;
        }
        // Warm up the caller's cached state, then count one request.
        gql(&app, &admin, "{ me { id } }", json!({})).await;
        let before = app.statements.load(Ordering::SeqCst);
        let body = gql(&app, &admin, query, json!({})).await;
        let after = app.statements.load(Ordering::SeqCst);
        assert!(
            body["data"]["allUsers"]["items"].as_array().unwrap().len() > batch,
            "{body}"
        );
        counts.push(after - before);
    }
    // A count, a page, one batch of roles, one of permissions (a batch may split in two under
    // load): far below one query per user either way.
    assert!(
        counts.iter().all(|c| *c <= 8),
        "statements must not grow with the users: {counts:?}"
    );
}

#[tokio::test]
async fn system_stats_count_what_is_there() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    app.signed_up("s1@example.com").await;
    let s2 = app.signed_up("s2@example.com").await;
    gql(
        &app,
        &admin,
        "mutation($id: ID!) { banUser(userId: $id, reason: \"x\") { id } }",
        json!({ "id": s2.user_id }),
    )
    .await;
    let stats = gql(&app, &admin, "{ systemStats { users { total active verified banned newLast30Days } roleDistribution { role users } auditEntriesLast24Hours jobs { pending dead } databaseBackend version uptimeSeconds } }", json!({})).await;
    let s = &stats["data"]["systemStats"];
    assert_eq!(s["users"]["total"], 3, "{stats}");
    assert_eq!(s["users"]["banned"], 1);
    assert_eq!(
        s["users"]["verified"], 1,
        "only the admin (created verified)"
    );
    assert_eq!(s["users"]["newLast30Days"], 3);
    assert!(
        s["roleDistribution"]
            .as_array()
            .unwrap()
            .contains(&json!({ "role": "admin", "users": 1 }))
    );
    assert!(
        s["auditEntriesLast24Hours"].as_u64().unwrap() >= 4,
        "logins and the ban"
    );
    assert!(["sqlite", "postgres"].contains(&s["databaseBackend"].as_str().unwrap()));
}

#[tokio::test]
async fn retention_removes_only_entries_older_than_configured() {
    let app = TestApp::spawn_with(|s| {
        s.set_section(multipult::features::audit::settings::AuditSettings {
            retention_days: Some(30),
            retention_interval: multipult::infra::scheduler::Every::Interval(
                Duration::from_millis(200),
            ),
        });
    })
    .await;
    use sea_orm::{ActiveModelTrait as _, Set};
    multipult::entities::audit_log::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        actor_id: Set(None),
        actor_email: Set(None),
        actor_api_key_id: Set(None),
        organization_id: Set(None),
        action: Set("ancient.event".into()),
        target_type: Set(None),
        target_id: Set(None),
        request_id: Set(None),
        ip: Set(None),
        user_agent: Set(None),
        metadata: Set("{}".into()),
        created_at: Set(chrono::Utc::now() - chrono::Duration::days(31)),
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    app.signed_up("recent@example.com").await;
    for _ in 0..50 {
        if !app
            .audit_entries()
            .await
            .iter()
            .any(|e| e.action == "ancient.event")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        !actions.contains(&"ancient.event".to_owned()),
        "{actions:?}"
    );
    assert!(actions.contains(&"auth.login".to_owned()));
}

#[tokio::test]
async fn audit_entries_resolve_their_actors_in_one_batch() {
    // No job workers: the sign-ups' mail jobs would otherwise run statements of their own
    // while the one request is being counted.
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let admin = app.admin().await;
    for i in 0..15 {
        app.signed_up(&format!("actor{i}@example.com")).await;
    }
    let query = "{ auditLog(limit: 100) { totalCount items { action actor { email } } } }";
    gql(&app, &admin, "{ me { id } }", json!({})).await;
    let before = app.statements.load(Ordering::SeqCst);
    let body = gql(&app, &admin, query, json!({})).await;
    let statements = app.statements.load(Ordering::SeqCst) - before;
    let items = body["data"]["auditLog"]["items"].as_array().unwrap();
    assert!(items.len() >= 16, "{body}");
    assert!(
        items
            .iter()
            .any(|e| e["actor"]["email"] == "actor7@example.com"),
        "{body}"
    );
    assert!(
        statements <= 5,
        "one count, one page, one batch of actors: {statements}"
    );
}

/// The rank rules (`identity::rank`) on every admin mutation: what a moderator (and a custom
/// role holding `admin:delete` and `roles:manage` but not everything) may not do, and that an
/// admin still may.
#[tokio::test]
async fn every_admin_mutation_respects_rank_and_grant_rules() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let moderator = app.user_with_roles("mod@example.com", &["moderator"]).await;
    let peer = app
        .user_with_roles("peer@example.com", &["moderator"])
        .await;
    let other_admin = app.user_with_roles("admin2@example.com", &["admin"]).await;
    let plain = app.signed_up("plain@example.com").await;
    // A custom role that may delete users and manage roles, but lacks the rest.
    let created = gql(
        &app,
        &root,
        "mutation { createRole(name: \"janitor\", permissions: [\"admin:read\", \"admin:delete\", \"roles:manage\"]) { name } }",
        json!({}),
    )
    .await;
    assert!(created.get("errors").is_none(), "{created}");
    let janitor = app
        .user_with_roles("janitor@example.com", &["janitor"])
        .await;

    let ban = "mutation($id: ID!) { banUser(userId: $id, reason: \"x\") { id } }";
    let unban = "mutation($id: ID!) { unbanUser(userId: $id) { id } }";
    let assign = |role: &str| {
        format!(
            "mutation($ids: [ID!]!) {{ bulkAssignRole(userIds: $ids, role: \"{role}\") {{ updated }} }}"
        )
    };
    let remove = |role: &str| {
        format!(
            "mutation($ids: [ID!]!) {{ bulkRemoveRole(userIds: $ids, role: \"{role}\") {{ updated }} }}"
        )
    };
    let delete = |email: &str| {
        format!(
            "mutation($id: ID!) {{ deleteUserPermanently(userId: $id, confirmEmail: \"{email}\") }}"
        )
    };

    let refused: Vec<(&str, &Session, String, Value, &str)> = vec![
        ("moderator grants itself admin", &moderator, assign("admin"), json!({ "ids": [moderator.user_id] }), "ROLE_NOT_GRANTABLE"),
        ("moderator grants a user admin", &moderator, assign("admin"), json!({ "ids": [plain.user_id] }), "ROLE_NOT_GRANTABLE"),
        ("moderator bans an admin", &moderator, ban.to_owned(), json!({ "id": other_admin.user_id }), "INSUFFICIENT_RANK"),
        ("moderator bans a peer", &moderator, ban.to_owned(), json!({ "id": peer.user_id }), "INSUFFICIENT_RANK"),
        ("moderator unbans a peer", &moderator, unban.to_owned(), json!({ "id": peer.user_id }), "INSUFFICIENT_RANK"),
        ("moderator demotes a peer", &moderator, remove("moderator"), json!({ "ids": [peer.user_id] }), "INSUFFICIENT_RANK"),
        ("moderator takes admin away", &moderator, remove("admin"), json!({ "ids": [other_admin.user_id] }), "ROLE_NOT_GRANTABLE"),
        ("janitor deletes an admin", &janitor, delete("admin2@example.com"), json!({ "id": other_admin.user_id }), "INSUFFICIENT_RANK"),
        ("janitor deletes a moderator", &janitor, delete("mod@example.com"), json!({ "id": moderator.user_id }), "INSUFFICIENT_RANK"),
        ("janitor mints a role with more than it holds", &janitor, "mutation { createRole(name: \"super\", permissions: [\"admin:update\"]) { name } }".to_owned(), json!({}), "ROLE_NOT_GRANTABLE"),
        ("janitor widens a role", &janitor, "mutation { updateRolePermissions(name: \"janitor\", permissions: [\"admin:read\", \"admin:delete\", \"roles:manage\", \"admin:update\"]) { name } }".to_owned(), json!({}), "ROLE_NOT_GRANTABLE"),
        ("janitor strips the moderator role", &janitor, "mutation { updateRolePermissions(name: \"moderator\", permissions: []) { name } }".to_owned(), json!({}), "ROLE_NOT_GRANTABLE"),
    ];
    let entries_before = app.audit_entries().await.len();
    for (name, actor, query, vars, reason) in &refused {
        let body = gql(&app, actor, query, vars.clone()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{name}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["reason"], *reason,
            "{name}: {body}"
        );
    }
    assert_eq!(
        app.audit_entries().await.len(),
        entries_before,
        "no refused change was made or audited"
    );
    let me = gql(&app, &moderator, "{ me { roles { name } } }", json!({})).await;
    assert!(
        !me["data"]["me"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "admin" })),
        "{me}"
    );

    // What each may do.
    let allowed: Vec<(&str, &Session, String, Value)> = vec![
        (
            "moderator bans a user",
            &moderator,
            ban.to_owned(),
            json!({ "id": plain.user_id }),
        ),
        (
            "moderator unbans them",
            &moderator,
            unban.to_owned(),
            json!({ "id": plain.user_id }),
        ),
        (
            "moderator grants moderator to a user",
            &moderator,
            assign("moderator"),
            json!({ "ids": [plain.user_id] }),
        ),
        (
            "admin bans another admin",
            &root,
            ban.to_owned(),
            json!({ "id": other_admin.user_id }),
        ),
        (
            "admin unbans them",
            &root,
            unban.to_owned(),
            json!({ "id": other_admin.user_id }),
        ),
        (
            "admin demotes a moderator",
            &root,
            remove("moderator"),
            json!({ "ids": [peer.user_id] }),
        ),
        (
            "janitor deletes a plain user",
            &janitor,
            delete("peer@example.com"),
            json!({ "id": peer.user_id }),
        ),
    ];
    for (name, actor, query, vars) in allowed {
        let body = gql(&app, actor, &query, vars).await;
        assert!(body.get("errors").is_none(), "{name}: {body}");
    }
}

#[tokio::test]
async fn a_page_without_total_count_runs_one_statement() {
    let app = TestApp::spawn_with(|s| {
        s.jobs.workers = 0;
        s.cache.responses = false;
    })
    .await;
    let admin = app.admin().await;
    for i in 0..5 {
        app.signed_up(&format!("page{i}@example.com")).await;
    }
    gql(&app, &admin, "{ me { id } }", json!({})).await;
    let count = |query: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let before = app.statements.load(Ordering::SeqCst);
            let body = gql(app, admin, query, json!({})).await;
            assert!(body["errors"].is_null(), "{body}");
            (app.statements.load(Ordering::SeqCst) - before, body)
        }
    };
    let (without, body) = count("{ allUsers(limit: 20) { items { email } } }").await;
    assert_eq!(without, 1, "the page alone");
    assert_eq!(
        body["data"]["allUsers"]["items"].as_array().unwrap().len(),
        6
    );
    let (with, body) = count("{ allUsers(limit: 2) { totalCount items { email } } }").await;
    assert_eq!(with, 2, "the page and its count");
    assert_eq!(body["data"]["allUsers"]["totalCount"], 6);
}

#[tokio::test]
async fn dead_jobs_are_listed_without_payloads_and_can_be_retried() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let plain = app.signed_up("plain@example.com").await;
    let id = app
        .state
        .jobs
        .enqueue(
            &app.state.db,
            "audit_retention",
            &json!({ "private": "do-not-show" }),
            None,
        )
        .await
        .unwrap();
    // Let the worker finish it, then make it a dead letter.
    tokio::time::sleep(Duration::from_millis(300)).await;
    multipult::entities::jobs::Entity::update_many()
        .col_expr(
            multipult::entities::jobs::Column::State,
            Expr::value("dead"),
        )
        .col_expr(
            multipult::entities::jobs::Column::LastError,
            Expr::value("smtp down"),
        )
        .filter(multipult::entities::jobs::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();

    const JOBS: &str = "{ jobs { totalCount items { id kind state attempts lastError } } }";
    let listed = gql(&app, &admin, JOBS, json!({})).await;
    assert_eq!(listed["data"]["jobs"]["totalCount"], 1, "{listed}");
    assert_eq!(
        listed["data"]["jobs"]["items"][0]["kind"],
        "audit_retention"
    );
    assert_eq!(listed["data"]["jobs"]["items"][0]["lastError"], "smtp down");
    assert!(!listed.to_string().contains("do-not-show"));
    assert_eq!(code(&gql(&app, &plain, JOBS, json!({})).await), "FORBIDDEN");

    const RETRY: &str = "mutation($id: ID!) { retryJob(id: $id) { state attempts } }";
    let retried = gql(&app, &admin, RETRY, json!({ "id": id })).await;
    assert_eq!(retried["data"]["retryJob"]["state"], "PENDING", "{retried}");
    assert_eq!(retried["data"]["retryJob"]["attempts"], 0);
    // Not dead any more: a second retry finds nothing.
    let again = gql(&app, &admin, RETRY, json!({ "id": id })).await;
    assert_eq!(code(&again), "NOT_FOUND");
    assert_eq!(
        code(&gql(&app, &plain, RETRY, json!({ "id": id })).await),
        "FORBIDDEN"
    );
    // It runs again.
    for _ in 0..100 {
        let done = gql(
            &app,
            &admin,
            "{ jobs(state: DONE) { items { id } } }",
            json!({}),
        )
        .await;
        if done.to_string().contains(&id.to_string()) {
            let actions: Vec<String> = app
                .audit_entries()
                .await
                .into_iter()
                .map(|e| e.action)
                .collect();
            assert!(actions.contains(&"job.retry".to_owned()));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the retried job did not run");
}

/// `allUsers` selects only the columns its items' fields read (`User::columns_for`): every field
/// the schema gives `User`, asked alone, alongside others, through a fragment and under an
/// alias, answers what the same field answers on the whole row (`user(id:)`). Each column holds
/// a value unlike its placeholder for some user, so a field mapped to too few columns shows.
#[tokio::test]
async fn every_field_of_a_listed_user_matches_the_whole_row() {
    use chrono::{Duration as Span, Utc};
    use multipult::entities::users;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let app = TestApp::spawn_with(|s| s.cache.responses = false).await;
    let admin = app.admin().await;
    let moderator = app.user_with_roles("mod@example.com", &["moderator"]).await;
    let banned = app.signed_up("banned@example.com").await;
    let served = app.signed_up("served@example.com").await;
    app.signed_up("plain@example.com").await;
    let now = Utc::now();
    let set = |id: &str, column: users::Column, value: Expr| {
        let id = uuid::Uuid::parse_str(id).unwrap();
        let db = app.state.db.clone();
        async move {
            users::Entity::update_many()
                .col_expr(column, value)
                .filter(users::Column::Id.eq(id))
                .exec(&db)
                .await
                .unwrap();
        }
    };
    let m = moderator.user_id.as_str();
    set(m, users::Column::Username, Expr::value("moddy")).await;
    set(m, users::Column::DisplayName, Expr::value("The Mod")).await;
    set(m, users::Column::IsVerified, Expr::value(true)).await;
    let b = banned.user_id.as_str();
    set(b, users::Column::BannedAt, Expr::value(now)).await;
    set(b, users::Column::BanReason, Expr::value("spam")).await;
    set(
        b,
        users::Column::BannedUntil,
        Expr::value(now + Span::days(3)),
    )
    .await;
    set(b, users::Column::IsActive, Expr::value(false)).await;
    // A ban that ended: banned_at without banned_until would read as banned.
    let s = served.user_id.as_str();
    set(s, users::Column::BannedAt, Expr::value(now - Span::days(9))).await;
    set(
        s,
        users::Column::BannedUntil,
        Expr::value(now - Span::days(2)),
    )
    .await;

    // Every field of `User`, with a selection of the scalar fields under an object type.
    let introspect = |name: String| {
        let app = &app;
        let admin = &admin;
        async move {
            let q = "query($n: String!) { __type(name: $n) { fields { name args { name } \
                     type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }";
            gql(app, admin, q, json!({ "n": name })).await["data"]["__type"]["fields"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let named = |mut t: &Value| {
        while t["name"].is_null() {
            t = &t["ofType"];
        }
        (
            t["kind"].as_str().unwrap().to_owned(),
            t["name"].as_str().unwrap().to_owned(),
        )
    };
    let mut selections = Vec::new();
    for field in introspect("User".into()).await {
        assert!(field["args"].as_array().unwrap().is_empty(), "{field}");
        let name = field["name"].as_str().unwrap().to_owned();
        let (kind, type_name) = named(&field["type"]);
        if kind == "OBJECT" {
            let inner: Vec<String> = introspect(type_name)
                .await
                .iter()
                .filter(|f| named(&f["type"]).0 == "SCALAR")
                .map(|f| f["name"].as_str().unwrap().to_owned())
                .collect();
            selections.push(format!("{name} {{ {} }}", inner.join(" ")));
        } else {
            selections.push(name);
        }
    }
    assert!(selections.len() >= 16, "{selections:?}");

    let whole = |id: String, selection: String| {
        let app = &app;
        let admin = &admin;
        async move {
            let q = format!("query($id: ID!) {{ user(id: $id) {{ id {selection} }} }}");
            let body = gql(app, admin, &q, json!({ "id": id })).await;
            assert!(body.get("errors").is_none(), "{body}");
            body["data"]["user"].clone()
        }
    };
    let listed = |query: String| {
        let app = &app;
        let admin = &admin;
        async move {
            let body = gql(app, admin, &query, json!({})).await;
            assert!(body.get("errors").is_none(), "{query}: {body}");
            body["data"]["allUsers"]["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let check = |selection: String, items: Vec<Value>| {
        let whole = &whole;
        async move {
            assert_eq!(items.len(), 5, "{selection}");
            for item in items {
                let id = item["id"].as_str().unwrap().to_owned();
                assert_eq!(item, whole(id, selection.clone()).await, "{selection}");
            }
        }
    };
    for selection in &selections {
        let items = listed(format!(
            "{{ allUsers(limit: 100) {{ items {{ id {selection} }} }} }}"
        ))
        .await;
        check(selection.clone(), items).await;
    }
    let all = selections.join(" ");
    check(
        all.clone(),
        listed(format!("{{ allUsers {{ items {{ id {all} }} }} }}")).await,
    )
    .await;
    // Through a fragment and an inline fragment, and under aliases (the answer keeps the alias).
    let items = listed(
        "{ allUsers { items { id ...F ... on User { banReason } } } } \
         fragment F on User { isBanned bannedUntil username }"
            .into(),
    )
    .await;
    check("isBanned bannedUntil username banReason".into(), items).await;
    let items = listed("{ allUsers { totalCount items { id mail: email } } }".into()).await;
    assert_eq!(items.len(), 5);
    for item in items {
        let id = item["id"].as_str().unwrap().to_owned();
        assert_eq!(item["mail"], whole(id, "email".into()).await["email"]);
    }
}
