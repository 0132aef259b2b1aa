//! Identity: registration, login, sessions and token rotation, authentication of every request.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use multipult::features::auth::settings::SocialSettings;

use crate::helpers::{LOGIN, PASSWORD, REFRESH, Session, TestApp, code, header};

const ME: &str = "{ me { id email roles { name } permissions } }";

#[tokio::test]
async fn register_login_me_refresh_reuse_and_logout() {
    let app = TestApp::spawn().await;
    let registered = app.register("Ada@Example.com", PASSWORD).await;
    assert!(
        registered["data"]["register"]["message"].is_string(),
        "{registered}"
    );

    // Emails are case-insensitive.
    let session = app.login("ada@example.COM", PASSWORD).await;
    let (status, _, me) = app.graphql_as(Some(&session.access), ME, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["me"]["email"], "ada@example.com");
    assert_eq!(me["data"]["me"]["id"], session.user_id.as_str());
    assert_eq!(me["data"]["me"]["roles"], json!([{ "name": "user" }]));

    // Rotation: the new pair works, and the old refresh token is spent.
    let (_, _, rotated) = app
        .graphql_as(None, REFRESH, json!({ "t": session.refresh }))
        .await;
    let second = Session::from_payload(&rotated["data"]["refreshSession"]);
    assert_ne!(second.refresh, session.refresh);
    let (status, _, _) = app.graphql_as(Some(&second.access), ME, json!({})).await;
    assert_eq!(status, 200);

    // Reusing the spent token fails and revokes the whole family: the newest one fails too.
    let (_, _, reused) = app
        .graphql_as(None, REFRESH, json!({ "t": session.refresh }))
        .await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    let (_, _, newest) = app
        .graphql_as(None, REFRESH, json!({ "t": second.refresh }))
        .await;
    assert_eq!(code(&newest), "UNAUTHENTICATED", "{newest}");
    // …and so do the session's access tokens.
    let (status, _, _) = app.graphql_as(Some(&second.access), ME, json!({})).await;
    assert_eq!(status, 401);

    // A fresh login, then logout ends that session.
    let third = app.login("ada@example.com", PASSWORD).await;
    let (_, _, out) = app
        .graphql_as(Some(&third.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let (status, _, _) = app.graphql_as(Some(&third.access), ME, json!({})).await;
    assert_eq!(status, 401);
    let (_, _, after) = app
        .graphql_as(None, REFRESH, json!({ "t": third.refresh }))
        .await;
    assert_eq!(code(&after), "UNAUTHENTICATED");
}

#[tokio::test]
async fn registering_a_taken_email_answers_the_same_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let register = |email: &str, password: &str| {
        app.client
            .post(app.url("/graphql"))
            .json(&json!({
                "query": "mutation($input: RegisterInput!) { register(input: $input) { message } }",
                "variables": { "input": { "email": email, "password": password } },
            }))
            .send()
    };
    let first = register("taken@example.com", PASSWORD).await.unwrap();
    let second = register("TAKEN@example.com", "a different passphrase")
        .await
        .unwrap();
    assert_eq!(first.status(), second.status());
    let (first, second) = (first.bytes().await.unwrap(), second.bytes().await.unwrap());
    assert_eq!(first, second, "the two answers are byte for byte the same");
    // The original password still works, the second does not.
    assert!(app.login_body("taken@example.com", PASSWORD).await["data"]["login"].is_object());
    let body = app
        .login_body("taken@example.com", "a different passphrase")
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_give_the_same_error() {
    let app = TestApp::spawn().await;
    app.register("known@example.com", PASSWORD).await;
    let wrong = app
        .login_body("known@example.com", "not the password at all")
        .await;
    let unknown = app
        .login_body("nobody@example.com", "not the password at all")
        .await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    assert_eq!(
        wrong["errors"][0]["extensions"]["code"],
        unknown["errors"][0]["extensions"]["code"]
    );
    assert!(wrong["data"].is_null() && unknown["data"].is_null());
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let app = TestApp::spawn_with(|s| s.auth.login_max_failures = 3).await;
    app.register("target@example.com", PASSWORD).await;
    for _ in 0..3 {
        let body = app
            .login_body("target@example.com", "wrong wrong wrong")
            .await;
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
    // Even the right password is refused while throttled.
    let body = app.login_body("target@example.com", PASSWORD).await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    assert!(
        body["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            > 0
    );
}

fn forged(
    app: &TestApp,
    session: &Session,
    edit: impl FnOnce(&mut Value),
    secret: Option<&[u8]>,
    alg: Algorithm,
) -> String {
    let settings = &app.state.settings;
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "sub": session.user_id, "sid": uuid::Uuid::new_v4(), "epoch": 0,
        "iss": settings.auth.jwt_issuer, "aud": settings.auth.jwt_audience,
        "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4(),
    });
    edit(&mut claims);
    let key = secret.unwrap_or(settings.secrets.jwt_secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_never_anonymous() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("victim@example.com").await;

    let mut tampered = session.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unsigned = {
        let mut parts = session.access.split('.');
        let _ = parts.next();
        let payload = parts.next().unwrap();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    let cases = [
        ("tampered signature", tampered),
        ("alg none", unsigned),
        (
            "wrong audience",
            forged(
                &app,
                &session,
                |c| c["aud"] = json!("someone-else"),
                None,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong issuer",
            forged(
                &app,
                &session,
                |c| c["iss"] = json!("evil"),
                None,
                Algorithm::HS256,
            ),
        ),
        (
            "expired",
            forged(
                &app,
                &session,
                |c| c["exp"] = json!(chrono::Utc::now().timestamp() - 3600),
                None,
                Algorithm::HS256,
            ),
        ),
        (
            "other key",
            forged(&app, &session, |_| {}, Some(&[7u8; 48]), Algorithm::HS256),
        ),
        (
            "other algorithm",
            forged(&app, &session, |_| {}, None, Algorithm::HS512),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in cases {
        // Even a field anyone may read is refused: a bad credential is never anonymity.
        let (status, headers, body) = app
            .graphql_as(Some(&token), "{ apiInfo { version } me { id } }", json!({}))
            .await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(code(&body), "UNAUTHENTICATED", "{name}");
        assert!(body.get("data").is_none(), "{name}: {body}");
        assert!(
            header(&headers, "www-authenticate").starts_with("Bearer"),
            "{name}"
        );
    }
    // The genuine token still works.
    let (status, _, _) = app.graphql_as(Some(&session.access), ME, json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_expired_access_token_does_not_block_refreshing_or_logging_in() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("refresher@example.com").await;
    let expired = forged(
        &app,
        &session,
        |c| c["exp"] = json!(0),
        None,
        Algorithm::HS256,
    );
    let (status, _, body) = app
        .graphql_as(Some(&expired), REFRESH, json!({ "t": session.refresh }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["refreshSession"]["accessToken"].is_string());
    let (status, _, body) = app
        .graphql_as(
            Some(&expired),
            LOGIN,
            json!({ "input": { "email": "refresher@example.com", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_deactivated_users_unexpired_token_fails_on_the_next_request() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("leaver@example.com").await;
    assert_eq!(
        app.graphql_as(Some(&session.access), ME, json!({})).await.0,
        200
    );
    let id = uuid::Uuid::parse_str(&session.user_id).unwrap();
    multipult::identity::accounts::set_active(&app.state, id, false)
        .await
        .unwrap();
    let (status, _, body) = app.graphql_as(Some(&session.access), ME, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let (_, _, body) = app
        .graphql_as(None, REFRESH, json!({ "t": session.refresh }))
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert_eq!(
        code(&app.login_body("leaver@example.com", PASSWORD).await),
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn logging_out_everywhere_invalidates_every_token() {
    let app = TestApp::spawn().await;
    let laptop = app.signed_up("everywhere@example.com").await;
    let phone = app.login("everywhere@example.com", PASSWORD).await;
    let (_, _, body) = app
        .graphql_as(
            Some(&phone.access),
            "mutation { logoutAllSessions }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["logoutAllSessions"], true, "{body}");
    for session in [&laptop, &phone] {
        assert_eq!(
            app.graphql_as(Some(&session.access), ME, json!({})).await.0,
            401
        );
        let (_, _, body) = app
            .graphql_as(None, REFRESH, json!({ "t": session.refresh }))
            .await;
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_and_keeps_this_one() {
    let app = TestApp::spawn().await;
    let other = app.signed_up("changer@example.com").await;
    let this = app.login("changer@example.com", PASSWORD).await;
    let query = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { accessToken refreshToken user { id } } }";

    let (_, _, wrong) = app
        .graphql_as(
            Some(&this.access),
            query,
            json!({ "c": "nope", "n": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT");
    assert!(wrong["errors"][0]["extensions"]["fields"]["currentPassword"].is_string());

    let (_, _, changed) = app
        .graphql_as(
            Some(&this.access),
            query,
            json!({ "c": PASSWORD, "n": "a brand new passphrase" }),
        )
        .await;
    let renewed = Session::from_payload(&changed["data"]["changePassword"]);
    assert_eq!(
        app.graphql_as(Some(&renewed.access), ME, json!({})).await.0,
        200
    );
    for old in [&other.access, &this.access] {
        assert_eq!(app.graphql_as(Some(old), ME, json!({})).await.0, 401);
    }
    let (_, _, body) = app
        .graphql_as(None, REFRESH, json!({ "t": other.refresh }))
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert_eq!(
        code(&app.login_body("changer@example.com", PASSWORD).await),
        "UNAUTHENTICATED"
    );
    assert!(
        app.login_body("changer@example.com", "a brand new passphrase")
            .await["data"]["login"]
            .is_object()
    );
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_revoked() {
    let app = TestApp::spawn().await;
    let first = app.signed_up("devices@example.com").await;
    let second = app.login("devices@example.com", PASSWORD).await;
    let (_, _, body) = app
        .graphql_as(
            Some(&second.access),
            "{ sessions { id current } }",
            json!({}),
        )
        .await;
    let sessions = body["data"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].clone();

    let (_, _, revoked) = app
        .graphql_as(
            Some(&second.access),
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(revoked["data"]["revokeSession"], true, "{revoked}");
    assert_eq!(
        app.graphql_as(Some(&first.access), ME, json!({})).await.0,
        401
    );
    assert_eq!(
        app.graphql_as(Some(&second.access), ME, json!({})).await.0,
        200
    );

    // Someone else's (or an ended) session is not found.
    let stranger = app.signed_up("stranger@example.com").await;
    let (_, _, body) = app
        .graphql_as(
            Some(&stranger.access),
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn a_guarded_field_is_forbidden_without_the_permission_and_resolves_with_the_role() {
    let app = TestApp::spawn().await;
    let plain = app.signed_up("plain@example.com").await;
    let query = "query($id: ID!) { user(id: $id) { email } }";
    let vars = json!({ "id": plain.user_id });

    let (_, _, anonymous) = app.graphql_as(None, query, vars.clone()).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let (_, _, forbidden) = app
        .graphql_as(Some(&plain.access), query, vars.clone())
        .await;
    assert_eq!(code(&forbidden), "FORBIDDEN", "{forbidden}");
    assert!(forbidden["data"]["user"].is_null());

    let moderator = app.signed_up("mod@example.com").await;
    app.grant_role(&moderator.user_id, "moderator").await;
    let (_, _, allowed) = app.graphql_as(Some(&moderator.access), query, vars).await;
    assert_eq!(
        allowed["data"]["user"]["email"], "plain@example.com",
        "{allowed}"
    );
    let (_, _, me) = app.graphql_as(Some(&moderator.access), ME, json!({})).await;
    assert!(
        me["data"]["me"]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("users:read"))
    );
}

#[tokio::test]
async fn invalid_input_names_every_field() {
    let app = TestApp::spawn().await;
    let (_, _, body) = app
        .graphql_as(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { message } }",
            json!({ "input": { "email": "not-an-email", "password": "short", "username": "Bad Name!", "displayName": "x".repeat(500) } }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let fields = &body["errors"][0]["extensions"]["fields"];
    for field in ["email", "password", "username", "displayName"] {
        assert!(fields[field].is_string(), "{field} missing: {body}");
    }
    let long_email = format!("{}@example.com", "a".repeat(300));
    let (_, _, body) = app
        .graphql_as(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { message } }",
            json!({ "input": { "email": long_email, "password": "x".repeat(200) } }),
        )
        .await;
    let fields = &body["errors"][0]["extensions"]["fields"];
    assert!(
        fields["email"].is_string() && fields["password"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn the_profile_can_be_updated_and_usernames_are_unique() {
    let app = TestApp::spawn().await;
    let first = app.signed_up("one@example.com").await;
    let second = app.signed_up("two@example.com").await;
    let query = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { username displayName } }";
    let (_, _, body) = app
        .graphql_as(
            Some(&first.access),
            query,
            json!({ "input": { "username": "first_user", "displayName": " First " } }),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"],
        json!({ "username": "first_user", "displayName": "First" }),
        "{body}"
    );
    let (_, _, taken) = app
        .graphql_as(
            Some(&second.access),
            query,
            json!({ "input": { "username": "first_user" } }),
        )
        .await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
}

#[tokio::test]
async fn websocket_init_authenticates_and_refuses_bad_tokens_with_4403() {
    use crate::ws::{close_code, connect, next_json, send};
    let app = TestApp::spawn().await;
    let session = app.signed_up("socket@example.com").await;

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", session.access) } })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "me", "payload": { "query": "{ me { email } }" } }),
    )
    .await;
    let result = next_json(&mut socket).await;
    assert_eq!(
        result["payload"]["data"]["me"]["email"], "socket@example.com",
        "{result}"
    );

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": "forged.token.value" } }),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, 4403);

    // Without a token the connection is anonymous: `me` is refused, public fields answer.
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    crate::ws::init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ me { email } }" } }),
    )
    .await;
    let result = next_json(&mut socket).await;
    assert_eq!(
        result["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{result}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn registration_mails_a_verification_token_that_works_once() {
    let app = TestApp::spawn().await;
    app.register("verify@example.com", PASSWORD).await;
    let mail = app
        .wait_for_mail("verify@example.com", "Confirm your email address")
        .await;
    assert!(mail.contains("verify-email?token="), "{mail}");
    let token = crate::helpers::mail_token(&mail);
    assert_eq!(token.len(), 43);

    let session = app.login("verify@example.com", PASSWORD).await;
    let (_, _, me) = app
        .graphql_as(Some(&session.access), "{ me { isVerified } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["isVerified"], false);

    let verify = "mutation($t: String!) { verifyEmail(token: $t) }";
    let (_, _, body) = app.graphql_as(None, verify, json!({ "t": token })).await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");
    let (_, _, me) = app
        .graphql_as(Some(&session.access), "{ me { isVerified } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["isVerified"], true);

    let (_, _, again) = app.graphql_as(None, verify, json!({ "t": token })).await;
    assert_eq!(code(&again), "BAD_USER_INPUT");
    assert!(again["errors"][0]["extensions"]["fields"]["token"].is_string());
}

#[tokio::test]
async fn a_second_registration_of_an_address_mails_its_owner_instead() {
    let app = TestApp::spawn().await;
    app.register("owner@example.com", PASSWORD).await;
    app.wait_for_mail("owner@example.com", "Confirm your email address")
        .await;
    app.register("owner@example.com", "someone else entirely")
        .await;
    app.wait_for_mail("owner@example.com", "You already have an account")
        .await;
}

#[tokio::test]
async fn password_reset_end_to_end_ends_every_old_session() {
    let app = TestApp::spawn().await;
    let old = app.signed_up("forgetful@example.com").await;
    let request = "mutation($e: String!) { requestPasswordReset(email: $e) }";

    // Unknown addresses get the same answer and no mail.
    let (_, _, unknown) = app
        .graphql_as(None, request, json!({ "e": "ghost@example.com" }))
        .await;
    assert_eq!(unknown["data"]["requestPasswordReset"], true);

    let (_, _, body) = app
        .graphql_as(None, request, json!({ "e": "Forgetful@example.com" }))
        .await;
    assert_eq!(body["data"]["requestPasswordReset"], true);
    let mail = app
        .wait_for_mail("forgetful@example.com", "Reset your password")
        .await;
    let token = crate::helpers::mail_token(&mail);

    let reset = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }";
    let (_, _, weak) = app
        .graphql_as(None, reset, json!({ "t": token, "p": "short" }))
        .await;
    assert_eq!(code(&weak), "BAD_USER_INPUT");
    let (_, _, done) = app
        .graphql_as(
            None,
            reset,
            json!({ "t": token, "p": "my new long passphrase" }),
        )
        .await;
    assert_eq!(done["data"]["resetPassword"], true, "{done}");

    assert_eq!(
        app.graphql_as(Some(&old.access), ME, json!({})).await.0,
        401
    );
    let (_, _, refresh) = app
        .graphql_as(None, REFRESH, json!({ "t": old.refresh }))
        .await;
    assert_eq!(code(&refresh), "UNAUTHENTICATED");
    assert_eq!(
        code(&app.login_body("forgetful@example.com", PASSWORD).await),
        "UNAUTHENTICATED"
    );
    assert!(
        app.login_body("forgetful@example.com", "my new long passphrase")
            .await["data"]["login"]
            .is_object()
    );
    let (_, _, reused) = app
        .graphql_as(
            None,
            reset,
            json!({ "t": token, "p": "another long passphrase" }),
        )
        .await;
    assert_eq!(code(&reused), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_mail_job_that_keeps_failing_is_retried_with_growing_delays_then_dead() {
    // SMTP on a port nothing listens on: every delivery fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let base = Duration::from_millis(150);
    let app = TestApp::spawn_with(|s| {
        s.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        s.mail.smtp_timeout = Duration::from_secs(2);
        s.jobs.max_attempts = 3;
        s.jobs.backoff_base = base;
    })
    .await;
    let started = std::time::Instant::now();
    app.register("unlucky@example.com", PASSWORD).await;
    let mut stats = app.state.jobs.stats().await.unwrap();
    for _ in 0..200 {
        if stats.dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = app.state.jobs.stats().await.unwrap();
    }
    assert_eq!(stats.dead, 1, "{stats:?}");
    assert_eq!(stats.pending, 0, "{stats:?}");
    // Two retries waited base and then 2·base.
    assert!(
        started.elapsed() >= base * 3,
        "dead after {:?}",
        started.elapsed()
    );

    use sea_orm::EntityTrait as _;
    let jobs = multipult::entities::jobs::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].attempts, 3);
    assert_eq!(jobs[0].state, "dead");
    assert!(
        jobs[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("delivery failed")
    );
    assert!(
        jobs[0].request_id.is_some(),
        "the job carries the request id"
    );

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"jobs_total{kind="auth_mail",outcome="retry"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"jobs_total{kind="auth_mail",outcome="dead"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_enqueued_before_a_restart_is_delivered_after_it() {
    let dir = std::env::temp_dir().join(format!(
        "multipult-restart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A database both instances share, made for this test and dropped when `_shared` goes.
    let (_shared, database_url) = match crate::helpers::test_database_url() {
        Some(admin) => {
            let (guard, url) = crate::helpers::TestDatabase::create(&admin).await;
            (Some(guard), url)
        }
        None => (None, format!("sqlite://{}/app.db?mode=rwc", dir.display())),
    };
    let first = TestApp::spawn_with(|s| {
        s.database.url = database_url.clone().into();
        s.database.max_connections = 2;
        s.jobs.workers = 0; // enqueue only: this instance dies before delivering
    })
    .await;
    first.register("patient@example.com", PASSWORD).await;
    assert_eq!(first.state.jobs.stats().await.unwrap().pending, 1);
    let mut first = first;
    first.begin_shutdown().unwrap().await.unwrap().unwrap();
    drop(first);

    let second = TestApp::spawn_with(|s| {
        s.database.url = database_url.clone().into();
        s.database.max_connections = 2;
    })
    .await;
    second
        .wait_for_mail("patient@example.com", "Confirm your email address")
        .await;
}

pub fn totp_code(secret: &str, offset_secs: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build_noncompliant();
    let now = u64::try_from(chrono::Utc::now().timestamp() + offset_secs).unwrap();
    totp.generate(now).to_string()
}

#[tokio::test]
async fn two_factor_enrolment_login_backup_codes_and_disabling() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("careful@example.com").await;
    let token = Some(session.access.as_str());

    let (_, _, setup) = app
        .graphql_as(
            token,
            "mutation { enableTwoFactor { secret otpauthUri } }",
            json!({}),
        )
        .await;
    let secret = setup["data"]["enableTwoFactor"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = setup["data"]["enableTwoFactor"]["otpauthUri"]
        .as_str()
        .unwrap();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains("careful%40example.com"),
        "{uri}"
    );

    // The secret is stored encrypted, never in the clear.
    use sea_orm::EntityTrait as _;
    let rows = multipult::entities::user_totp::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(
        rows[0].secret_encrypted.starts_with("v2:") && !rows[0].secret_encrypted.contains(&secret)
    );

    let confirm = "mutation($c: String!) { confirmTwoFactor(code: $c) { backupCodes } }";
    let (_, _, wrong) = app
        .graphql_as(token, confirm, json!({ "c": "000000" }))
        .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT", "{wrong}");
    // The same code string is replayed below: computed again, it would be the next step's code
    // whenever the test crosses a 30-second boundary in between.
    let confirm_code = totp_code(&secret, 0);
    let (_, _, confirmed) = app
        .graphql_as(token, confirm, json!({ "c": confirm_code.clone() }))
        .await;
    let backup: Vec<String> =
        serde_json::from_value(confirmed["data"]["confirmTwoFactor"]["backupCodes"].clone())
            .unwrap();
    assert_eq!(backup.len(), 10, "{confirmed}");
    let (_, _, me) = app
        .graphql_as(token, "{ me { twoFactorEnabled } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["twoFactorEnabled"], true);

    let login = |code: Option<String>| {
        let input =
            json!({ "email": "careful@example.com", "password": PASSWORD, "twoFactorCode": code });
        app.graphql_as(None, LOGIN, json!({ "input": input }))
    };
    let (_, _, without) = login(None).await;
    assert_eq!(code(&without), "TWO_FACTOR_REQUIRED", "{without}");
    assert!(without["data"].is_null());
    let (_, _, bad) = login(Some("123456".into())).await;
    assert_eq!(code(&bad), "UNAUTHENTICATED");
    // The code used to confirm is spent; the next step's code works once.
    let (_, _, replay) = login(Some(confirm_code)).await;
    assert_eq!(code(&replay), "UNAUTHENTICATED", "{replay}");
    let next = totp_code(&secret, 30);
    let (_, _, ok) = login(Some(next.clone())).await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");
    let (_, _, again) = login(Some(next)).await;
    assert_eq!(code(&again), "UNAUTHENTICATED");

    // Each backup code works once (formatting is forgiving).
    let (_, _, with_backup) = login(Some(backup[0].to_uppercase())).await;
    assert!(
        with_backup["data"]["login"]["accessToken"].is_string(),
        "{with_backup}"
    );
    let (_, _, reused) = login(Some(backup[0].clone())).await;
    assert_eq!(code(&reused), "UNAUTHENTICATED");

    let disable = "mutation($p: String!, $c: String!) { disableTwoFactor(password: $p, code: $c) }";
    let (_, _, refused) = app
        .graphql_as(
            token,
            disable,
            json!({ "p": "wrong password!!", "c": backup[1] }),
        )
        .await;
    assert_eq!(code(&refused), "BAD_USER_INPUT");
    let (_, _, off) = app
        .graphql_as(token, disable, json!({ "p": PASSWORD, "c": backup[1] }))
        .await;
    assert_eq!(off["data"]["disableTwoFactor"], true, "{off}");
    let (_, _, plain) = login(None).await;
    assert!(plain["data"]["login"]["accessToken"].is_string(), "{plain}");
}

fn telegram_payload(bot_token: &str, auth_date: i64) -> serde_json::Map<String, Value> {
    use hmac::{KeyInit as _, Mac as _};
    use sha2::Digest as _;
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!(987654321012_i64));
    data.insert("first_name".into(), json!("Grace"));
    data.insert("last_name".into(), json!("Hopper"));
    data.insert("username".into(), json!("grace"));
    data.insert("auth_date".into(), json!(auth_date));
    let mut keys: Vec<_> = data.keys().cloned().collect();
    keys.sort();
    let check = keys
        .iter()
        .map(|k| match &data[k] {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let secret = sha2::Sha256::digest(bot_token.as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(check.as_bytes());
    data.insert(
        "hash".into(),
        json!(hex::encode(mac.finalize().into_bytes())),
    );
    data
}

#[tokio::test]
async fn telegram_login_accepts_only_fresh_correctly_signed_payloads() {
    let bot = "123456:telegram-test-bot-token";
    let app = TestApp::spawn_with(|s| {
        s.set_section(SocialSettings {
            telegram_bot_token: Some(bot.to_owned().into()),
            telegram_max_age: Duration::from_secs(3600),
            ..SocialSettings::default()
        });
    })
    .await;
    let query = "mutation($d: JSON!) { loginWithTelegram(data: $d) { accessToken user { id displayName } } }";
    let now = chrono::Utc::now().timestamp();

    let (_, _, ok) = app
        .graphql_as(None, query, json!({ "d": telegram_payload(bot, now) }))
        .await;
    let user = &ok["data"]["loginWithTelegram"]["user"];
    assert_eq!(user["displayName"], "Grace Hopper", "{ok}");
    // The same Telegram account signs in to the same user.
    let (_, _, again) = app
        .graphql_as(None, query, json!({ "d": telegram_payload(bot, now) }))
        .await;
    assert_eq!(again["data"]["loginWithTelegram"]["user"]["id"], user["id"]);

    let mut modified = telegram_payload(bot, now);
    modified.insert("username".into(), json!("mallory"));
    let (_, _, body) = app.graphql_as(None, query, json!({ "d": modified })).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    let (_, _, stale) = app
        .graphql_as(
            None,
            query,
            json!({ "d": telegram_payload(bot, now - 2 * 3600) }),
        )
        .await;
    assert_eq!(code(&stale), "UNAUTHENTICATED");

    let (_, _, other_bot) = app
        .graphql_as(
            None,
            query,
            json!({ "d": telegram_payload("999:other", now) }),
        )
        .await;
    assert_eq!(code(&other_bot), "UNAUTHENTICATED");

    let mut unsigned = telegram_payload(bot, now);
    unsigned.remove("hash");
    let (_, _, body) = app.graphql_as(None, query, json!({ "d": unsigned })).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

mod oauth {
    use crate::helpers::{TestApp, app_with_oauth, oauth_provider};
    use base64::Engine as _;
    use serde_json::{Value, json};
    use sha2::Digest as _;

    const FRONTEND: &str = crate::helpers::OAUTH_FRONTEND;

    fn query(url: &url::Url) -> std::collections::HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    fn fragment(location: &str) -> std::collections::HashMap<String, String> {
        let url = url::Url::parse(location).unwrap();
        url::form_urlencoded::parse(url.fragment().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    async fn start(app: &TestApp, redirect_uri: &str) -> reqwest::Response {
        app.client
            .get(app.url("/auth/oauth/generic/start"))
            .query(&[("redirect_uri", redirect_uri)])
            .send()
            .await
            .unwrap()
    }

    async fn callback(app: &TestApp, code: &str, state: &str) -> reqwest::Response {
        app.client
            .get(app.url("/auth/oauth/generic/callback"))
            .query(&[("code", code), ("state", state)])
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_code_flow_with_pkce_signs_in_and_hands_tokens_to_the_frontend() {
        let server = oauth_provider(json!({ "sub": "g-42", "email": "Oauth@Example.com", "email_verified": true, "name": "Octo Cat" })).await;
        let app = app_with_oauth(&server).await;

        let started = start(&app, &format!("{FRONTEND}?next=/home")).await;
        assert_eq!(started.status(), 302);
        let location = url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
        assert!(
            location
                .as_str()
                .starts_with(&format!("{}/authorize", server.uri()))
        );
        let params = query(&location);
        assert_eq!(params["client_id"], "client-123");
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["response_type"], "code");
        let state = params["state"].clone();
        let challenge = params["code_challenge"].clone();

        let finished = callback(&app, "the-code", &state).await;
        assert_eq!(finished.status(), 302);
        let location = finished.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!("{FRONTEND}?next=/home#")),
            "{location}"
        );
        let tokens = fragment(&location);
        assert!(tokens.contains_key("refresh_token"), "{location}");

        // The token request proved possession of the PKCE verifier.
        let requests = server.received_requests().await.unwrap();
        let token_request = requests.iter().find(|r| r.url.path() == "/token").unwrap();
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&token_request.body)
                .into_owned()
                .collect();
        assert_eq!(form["code"], "the-code");
        let verifier = &form["code_verifier"];
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        assert_eq!(expected, challenge);

        let (status, _, me) = app
            .graphql_as(
                Some(&tokens["access_token"]),
                "{ me { email isVerified displayName } }",
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            me["data"]["me"],
            json!({ "email": "oauth@example.com", "isVerified": true, "displayName": "Octo Cat" })
        );

        // The state is single use.
        let replay = callback(&app, "the-code", &state).await;
        assert_eq!(replay.status(), 400);
        let body: Value = replay.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }

    #[tokio::test]
    async fn unknown_state_and_foreign_redirect_uris_are_refused() {
        let server = oauth_provider(json!({ "sub": "x" })).await;
        let app = app_with_oauth(&server).await;
        let forged = callback(&app, "code", "made-up-state").await;
        assert_eq!(forged.status(), 400);

        for bad in [
            "https://evil.example/steal",
            "http://frontend.test.evil.com/auth/done",
            "http://frontend.test/other",
            "javascript:alert(1)",
            "",
        ] {
            let refused = start(&app, bad).await;
            assert_eq!(refused.status(), 400, "{bad}");
            let body: Value = refused.json().await.unwrap();
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
                "{bad}"
            );
        }
        let unknown = app
            .client
            .get(app.url("/auth/oauth/myspace/start"))
            .query(&[("redirect_uri", FRONTEND)])
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }

    #[tokio::test]
    async fn an_existing_account_is_linked_only_when_the_provider_verified_the_email() {
        // Unverified at the provider: no takeover of the existing account.
        let server = oauth_provider(
            json!({ "sub": "u-1", "email": "owner@example.com", "email_verified": false }),
        )
        .await;
        let app = app_with_oauth(&server).await;
        app.signed_up("owner@example.com").await;
        let started = start(&app, FRONTEND).await;
        let state = query(
            &url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap(),
        )["state"]
            .clone();
        let finished = callback(&app, "code", &state).await;
        let result = fragment(finished.headers()["location"].to_str().unwrap());
        assert_eq!(result["error"], "CONFLICT", "{result:?}");

        // Verified: the same account.
        let server = oauth_provider(
            json!({ "sub": "v-1", "email": "linked@example.com", "email_verified": "true" }),
        )
        .await;
        let app = app_with_oauth(&server).await;
        let existing = app.signed_up("linked@example.com").await;
        let started = start(&app, FRONTEND).await;
        let state = query(
            &url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap(),
        )["state"]
            .clone();
        let finished = callback(&app, "code", &state).await;
        let tokens = fragment(finished.headers()["location"].to_str().unwrap());
        let (_, _, me) = app
            .graphql_as(Some(&tokens["access_token"]), "{ me { id } }", json!({}))
            .await;
        assert_eq!(me["data"]["me"]["id"], existing.user_id.as_str());
    }
}

#[tokio::test]
async fn concurrent_wrong_guesses_are_refused_before_they_are_checked() {
    let app = TestApp::spawn_with(|s| s.auth.login_max_failures = 5).await;
    app.register("guessed@example.com", PASSWORD).await;
    let guesses = (0..19).map(|i| {
        let app = &app;
        async move {
            code(
                &app.login_body("guessed@example.com", &format!("wrong guess {i}"))
                    .await,
            )
            .to_owned()
        }
    });
    let codes = futures_util::future::join_all(guesses).await;
    let checked = codes.iter().filter(|c| *c == "UNAUTHENTICATED").count();
    let refused = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!(checked + refused, 19, "{codes:?}");
    assert!(checked <= 5, "only five guesses were checked: {codes:?}");
    // The right password is refused too while the account is throttled.
    let body = app.login_body("guessed@example.com", PASSWORD).await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
}

#[tokio::test]
async fn a_reset_request_does_the_same_work_for_known_and_unknown_addresses() {
    use std::sync::atomic::Ordering;
    let app = TestApp::spawn_with(|s| s.jobs.workers = 0).await;
    app.register("known@example.com", PASSWORD).await;
    let reset = "mutation($e: String!) { requestPasswordReset(email: $e) }";
    let mut work = vec![];
    for email in ["known@example.com", "unknown@example.com"] {
        let jobs_before = app.state.jobs.stats().await.unwrap().pending;
        let statements_before = app.statements.load(Ordering::SeqCst);
        let response = app.gql(None, reset, json!({ "e": email })).await;
        let statements = app.statements.load(Ordering::SeqCst) - statements_before;
        assert_eq!(response.data()["requestPasswordReset"], true);
        let jobs = app.state.jobs.stats().await.unwrap().pending - jobs_before;
        work.push((statements, jobs, response.body.to_string().len()));
    }
    assert_eq!(work[0], work[1], "(SQL statements, jobs, response bytes)");
    assert_eq!(work[0].1, 1, "one job either way");
}

#[tokio::test]
async fn strangers_cannot_flood_an_inbox() {
    let app = TestApp::spawn_with(|s| {
        s.graphql.max_aliases = 50;
        s.graphql.max_root_fields = 50;
    })
    .await;
    let owner = app.signed_up("victim@example.com").await;
    app.wait_for_mail("victim@example.com", "Confirm your email address")
        .await;
    let registrations: String = (0..20)
        .map(|i| format!("r{i}: register(input: {{ email: \"victim@example.com\", password: \"another long passphrase {i}\" }}) {{ message }} "))
        .collect();
    app.gql(None, &format!("mutation {{ {registrations} }}"), json!({}))
        .await;
    let resets: String = (0..20)
        .map(|i| format!("p{i}: requestPasswordReset(email: \"victim@example.com\") "))
        .collect();
    app.gql(None, &format!("mutation {{ {resets} }}"), json!({}))
        .await;
    let verifications: String = (0..20)
        .map(|i| format!("v{i}: requestEmailVerification "))
        .collect();
    app.gql(
        Some(&owner.access),
        &format!("mutation {{ {verifications} }}"),
        json!({}),
    )
    .await;
    // Let the jobs run.
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.state.jobs.stats().await.unwrap().pending > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mails = app.outbox();
    let count = |subject: &str| {
        mails
            .iter()
            .filter(|m| m.contains("To: victim@example.com") && m.contains(subject))
            .count()
    };
    let limit = usize::try_from(app.state.settings.auth.mail_limit.limit).unwrap();
    assert_eq!(count("You already have an account"), limit);
    assert_eq!(count("Reset your password"), limit);
    // The registration's own verification mail counts against the same cap.
    assert_eq!(count("Confirm your email address"), limit);
}

#[tokio::test]
async fn a_password_typed_as_the_email_is_not_kept_in_the_audit_log() {
    let app = TestApp::spawn().await;
    let secret = "my secret passphrase 123";
    app.login_body(secret, "anything at all").await;
    app.login_body("someone@example.com", "anything at all")
        .await;
    let entries = app.audit_entries().await;
    let failed: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "auth.login_failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(entries.iter().all(|e| !e.metadata.contains(secret)));
    let typed: Value = serde_json::from_str(&failed[1].metadata).unwrap();
    assert!(typed["emailFingerprint"].is_string(), "{typed}");
    let email: Value = serde_json::from_str(&failed[0].metadata).unwrap();
    assert_eq!(email["email"], "someone@example.com");
}

#[tokio::test]
async fn mailed_tokens_never_sit_in_the_jobs_table_and_finished_jobs_are_purged() {
    let app = TestApp::spawn_with(|s| s.jobs.retention = Duration::from_millis(1)).await;
    app.signed_up("mailed@example.com").await;
    app.gql(
        None,
        "mutation { requestPasswordReset(email: \"mailed@example.com\") }",
        json!({}),
    )
    .await;
    let verify = app
        .wait_for_mail("mailed@example.com", "Confirm your email address")
        .await;
    let reset = app
        .wait_for_mail("mailed@example.com", "Reset your password")
        .await;
    use sea_orm::EntityTrait as _;
    let jobs = multipult::entities::jobs::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    for token in [
        crate::helpers::mail_token(&verify),
        crate::helpers::mail_token(&reset),
    ] {
        assert!(
            jobs.iter().all(|j| !j.payload.contains(&token)),
            "no job payload holds a mailed token"
        );
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    multipult::maintenance::sweep(&app.state).await;
    let left = multipult::entities::jobs::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(left.iter().all(|j| j.state != "done"), "{left:?}");
}

#[tokio::test]
async fn addresses_mail_cannot_be_delivered_to_are_refused() {
    let app = TestApp::spawn().await;
    for email in [
        "a@[127.0.0.1]",
        "a@localhost",
        "a@127.0.0.1",
        "a b@example.com",
    ] {
        let response = app
            .gql(
                None,
                "mutation($e: String!) { register(input: { email: $e, password: \"long enough passphrase\" }) { message } }",
                json!({ "e": email }),
            )
            .await;
        assert_eq!(
            response.code(),
            "BAD_USER_INPUT",
            "{email}: {}",
            response.body
        );
        assert!(!response.field_error("email").is_empty(), "{email}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_and_the_outbox_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!(
        "multipult-private-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let data = dir.join("data");
    let embedded = crate::helpers::test_database_url().is_none();
    let app = TestApp::spawn_with(|s| {
        s.data_dir = data.clone();
        if embedded {
            s.database.url = format!("sqlite://{}/multipult.db?mode=rwc", data.display()).into();
            s.database.max_connections = 2;
        }
    })
    .await;
    app.signed_up("private@example.com").await;
    app.wait_for_mail("private@example.com", "Confirm your email address")
        .await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let outbox = data.join("outbox");
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&outbox), 0o700, "outbox folder");
    for mail in std::fs::read_dir(&outbox).unwrap() {
        assert_eq!(mode(&mail.unwrap().path()), 0o600, "mail file");
    }
    if embedded {
        assert_eq!(mode(&data.join("multipult.db")), 0o600, "database file");
    }
}

#[tokio::test]
async fn a_token_the_server_verified_before_is_still_checked_for_expiry_and_exact_text() {
    // The instance keeps tokens it verified (`identity::tokens::VerifiedTokens`); a kept token
    // skips the signature work, never the expiry check, and only the exact same text is kept.
    let app = TestApp::spawn_with(|s| s.auth.access_token_ttl = Duration::from_secs(1)).await;
    let session = app.signed_up("fleeting@example.com").await;
    for _ in 0..2 {
        let (status, _, body) = app.graphql_as(Some(&session.access), ME, json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    // The same header and claims under another signature: refused, though the claims are known.
    let (unsigned, signature) = session.access.rsplit_once('.').unwrap();
    let mut altered: Vec<char> = signature.chars().collect();
    altered[0] = if altered[0] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{unsigned}.{}", altered.into_iter().collect::<String>());
    let (status, _, body) = app.graphql_as(Some(&tampered), ME, json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(code(&body), "UNAUTHENTICATED");

    // Past `exp` and the 5 s leeway, the kept token is refused like any expired one.
    tokio::time::sleep(Duration::from_millis(7_200)).await;
    let (status, _, body) = app.graphql_as(Some(&session.access), ME, json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(code(&body), "UNAUTHENTICATED");
}
