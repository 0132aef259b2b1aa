//! The server-side response cache: hits without executing, 304s from the cache with the same
//! ETag, scopes that never leak, and tags that drop entries on every instance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, header};

const USERS: &str =
    "{ allUsers(limit: 50) { totalCount items { email displayName roles { name } isBanned } } }";

async fn get(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = app.get_query(query, token, if_none_match).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn counter(metrics: &str, result: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("response_cache_total{{result=\"{result}\"}} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The user with `email` in an `allUsers` page.
fn listed(body: &Value, email: &str) -> Value {
    body["data"]["allUsers"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .find(|u| u["email"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("{email} not in {body}"))
}

fn emails(body: &Value) -> Vec<String> {
    body["data"]["allUsers"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_hit_runs_nothing_and_revalidates_with_the_same_etag() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let admin = app.admin().await;
    let token = Some(admin.access.as_str());
    let (status, executed, first) = get(&app, USERS, token, None).await;
    assert_eq!(status, 200, "{first}");

    let before = app.statements.load(Ordering::SeqCst);
    let (_, cached, second) = get(&app, USERS, token, None).await;
    assert_eq!(
        app.statements.load(Ordering::SeqCst) - before,
        0,
        "a hit runs no SQL"
    );
    assert_eq!(first, second);
    let tag = header(&executed, "etag").to_owned();
    assert_eq!(
        header(&cached, "etag"),
        tag,
        "200 from execution and from the cache agree"
    );
    assert_eq!(header(&cached, "cache-control"), "private, max-age=0");

    let (status, revalidated, _) = get(&app, USERS, token, Some(&tag)).await;
    assert_eq!(status, 304);
    assert_eq!(header(&revalidated, "etag"), tag);
    assert_eq!(
        app.statements.load(Ordering::SeqCst) - before,
        0,
        "a 304 runs no SQL"
    );

    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "hit"), 2, "{metrics}");
    assert_eq!(counter(&metrics, "miss"), 1, "{metrics}");

    // Public answers are cached too, and shared by anonymous callers.
    let (_, public, _) = get(&app, "{ apiInfo { version } }", None, None).await;
    let (_, again, _) = get(&app, "{ apiInfo { version } }", None, None).await;
    assert_eq!(header(&public, "etag"), header(&again, "etag"));
    assert_eq!(counter(&app.metrics_text().await, "hit"), 3);
}

#[tokio::test]
async fn a_private_result_is_never_served_to_anyone_else() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    let admin = app.admin().await;
    let moderator = app
        .user_with_roles("moderator@example.com", &["moderator"])
        .await;
    let one = app.signed_up("one@example.com").await;
    let two = app.signed_up("two@example.com").await;

    // The same document, four callers: each gets their own answer.
    for (session, email) in [(&one, "one@example.com"), (&two, "two@example.com")] {
        for _ in 0..2 {
            let (_, _, body) = get(&app, "{ me { email } }", Some(&session.access), None).await;
            assert_eq!(body["data"]["me"]["email"], email, "{body}");
        }
    }
    let (status, _, body) = get(&app, "{ me { email } }", None, None).await;
    assert!(
        body["data"].is_null() || body["data"]["me"].is_null(),
        "{status} {body}"
    );

    // An admin's cached list is not the moderator's: the moderator's request executes.
    get(&app, USERS, Some(&admin.access), None).await;
    get(&app, USERS, Some(&admin.access), None).await;
    let before = app.statements.load(Ordering::SeqCst);
    let (_, _, body) = get(&app, USERS, Some(&moderator.access), None).await;
    assert!(
        app.statements.load(Ordering::SeqCst) > before,
        "executed for its own scope"
    );
    assert_eq!(body["data"]["allUsers"]["totalCount"], 4, "{body}");
    // A user without the permission never sees the list, cached or not.
    let (_, _, body) = get(&app, USERS, Some(&one.access), None).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
}

#[tokio::test]
async fn no_stale_entry_survives_a_change_on_any_instance() {
    let (first, second) = TestApp::spawn_pair_with(|_| {}).await;
    let admin = first.admin().await;
    let token = Some(admin.access.as_str());
    let target = first.signed_up("target@example.com").await;
    // Cached on the second instance.
    let (_, _, body) = get(&second, USERS, token, None).await;
    assert_eq!(emails(&body).len(), 2);
    get(&second, USERS, token, None).await;

    // A new account, through the first instance: the list shows it (creating an entity drops
    // the lists it can appear in).
    first.signed_up("newcomer@example.com").await;
    let (_, _, body) = get(&second, USERS, token, None).await;
    assert!(
        emails(&body).contains(&"newcomer@example.com".to_owned()),
        "{body}"
    );

    // A profile update.
    let (_, _, body) = first
        .graphql_as(
            Some(&target.access),
            "mutation { updateProfile(input: { displayName: \"Changed\" }) { displayName } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let (_, _, body) = get(&second, USERS, token, None).await;
    let shown = listed(&body, "target@example.com");
    assert_eq!(shown["displayName"], "Changed", "{body}");

    // A role change.
    first
        .graphql_as(
            token,
            "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [target.user_id] }),
        )
        .await;
    let (_, _, body) = get(&second, USERS, token, None).await;
    let shown = listed(&body, "target@example.com");
    assert!(
        shown["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "moderator"),
        "{shown}"
    );

    // A ban, seen through `user(id)` cached on the second instance too.
    let one_user = format!("{{ user(id: \"{}\") {{ isBanned }} }}", target.user_id);
    let (_, _, body) = get(&second, &one_user, token, None).await;
    assert_eq!(body["data"]["user"]["isBanned"], false, "{body}");
    first
        .graphql_as(
            token,
            "mutation($id: ID!) { banUser(userId: $id, reason: \"spam\") { id } }",
            json!({ "id": target.user_id }),
        )
        .await;
    let (_, _, body) = get(&second, &one_user, token, None).await;
    assert_eq!(body["data"]["user"]["isBanned"], true, "{body}");
    let (_, _, body) = get(&second, USERS, token, None).await;
    let shown = listed(&body, "target@example.com");
    assert_eq!(shown["isBanned"], true);
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let app = TestApp::spawn_with(|s| s.cache.responses = false).await;
    for _ in 0..3 {
        get(&app, "{ apiInfo { version } }", None, None).await;
    }
    let metrics = app.metrics_text().await;
    assert_eq!(
        counter(&metrics, "hit") + counter(&metrics, "miss"),
        0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_permission_change_is_a_new_scope_so_guards_run_again() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let moderator = app
        .user_with_roles("scoped@example.com", &["moderator"])
        .await;
    let query = "{ apiInfo { version } }";
    get(&app, query, Some(&moderator.access), None).await;
    get(&app, query, Some(&moderator.access), None).await;
    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "hit"), 1, "{metrics}");
    // `apiInfo` shows no entity, so no tag drops the entry; the new permissions make a new key.
    let (_, _, body) = app
        .graphql_as(
            Some(&admin.access),
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [moderator.user_id] }),
        )
        .await;
    assert_eq!(body["data"]["bulkRemoveRole"]["updated"], 1, "{body}");
    get(&app, query, Some(&moderator.access), None).await;
    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "hit"), 1, "{metrics}");
    assert_eq!(counter(&metrics, "miss"), 2, "{metrics}");
}

fn prefetches(metrics: &str, result: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "response_cache_prefetch_total{{result=\"{result}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// On Redis, a request seen before (same text, same credential) has its entry read alongside
/// the caller's state; the guess is only used when the handler's own key agrees. In process
/// there is no round trip to save, and no guess is made.
#[tokio::test]
async fn a_repeated_request_reads_its_entry_with_the_callers_state() {
    let remote = crate::helpers::test_redis_url().is_some();
    let app = TestApp::spawn_with(|s| {
        s.jobs.workers = 0;
        s.graphql.max_batch_size = 4;
    })
    .await;
    let admin = app.admin().await;
    let moderator = app
        .user_with_roles("guessed@example.com", &["moderator"])
        .await;
    let token = Some(admin.access.as_str());
    let used = |metrics: &str| prefetches(metrics, "used");

    // GET: the first request finds the key, the next ones read the entry early.
    let (_, executed, first) = get(&app, USERS, token, None).await;
    let before = app.statements.load(Ordering::SeqCst);
    let (status, cached, second) = get(&app, USERS, token, None).await;
    assert_eq!(status, 200);
    assert_eq!(first, second);
    assert_eq!(header(&executed, "etag"), header(&cached, "etag"));
    assert_eq!(app.statements.load(Ordering::SeqCst), before, "a hit");
    let tag = header(&cached, "etag").to_owned();
    let (status, _, _) = get(&app, USERS, token, Some(&tag)).await;
    assert_eq!(status, 304, "a 304 from the early read too");
    let metrics = app.metrics_text().await;
    assert_eq!(used(&metrics), if remote { 2 } else { 0 }, "{metrics}");
    assert_eq!(counter(&metrics, "hit"), 2, "{metrics}");

    // POST: the same operation, its own text; the body is read ahead and given back whole.
    for _ in 0..2 {
        let (status, _, body) = app.graphql_as(token, USERS, json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body, first);
    }
    let metrics = app.metrics_text().await;
    assert_eq!(used(&metrics), if remote { 3 } else { 0 }, "{metrics}");
    assert_eq!(counter(&metrics, "hit"), 4, "{metrics}");

    // Another credential with the same text has a fingerprint of its own: the admin's entry is
    // never read for it, and its first request executes in its own scope.
    let (_, _, body) = get(&app, USERS, Some(&moderator.access), None).await;
    assert_eq!(body["data"]["allUsers"]["totalCount"], 2, "{body}");
    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "miss"), 2, "{metrics}");
    assert_eq!(prefetches(&metrics, "unused"), 0, "{metrics}");

    // The same token after a permission change: the early read was for the old scope and goes
    // unused; the request runs in the new one (and is refused there).
    let (_, _, body) = app
        .graphql_as(
            token,
            "mutation($ids: [ID!]!) { bulkRemoveRole(userIds: $ids, role: \"moderator\") { updated } }",
            json!({ "ids": [moderator.user_id] }),
        )
        .await;
    assert_eq!(body["data"]["bulkRemoveRole"]["updated"], 1, "{body}");
    let (_, _, body) = get(&app, USERS, Some(&moderator.access), None).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let metrics = app.metrics_text().await;
    assert_eq!(
        prefetches(&metrics, "unused"),
        if remote { 1 } else { 0 },
        "{metrics}"
    );

    // Bodies too large to read ahead, and batches, take the ordinary way.
    let (_, _, current) = get(&app, USERS, token, None).await;
    let metrics = app.metrics_text().await;
    let used_before = used(&metrics);
    let padded = format!("{USERS}{}", " ".repeat(20 * 1024));
    for _ in 0..2 {
        let (status, _, body) = app.graphql_as(token, &padded, json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"], current["data"]);
    }
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&admin.access)
            .json(&json!([{ "query": USERS }, { "query": "{ apiInfo { version } }" }]))
            .send()
            .await
            .unwrap();
        let (status, _, body) = crate::helpers::read(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body[0]["data"], current["data"], "{body}");
    }
    let metrics = app.metrics_text().await;
    assert_eq!(used(&metrics), used_before, "{metrics}");
}

/// An instance whose anonymous callers may make `limit` requests a minute.
async fn anonymous_limit(limit: u64, window: Duration) -> TestApp {
    TestApp::spawn_with(|s| {
        s.jobs.workers = 0;
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = multipult::config::Quota { limit, window };
    })
    .await
}

/// A request refused by its rate limit is refused as before; the entry read for it goes unused,
/// and while the client stays refused nothing more is read early for it. Once a request of its
/// is looked up again, the next reads early again.
#[tokio::test]
async fn a_refused_request_leaves_its_early_read_unused() {
    let remote = crate::helpers::test_redis_url().is_some();
    let window = Duration::from_secs(5);
    let app = anonymous_limit(3, window).await;
    let query = "{ apiInfo { version } }";
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let (status, _, body) = get(&app, query, None, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let prefetched = |metrics: &str| (prefetches(metrics, "used"), prefetches(metrics, "unused"));
    for _ in 0..4 {
        let (status, headers, body) = get(&app, query, None, None).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
        assert!(!header(&headers, "retry-after").is_empty());
    }
    let metrics = app.metrics_text().await;
    // Only the first refusal had an entry read for it.
    let expected = if remote { (2, 1) } else { (0, 0) };
    assert_eq!(prefetched(&metrics), expected, "{metrics}");

    // Past the window: the first request is an ordinary lookup (a hit), the second reads early.
    tokio::time::sleep((window + Duration::from_millis(100)).saturating_sub(started.elapsed()))
        .await;
    for _ in 0..2 {
        let (status, _, body) = get(&app, query, None, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = app.metrics_text().await;
    let expected = if remote { (3, 1) } else { (0, 0) };
    assert_eq!(prefetched(&metrics), expected, "{metrics}");
}

/// A document whose hints keep it out of the cache is looked up while its policy is unknown
/// (before its first execution), then never again: no store read, no miss counted, nothing read
/// early on Redis. Another document is looked up as before.
#[tokio::test]
async fn a_document_its_hints_keep_out_is_not_looked_up_again() {
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    // `rateLimit` declares no hint: the response is `max-age=0` and never kept.
    let query = "{ apiInfo { version } rateLimit { remaining } }";
    for _ in 0..3 {
        let (status, headers, body) = get(&app, query, None, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{body}");
        assert_eq!(header(&headers, "cache-control"), "public, max-age=0");
    }
    for _ in 0..2 {
        let (_, _, body) = app.post_graphql(query, json!({})).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "miss"), 1, "{metrics}");
    assert_eq!(counter(&metrics, "hit"), 0, "{metrics}");
    assert_eq!(prefetches(&metrics, "used"), 0, "{metrics}");
    assert_eq!(prefetches(&metrics, "unused"), 0, "{metrics}");

    let cached = "{ apiInfo { version } }";
    for _ in 0..2 {
        get(&app, cached, None, None).await;
    }
    let metrics = app.metrics_text().await;
    assert_eq!(counter(&metrics, "miss"), 2, "{metrics}");
    assert_eq!(counter(&metrics, "hit"), 1, "{metrics}");
}

/// A client that asks to be answered before it sends its body (`Expect: 100-continue`) is
/// refused by its rate limit without being asked for the body: nothing is read ahead of it.
#[tokio::test]
async fn a_client_expecting_100_continue_is_refused_before_sending_its_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = anonymous_limit(1, Duration::from_secs(60)).await;
    let (status, _, body) = app.post_graphql("{ apiInfo { version } }", json!({})).await;
    assert_eq!(status, 200, "{body}");

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let body = r#"{"query":"{ apiInfo { version } }"}"#;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
}

/// `RESPONSE_CACHE_EXTENSIONS=true`: every query says what the cache did in
/// `extensions.cache`, and its `ETag` stays the data's (weak: the report's bytes differ).
#[tokio::test]
async fn extensions_tell_what_the_cache_did_without_changing_the_etag() {
    let app = TestApp::spawn_with(|s| {
        s.jobs.workers = 0;
        s.cache.response_extensions = true;
    })
    .await;
    let plain = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    const INFO: &str = "{ apiInfo { version } }";

    let (status, missed, first) = get(&app, INFO, None, None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["extensions"]["cache"],
        json!({"status": "MISS", "scope": "PUBLIC", "maxAge": 60, "stored": true}),
        "{first}"
    );
    let (_, hit, second) = get(&app, INFO, None, None).await;
    let report = &second["extensions"]["cache"];
    assert_eq!(report["status"], "HIT", "{second}");
    assert_eq!(report["scope"], "PUBLIC");
    assert_eq!(report["maxAge"], 60);
    assert!(
        report["ttl"].as_u64().is_some_and(|ttl| ttl <= 60),
        "{second}"
    );
    assert_eq!(first["data"], second["data"]);

    // The tag of the data alone, as a server without the report sends it, made weak.
    let (_, unreported, body) = get(&plain, INFO, None, None).await;
    assert!(body.get("extensions").is_none(), "off by default: {body}");
    let strong = header(&unreported, "etag");
    assert!(strong.starts_with('"'), "{strong}");
    let weak = format!("W/{strong}");
    assert_eq!(header(&missed, "etag"), weak, "the executed answer");
    assert_eq!(header(&hit, "etag"), weak, "the answer from the cache");
    for tag in [weak.as_str(), strong] {
        let (status, revalidated, _) = get(&app, INFO, None, Some(tag)).await;
        assert_eq!(status, 304, "If-None-Match: {tag}");
        assert_eq!(header(&revalidated, "etag"), weak);
    }

    // A signed-in caller's entries are private.
    let admin = app.admin().await;
    let token = Some(admin.access.as_str());
    let (_, _, first) = get(&app, USERS, token, None).await;
    assert_eq!(
        first["extensions"]["cache"],
        json!({"status": "MISS", "scope": "PRIVATE", "maxAge": 60, "stored": true}),
        "{first}"
    );
    let (_, _, second) = get(&app, USERS, token, None).await;
    assert_eq!(second["extensions"]["cache"]["status"], "HIT", "{second}");
    assert_eq!(second["extensions"]["cache"]["scope"], "PRIVATE");
    assert_eq!(first["data"], second["data"]);

    // A field without a hint keeps a query out: looked up until it first ran, then not at all.
    const UNHINTED: &str = "{ apiInfo { version } rateLimit { limit } }";
    let (_, _, first) = get(&app, UNHINTED, None, None).await;
    assert_eq!(
        first["extensions"]["cache"],
        json!({"status": "MISS", "scope": "PUBLIC", "maxAge": 0, "stored": false}),
        "{first}"
    );
    let (_, _, second) = get(&app, UNHINTED, None, None).await;
    assert_eq!(
        second["extensions"]["cache"],
        json!({"status": "BYPASS", "scope": "PUBLIC", "maxAge": 0}),
        "{second}"
    );

    // Mutations are never cached, and say nothing about it.
    let (_, _, body) = app
        .post_graphql(
            "mutation { requestPasswordReset(email: \"nobody@example.com\") }",
            json!({}),
        )
        .await;
    assert!(body["extensions"].get("cache").is_none(), "{body}");
}
