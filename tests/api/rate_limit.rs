//! Rate limits (sliding windows in the shared store), client IPs behind proxies, and CSRF
//! prevention.

use std::time::Duration;

use multipult::config::{Quota, RuleTarget};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, header, read};

fn quota(limit: u64, millis: u64) -> Quota {
    Quota {
        limit,
        window: Duration::from_millis(millis),
    }
}

async fn hit(
    app: &TestApp,
    token: Option<&str>,
    forwarded_for: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_user_gets_n_requests_then_429_with_headers_and_the_window_slides() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.user = quota(3, 1200);
    })
    .await;
    let session = app.signed_up("limited@example.com").await;
    let token = Some(session.access.as_str());

    let (status, headers, _) = hit(&app, token, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-limit"), "3");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "2");
    assert_eq!(header(&headers, "ratelimit-policy"), "\"user\";q=3;w=1");
    assert!(
        header(&headers, "ratelimit").starts_with("\"user\";r=2;t="),
        "{headers:?}"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hit(&app, token, None).await.0, 200);
    let (status, headers, _) = hit(&app, token, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");

    let (status, headers, body) = hit(&app, token, None).await;
    assert_eq!(status, 429);
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["retryAfter"], 1);
    assert_eq!(
        body["errors"][0]["extensions"]["requestId"],
        header(&headers, "x-request-id")
    );
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");

    // The first request ages out ~600 ms later: one slot frees, not the whole window.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        hit(&app, token, None).await.0,
        200,
        "a slot freed as the oldest hit aged out"
    );
    assert_eq!(
        hit(&app, token, None).await.0,
        429,
        "the two later hits still count"
    );
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_ip_and_a_spoofed_forwarded_for_changes_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(2, 60_000);
    })
    .await;
    assert_eq!(hit(&app, None, Some("203.0.113.1")).await.0, 200);
    assert_eq!(hit(&app, None, Some("203.0.113.2")).await.0, 200);
    let (status, headers, _) = hit(&app, None, Some("203.0.113.3")).await;
    assert_eq!(
        status, 429,
        "the peer is not a trusted proxy: the header is ignored"
    );
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"anonymous\";q=2;w=60"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_the_client() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(2, 60_000);
        s.rate_limit.trusted_proxies = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    for _ in 0..2 {
        assert_eq!(hit(&app, None, Some("198.51.100.7")).await.0, 200);
    }
    assert_eq!(hit(&app, None, Some("198.51.100.7")).await.0, 429);
    // Another client through the same proxy has its own window; a client-chosen left-most entry
    // does not help the limited one.
    assert_eq!(hit(&app, None, Some("198.51.100.8")).await.0, 200);
    assert_eq!(
        hit(&app, None, Some("1.2.3.4, 198.51.100.7, 10.0.0.5"))
            .await
            .0,
        429
    );
}

#[tokio::test]
async fn an_ipv6_client_is_counted_by_its_network_not_its_address() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(2, 60_000);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // A new address of the same /64 for every request does not step around the limit.
    assert_eq!(hit(&app, None, Some("2001:db8:1:2::1")).await.0, 200);
    assert_eq!(hit(&app, None, Some("2001:db8:1:2::ffff")).await.0, 200);
    let (status, headers, _) = hit(&app, None, Some("2001:db8:1:2:abcd:ef01:2345:6789")).await;
    assert_eq!(status, 429);
    assert!(header(&headers, "retry-after").parse::<u64>().unwrap() > 0);
    // The next /64 is another client.
    assert_eq!(hit(&app, None, Some("2001:db8:1:3::1")).await.0, 200);
    // An IPv4-mapped address is its IPv4 address.
    assert_eq!(hit(&app, None, Some("198.51.100.9")).await.0, 200);
    assert_eq!(hit(&app, None, Some("::ffff:198.51.100.9")).await.0, 200);
    assert_eq!(hit(&app, None, Some("198.51.100.9")).await.0, 429);

    // RATE_LIMIT_IPV6_PREFIX=128 counts addresses one by one.
    let single = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(1, 60_000);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.rate_limit.ipv6_prefix = 128;
    })
    .await;
    assert_eq!(hit(&single, None, Some("2001:db8::1")).await.0, 200);
    assert_eq!(hit(&single, None, Some("2001:db8::2")).await.0, 200);
    assert_eq!(hit(&single, None, Some("2001:db8::1")).await.0, 429);
}

#[tokio::test]
async fn failed_logins_from_one_ipv6_network_are_counted_together() {
    let app = TestApp::spawn_with(|s| {
        s.auth.login_max_failures = 1;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // Per address the limit is ten times the per-account one: ten accounts, one wrong password
    // each, every attempt from a new address of the same /64.
    let mut refused = None;
    for n in 0..12 {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("x-forwarded-for", format!("2001:db8:7:7::{:x}", n + 1))
            .json(&json!({
                "query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                "variables": { "i": { "email": format!("nobody{n}@example.com"), "password": "wrong password" } },
            }))
            .send()
            .await
            .unwrap();
        let (_, _, body) = read(response).await;
        if body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" {
            refused = Some(n);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(10),
        "the eleventh attempt from the network is refused"
    );
}

#[tokio::test]
async fn field_rules_apply_whatever_the_operation_is_called() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rules = vec![(RuleTarget::Field("login".into()), quota(2, 60_000))];
    })
    .await;
    app.register("rules@example.com", PASSWORD).await;
    let login = |name: &'static str| {
        let query =
            format!("mutation {name}($i: LoginInput!) {{ login(input: $i) {{ accessToken }} }}");
        let app = &app;
        async move {
            app.graphql_as(
                None,
                &query,
                json!({ "i": { "email": "rules@example.com", "password": PASSWORD } }),
            )
            .await
        }
    };
    assert_eq!(login("A").await.0, 200);
    assert_eq!(login("B").await.0, 200);
    let (status, headers, body) = login("C").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(header(&headers, "retry-after").parse::<u64>().unwrap() > 0);
    // Other fields are not affected by the rule.
    assert_eq!(hit(&app, None, None).await.0, 200);
}

#[tokio::test]
async fn a_path_rule_replaces_the_default_window_for_its_paths_only() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(100, 60_000);
        s.rate_limit.rules = vec![(RuleTarget::Path("/graphql".into()), quota(2, 60_000))];
    })
    .await;
    let (status, headers, _) = hit(&app, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"path:/graphql\";q=2;w=60"
    );
    assert_eq!(hit(&app, None, None).await.0, 200);
    let (status, headers, body) = hit(&app, None, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    // A path the rule does not cover keeps the default window; probes are never counted.
    let other = app
        .client
        .get(app.url("/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(header(other.headers(), "x-ratelimit-limit"), "100");
    let probe = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    assert!(probe.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn the_bypass_permission_and_the_allowlist_skip_limits() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.user = quota(1, 60_000);
        s.rate_limit.anonymous = quota(1, 60_000);
    })
    .await;
    let admin = app.admin().await;
    for _ in 0..3 {
        let (status, headers, _) = hit(&app, Some(&admin.access), None).await;
        assert_eq!(status, 200, "admins hold ratelimit:bypass");
        assert!(headers.get("x-ratelimit-limit").is_none());
    }
    let allowlisted = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(1, 60_000);
        s.rate_limit.allowlist = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(hit(&allowlisted, None, None).await.0, 200);
    }
}

#[tokio::test]
async fn two_instances_share_one_counter() {
    // One in-process store set on the embedded default; Redis with TEST_REDIS_URL.
    let (first, second) = TestApp::spawn_pair_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(3, 60_000);
    })
    .await;
    assert_eq!(hit(&first, None, None).await.0, 200);
    assert_eq!(hit(&second, None, None).await.0, 200);
    assert_eq!(hit(&first, None, None).await.0, 200);
    assert_eq!(
        hit(&second, None, None).await.0,
        429,
        "the third hit was counted on the other instance"
    );
}

#[tokio::test]
async fn with_redis_down_requests_pass_and_errors_are_counted_unless_failing_closed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = multipult::config::RedisSettings {
        url: format!("redis://127.0.0.1:{port}").into(),
        pool_size: 2,
        timeout: Duration::from_millis(200),
        circuit_threshold: 3,
        circuit_cooldown: Duration::from_secs(1),
    };
    let open = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.redis = Some(down.clone());
    })
    .await;
    for _ in 0..3 {
        let (status, headers, _) = hit(&open, None, None).await;
        assert_eq!(status, 200);
        assert!(headers.get("x-ratelimit-limit").is_none());
    }
    let metrics = open.metrics_text().await;
    let errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("rate_limit_store_errors_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 3.0, "{metrics}");

    let closed = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.fail_closed = true;
        s.redis = Some(down);
    })
    .await;
    let (status, _, body) = hit(&closed, None, None).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
}

/// A GET to `/graphql` with the given extra headers: its status.
async fn get_status(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", query)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn only_requests_with_ambient_credentials_need_a_preflight_header() {
    let app = TestApp::spawn().await;
    let user = app.signed_up("csrf@example.com").await;
    let bearer = format!("Bearer {}", user.access);
    let q = "{ __typename }";
    // Anonymous and bearer GETs are what the GraphQL-over-HTTP specification describes.
    assert_eq!(get_status(&app, q, &[]).await, 200);
    assert_eq!(
        get_status(&app, q, &[("authorization", &bearer)]).await,
        200
    );
    // Credentials a browser attaches by itself make the request forgeable: blocked.
    assert_eq!(get_status(&app, q, &[("cookie", "session=abc")]).await, 400);
    assert_eq!(
        get_status(&app, q, &[("authorization", "Basic dXNlcjpwYXNz")]).await,
        400
    );
    assert_eq!(
        get_status(
            &app,
            q,
            &[
                ("cookie", "session=abc"),
                ("apollo-require-preflight", "true")
            ]
        )
        .await,
        200
    );
    // A mutation over GET is the specification's 405, not a CSRF refusal.
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { logout }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(response.headers(), "allow"), "POST");

    // A form-style POST: with a cookie it is blocked, without one it meets content negotiation.
    let form = |cookie: bool| form_post(&app, "text/plain", cookie);
    // Media types are case-insensitive and may carry parameters.
    for content_type in [
        "Text/Plain; charset=utf-8",
        "APPLICATION/X-WWW-FORM-URLENCODED",
        " multipart/form-data; boundary=x",
    ] {
        let response = form_post(&app, content_type, true).await.unwrap();
        assert_eq!(response.status(), 400, "{content_type}");
    }

    let (status, _, body) = read(form(true).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cross-site")
    );
    assert_eq!(form(false).await.unwrap().status(), 415);

    // Deployment-specific ambient credentials.
    let marked =
        TestApp::spawn_with(|s| s.csrf.ambient_headers = vec!["x-client-cert".into()]).await;
    assert_eq!(get_status(&marked, q, &[("x-client-cert", "…")]).await, 400);
}

/// A POST of `content_type` (with an ambient cookie when `cookie`).
fn form_post(
    app: &TestApp,
    content_type: &str,
    cookie: bool,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", content_type)
        .body(r#"{"query":"{ __typename }"}"#);
    if cookie {
        request = request.header("cookie", "session=abc");
    }
    request.send()
}

#[tokio::test]
async fn strict_csrf_prevention_guards_every_simple_request_and_off_none() {
    let strict = TestApp::spawn_with(|s| s.csrf.mode = multipult::config::CsrfMode::Strict).await;
    let q = "{ __typename }";
    assert_eq!(get_status(&strict, q, &[]).await, 400);
    assert_eq!(
        get_status(&strict, q, &[("apollo-require-preflight", "true")]).await,
        200
    );
    assert_eq!(
        get_status(
            &strict,
            "query Q { __typename }",
            &[("x-apollo-operation-name", "Q")]
        )
        .await,
        200
    );
    assert_eq!(
        hit(&strict, None, None).await.0,
        200,
        "JSON POSTs never need it"
    );

    let off = TestApp::spawn_with(|s| s.csrf.mode = multipult::config::CsrfMode::Off).await;
    assert_eq!(get_status(&off, q, &[("cookie", "session=abc")]).await, 200);
}

#[tokio::test]
async fn opening_graphiql_is_not_counted_and_development_limits_are_generous() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(2, 60_000);
    })
    .await;
    for _ in 0..5 {
        let page = app
            .client
            .get(app.url("/graphql"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        // Its assets are not counted either.
        let page = page.text().await.unwrap();
        let start = page.find("src=\"").unwrap() + 5;
        let asset = &page[start..start + page[start..].find('"').unwrap()];
        let asset = app
            .client
            .get(app.url(&format!("/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200);
    }
    assert_eq!(hit(&app, None, None).await.0, 200);
    assert_eq!(hit(&app, None, None).await.0, 200);
    assert_eq!(hit(&app, None, None).await.0, 429);

    let development = multipult::config::Settings::from_vars(Default::default(), &[]).unwrap();
    assert!(development.rate_limit.anonymous.limit >= 300);
    let production = multipult::config::Settings::from_vars(
        [
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://app@db/app"),
            ("REDIS_URL", "redis://redis:6379"),
            ("JWT_SECRET", "a-production-secret-of-at-least-32-bytes"),
            (
                "SECRETS_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("METRICS_TOKEN", "token"),
            ("SMTP_URL", "smtp://mail:25"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        &[],
    )
    .unwrap();
    assert_eq!(production.rate_limit.anonymous.limit, 20);
    assert_eq!(production.rate_limit.user.limit, 100);
}

#[tokio::test]
async fn the_headers_describe_the_rule_that_decided_and_list_every_policy() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(100, 60_000);
        s.rate_limit.rules = vec![(RuleTarget::Field("login".into()), quota(2, 60_000))];
    })
    .await;
    app.register("headers@example.com", PASSWORD).await;
    let login = || async {
        app.graphql_as(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": "headers@example.com", "password": PASSWORD } }),
        )
        .await
    };
    // Under the rule: its count is the one shown, and both policies are listed.
    let (status, headers, _) = login().await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-limit"), "2", "{headers:?}");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "1");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"login\";q=2;w=60, \"anonymous\";q=100;w=60"
    );
    assert!(
        header(&headers, "ratelimit").starts_with("\"login\";r=1;t="),
        "{headers:?}"
    );
    assert!(header(&headers, "ratelimit").contains("\"anonymous\";r="));
    assert_eq!(login().await.0, 200);
    // Refused by the rule: the headers say so (not the default window's 97 left).
    let (status, headers, body) = login().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&headers, "x-ratelimit-limit"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    assert!(
        header(&headers, "ratelimit").starts_with("\"login\";r=0;t="),
        "{headers:?}"
    );
    assert_eq!(
        header(&headers, "retry-after"),
        body["errors"][0]["extensions"]["retryAfter"].to_string()
    );
    // A request the rule does not cover shows the default window alone.
    let (_, headers, _) = hit(&app, None, None).await;
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"anonymous\";q=100;w=60"
    );
}

#[tokio::test]
async fn a_304_carries_the_headers_of_the_rules_that_counted_it() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.anonymous = quota(100, 60_000);
        s.rate_limit.rules = vec![(RuleTarget::Field("apiInfo".into()), quota(50, 60_000))];
    })
    .await;
    let query = "{ apiInfo { version } }";
    let first = app.get_query(query, None, None).await;
    assert_eq!(first.status(), 200);
    let tag = header(first.headers(), "etag").to_owned();
    // The decisive window (fewest left) first.
    let policies = "\"apiInfo\";q=50;w=60, \"anonymous\";q=100;w=60";
    assert_eq!(header(first.headers(), "ratelimit-policy"), policies);
    // Answered 304 (from the response cache): counted against the rule all the same, and told so.
    let revalidated = app.get_query(query, None, Some(&tag)).await;
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(revalidated.headers(), "ratelimit-policy"), policies);
    assert!(
        header(revalidated.headers(), "ratelimit").contains("\"apiInfo\";r=48;"),
        "{:?}",
        revalidated.headers()
    );
}

#[tokio::test]
async fn a_rule_on_a_root_field_holds_through_fragments() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rules = vec![(RuleTarget::Field("login".into()), quota(1, 60_000))];
    })
    .await;
    app.register("fragments@example.com", PASSWORD).await;
    let variables = json!({ "i": { "email": "fragments@example.com", "password": PASSWORD } });
    let spelled = [
        "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
        "mutation($i: LoginInput!) { ...L } fragment L on MutationRoot { login(input: $i) { accessToken } }",
        "mutation($i: LoginInput!) { ... on MutationRoot { l: login(input: $i) { accessToken } } }",
        "mutation($i: LoginInput!) { ...A } fragment A on MutationRoot { ...B } fragment B on MutationRoot { login(input: $i) { accessToken } }",
    ];
    assert_eq!(
        app.graphql_as(None, spelled[0], variables.clone()).await.0,
        200
    );
    for query in &spelled[1..] {
        let (status, _, body) = app.graphql_as(None, query, variables.clone()).await;
        assert_eq!(status, 429, "{query}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    }
}

#[tokio::test]
async fn cost_budgets_have_headers_too() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.anonymous_budget = Some(quota(5, 60_000));
    })
    .await;
    let (status, headers, _) = hit(&app, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-cost-budget-limit"), "5");
    assert_eq!(header(&headers, "x-cost-budget-remaining"), "4");
    let reset: u64 = header(&headers, "x-cost-budget-reset").parse().unwrap();
    assert!(reset <= 60, "{reset}");
    for _ in 0..4 {
        hit(&app, None, None).await;
    }
    let (_, headers, body) = hit(&app, None, None).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    assert_eq!(header(&headers, "x-cost-budget-remaining"), "0");
}
