//! Query cost and shape limits, and cost budgets.

use std::time::Duration;

use multipult::config::Quota;
use serde_json::json;

use crate::helpers::{TestApp, code};

#[tokio::test]
async fn a_deep_query_is_refused_with_its_depth_and_nothing_runs() {
    let app = TestApp::spawn_with(|s| s.graphql.max_depth = 4).await;
    let (status, _, body) = app
        .post_graphql(
            "{ __schema { types { fields { type { ofType { name } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], 4);
    assert!(body["errors"][0]["extensions"]["depth"].as_u64().unwrap() > 4);
    assert!(body.get("data").is_none());
}

#[tokio::test]
async fn an_alias_flood_is_refused_before_anything_executes() {
    let app = TestApp::spawn().await;
    app.register("flood@example.com", crate::helpers::PASSWORD)
        .await;
    let sent_before = app.state.jobs.stats().await.unwrap().pending;
    let aliases: String = (0..200)
        .map(|i| format!("a{i}: requestPasswordReset(email: \"flood@example.com\") "))
        .collect();
    let (_, _, body) = app
        .post_graphql(&format!("mutation {{ {aliases} }}"), json!({}))
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["aliases"], 200);
    assert_eq!(body["errors"][0]["extensions"]["limit"], 30);
    assert!(body.get("data").is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = app.state.jobs.stats().await.unwrap();
    assert!(stats.pending <= sent_before, "no reset mail was queued");
}

#[tokio::test]
async fn too_many_root_fields_are_refused() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.max_root_fields = 3;
        s.graphql.max_aliases = 100;
    })
    .await;
    let (_, _, body) = app
        .post_graphql(
            "{ a: __typename b: __typename c: __typename d: __typename }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["rootFields"], 4);
}

#[tokio::test]
async fn list_fields_cost_what_they_load_and_admins_get_a_higher_ceiling() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.max_complexity = 100;
        s.graphql.admin_max_complexity = 2000;
    })
    .await;
    let admin = app.admin().await;
    let moderator = app.user_with_roles("mod@example.com", &["moderator"]).await;
    let huge = "{ allUsers(limit: 10000) { items { email } } }";
    let (_, _, body) = app.graphql_as(Some(&admin.access), huge, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(body["errors"][0]["extensions"]["cost"].as_u64().unwrap() >= 10_000);
    assert_eq!(body["errors"][0]["extensions"]["limit"], 2000);

    // ~100 × (items, email, roles, name): over the normal ceiling, under the admin one.
    let heavy = "{ allUsers(limit: 100) { items { email roles { name } } } }";
    let (_, _, body) = app.graphql_as(Some(&admin.access), heavy, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    // A moderator (admin:read, so the admin ceiling) also passes; an anonymous caller does not.
    let (_, _, body) = app
        .graphql_as(Some(&moderator.access), heavy, json!({}))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let (_, _, body) = app.graphql_as(None, heavy, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX");
    assert_eq!(body["errors"][0]["extensions"]["limit"], 100);
}

#[tokio::test]
async fn the_budget_decreases_by_the_cost_and_is_refused_when_used_up() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.anonymous_budget = Some(Quota {
            limit: 12,
            window: Duration::from_secs(3600),
        });
        s.graphql.cost_extension = true;
    })
    .await;
    let query = "{ rateLimit { limit cost remaining resetAt } }";
    let (_, _, first) = app.post_graphql(query, json!({})).await;
    let status = &first["data"]["rateLimit"];
    assert_eq!(status["limit"], 12, "{first}");
    let cost = status["cost"].as_u64().unwrap();
    assert!(cost >= 1);
    assert_eq!(status["remaining"], 12 - cost);
    assert_eq!(first["extensions"]["cost"]["requested"], cost);
    assert_eq!(first["extensions"]["cost"]["limit"], 1000);
    let (_, _, second) = app.post_graphql(query, json!({})).await;
    assert_eq!(second["data"]["rateLimit"]["remaining"], 12 - 2 * cost);

    let mut refused = None;
    for _ in 0..20 {
        let (_, _, body) = app.post_graphql(query, json!({})).await;
        if code(&body) == "RATE_LIMITED" {
            refused = Some(body);
            break;
        }
    }
    let refused = refused.expect("the budget runs out");
    assert!(
        refused["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(refused.get("data").is_none());
}

/// async-graphql reports a variable that fails its scalar's parsing as a plain field error: the
/// one mapping made from the library's message (`graphql::extension::decorate_error`).
#[tokio::test]
async fn an_argument_that_fails_coercion_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let response = app
        .gql(
            Some(&admin.access),
            "query($after: DateTime) { allUsers(filter: { createdAfter: $after }) { totalCount } }",
            json!({ "after": "not a date" }),
        )
        .await;
    assert_eq!(response.code(), "BAD_USER_INPUT", "{}", response.body);
}

#[tokio::test]
async fn a_document_with_several_operations_needs_an_operation_name() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(
            None,
            "query A { __typename } query B { __typename }",
            json!({}),
        )
        .await;
    assert_eq!(response.code(), "BAD_REQUEST", "{}", response.body);
    assert!(response.body.get("data").is_none());
}

/// A document validated once without variables keeps its validation (the next request for the
/// same text skips async-graphql's rules), but a request that brings variables is validated
/// again: a value can be wrong for the argument it fills.
#[tokio::test]
async fn a_kept_validation_never_stands_in_for_variables() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let query = "query($limit: Int! = 10) { allUsers(limit: $limit) { totalCount } }";
    for _ in 0..2 {
        let response = app.gql(Some(&admin.access), query, json!({})).await;
        assert!(response.body.get("errors").is_none(), "{}", response.body);
    }
    let response = app
        .gql(Some(&admin.access), query, json!({ "limit": "twenty" }))
        .await;
    assert_eq!(
        response.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{}",
        response.body
    );
    assert!(response.body.get("data").is_none());
    let response = app
        .gql(Some(&admin.access), query, json!({ "limit": 5 }))
        .await;
    assert!(response.body.get("errors").is_none(), "{}", response.body);
}

/// The same document again without variables runs on the schema without extensions
/// (`schema::Schemas`), its limits checked and its errors decorated by the transport: it must
/// answer as its first run did — the same data, every error with its code and this request's id,
/// the cost extension — and hold each caller to their own ceiling.
#[tokio::test]
async fn a_repeated_operation_answers_as_its_first_run_did() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.cost_extension = true;
        s.graphql.max_complexity = 100;
        s.graphql.admin_max_complexity = 2000;
    })
    .await;
    let user = app.signed_up("repeat@example.com").await;
    // A field the caller may not read, beside one they may: a field error in a partial answer.
    let query = "{ me { email } allUsers(limit: 1) { totalCount } }";
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = app.gql(Some(&user.access), query, json!({})).await;
        let error = &response.body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "FORBIDDEN",
            "{}",
            response.body
        );
        assert_eq!(
            error["extensions"]["requestId"],
            response.header("x-request-id"),
            "{}",
            response.body
        );
        let cost = response.body["extensions"]["cost"].clone();
        assert!(cost["requested"].as_u64().is_some_and(|c| c > 0), "{cost}");
        answers.push(json!([
            response.body["data"],
            error["message"],
            error["path"],
            cost
        ]));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");

    // Kept after an admin's run, the document still holds a user to the user's ceiling.
    let admin = app.admin().await;
    let heavy = "{ allUsers(limit: 100) { items { email roles { name } } } }";
    for _ in 0..2 {
        let response = app.gql(Some(&admin.access), heavy, json!({})).await;
        assert!(response.body.get("errors").is_none(), "{}", response.body);
    }
    for _ in 0..2 {
        let response = app.gql(Some(&user.access), heavy, json!({})).await;
        assert_eq!(response.code(), "QUERY_TOO_COMPLEX", "{}", response.body);
        assert_eq!(response.body["errors"][0]["extensions"]["limit"], 100);
        assert!(response.body.get("data").is_none());
    }
}
