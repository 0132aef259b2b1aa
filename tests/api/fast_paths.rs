//! The fast paths: the viewer's own data comes with authentication (no SQL), and every change
//! to it shows on the next request, on every instance.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::helpers::{TestApp, redis_commands};

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

fn budget_of(body: &Value) -> u64 {
    body["data"]["rateLimit"]["remaining"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test]
async fn a_budget_spent_on_one_instance_counts_on_the_other() {
    let (first, second) = TestApp::spawn_pair_with(|s| {
        s.graphql.user_budget = Some(multipult::config::Quota {
            limit: 100,
            window: std::time::Duration::from_secs(3600),
        });
    })
    .await;
    let session = first.signed_up("budget@example.com").await;
    let query = "{ rateLimit { remaining cost } }";
    let (_, _, body) = first
        .graphql_as(Some(&session.access), query, json!({}))
        .await;
    let cost = body["data"]["rateLimit"]["cost"].as_u64().unwrap();
    assert_eq!(budget_of(&body), 100 - cost);
    for _ in 0..4 {
        first
            .graphql_as(Some(&session.access), query, json!({}))
            .await;
    }
    // The charges reach the shared store within a tenth of a second.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (_, _, body) = second
        .graphql_as(Some(&session.access), query, json!({}))
        .await;
    assert_eq!(budget_of(&body), 100 - 6 * cost, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (_, _, body) = first
        .graphql_as(Some(&session.access), query, json!({}))
        .await;
    assert_eq!(budget_of(&body), 100 - 7 * cost, "{body}");
}

const REQUESTS: usize = 20;

/// What the app sends to Redis for `REQUESTS` `me` requests of a new user, once warm (the user's
/// cached state, this instance's view of the budget, the response cache's entry).
async fn commands_of_me_requests(app: &TestApp, email: &str) -> Vec<String> {
    let session = app.signed_up(email).await;
    for _ in 0..2 {
        me(app, &session.access).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    redis_commands(&app.state.settings.key_prefix, async {
        for _ in 0..REQUESTS {
            me(app, &session.access).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_authenticated_request_is_one_store_round_trip() {
    if crate::helpers::test_redis_url().is_none() {
        eprintln!("skipped: counts Redis commands; runs in the Redis pass (TEST_REDIS_URL)");
        return;
    }
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.user = multipult::config::Quota {
            limit: 1_000_000,
            window: std::time::Duration::from_secs(60),
        };
        s.graphql.user_budget = Some(multipult::config::Quota {
            limit: 1_000_000,
            window: std::time::Duration::from_secs(3600),
        });
        s.cache.responses = false;
    })
    .await;
    let commands = commands_of_me_requests(&app, "trips@example.com").await;
    // One script per request (state, revocations and the rate window together); the budget's
    // charges leave in a batch every tenth of a second, whatever the number of requests.
    let per_request = commands.iter().filter(|c| c.contains("auth:user:")).count();
    assert_eq!(per_request, REQUESTS, "{commands:#?}");
    // Nothing else goes with them: no connection check before each call.
    let pings = commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().contains("\"PING\""))
        .count();
    assert_eq!(pings, 0, "{commands:#?}");
    assert!(
        commands.len() <= REQUESTS + 5,
        "{} commands for {REQUESTS} requests: {commands:#?}",
        commands.len()
    );
}

#[tokio::test]
async fn a_response_cache_hit_rides_the_callers_round_trip() {
    if crate::helpers::test_redis_url().is_none() {
        eprintln!("skipped: counts Redis commands; runs in the Redis pass (TEST_REDIS_URL)");
        return;
    }
    let app = TestApp::spawn().await;
    let commands = commands_of_me_requests(&app, "hits@example.com").await;
    // A request seen before reads its entry (and its tags' versions) in the same script call
    // as the caller's state and rate window: one call per request, not one each.
    let lookups = commands
        .iter()
        .filter(|c| c.contains("{responses}"))
        .count();
    assert_eq!(lookups, REQUESTS, "{commands:#?}");
    let together = commands
        .iter()
        .filter(|c| c.contains("{responses}") && c.contains("auth:user:"))
        .count();
    assert_eq!(together, REQUESTS, "{commands:#?}");
    assert!(
        commands.len() <= REQUESTS + 5,
        "{} commands for {REQUESTS} requests: {commands:#?}",
        commands.len()
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "response_cache_total{{result=\"hit\"}} {}",
            REQUESTS + 1
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_bundled_sqlite_is_built_with_the_repository_flags() {
    // `.cargo/config.toml` builds SQLite with its query planner stability guarantee (without it,
    // every `LIMIT ?` statement is prepared anew on each run) and without memory statistics
    // (which take a process-wide mutex on every allocation and free): docs/benchmarks.md. A
    // build that lost either fails here, not only in a benchmark.
    use sea_orm::{ConnectionTrait as _, Statement};
    let app = TestApp::spawn().await;
    let db = &app.state.db;
    if db.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
        return;
    }
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            "SELECT sqlite_compileoption_used('ENABLE_QPSG') AS qpsg, \
                    sqlite_compileoption_used('DEFAULT_MEMSTATUS=0') AS no_memstatus",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i32>("", "qpsg").unwrap(), 1);
    assert_eq!(row.try_get::<i32>("", "no_memstatus").unwrap(), 1);
}

#[tokio::test]
async fn two_sessions_of_one_user_each_see_their_own_session_and_logout_ends_only_its_own() {
    // The instance reuses the viewer it built for a token (same user state, same token): two
    // sessions of one user, alternating, must never get each other's.
    let app = TestApp::spawn_with(|s| s.cache.responses = false).await;
    let first = app.signed_up("twice@example.com").await;
    let second = app
        .login("twice@example.com", crate::helpers::PASSWORD)
        .await;
    let current = |body: &Value| {
        body["data"]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"] == true)
            .map(|s| s["id"].clone())
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        for session in [&first, &second] {
            let (status, _, body) = app
                .graphql_as(
                    Some(&session.access),
                    "{ sessions { id current } }",
                    json!({}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            seen.push(current(&body).expect("a current session"));
        }
    }
    assert_ne!(seen[0], seen[1], "both tokens saw the same current session");
    for (index, id) in seen.iter().enumerate() {
        assert_eq!(*id, seen[index % 2], "request {index} saw another session");
    }

    let (_, _, body) = app
        .graphql_as(Some(&second.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let (status, _, _) = app
        .graphql_as(Some(&second.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 401);
    let (status, _, body) = app
        .graphql_as(Some(&first.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `/metrics` says how concurrent requests' store batches were joined into Redis calls.
#[tokio::test]
async fn metrics_count_store_batches_and_the_calls_that_carried_them() {
    let app = TestApp::spawn_with(|s| s.rate_limit.enabled = true).await;
    const REQUESTS: usize = 40;
    let sent = futures_util::future::join_all(
        (0..REQUESTS).map(|_| app.graphql_as(None, "{ apiInfo { version } }", json!({}))),
    )
    .await;
    assert!(sent.iter().all(|(status, _, _)| *status == 200));
    let metrics = app.metrics_text().await;
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
    };
    if crate::helpers::test_redis_url().is_none() {
        // In process there are no calls to join.
        assert_eq!(value("store_batches_total"), None, "{metrics}");
        return;
    }
    let batches = value("store_batches_total").expect("store_batches_total");
    let calls = value("store_batch_calls_total").expect("store_batch_calls_total");
    // Each request's rate window is one batch.
    assert!(batches >= REQUESTS as f64, "{batches} batches");
    assert!(
        calls >= 1.0 && calls <= batches,
        "{calls} calls for {batches} batches"
    );
}
