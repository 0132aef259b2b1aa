//! Input hygiene: free text is normalised and trimmed, characters that spoof what a reader sees
//! are refused with the field named, refusals are counted and logged without their value.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp};

const UPDATE: &str =
    "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { displayName } }";

#[tokio::test]
async fn names_are_normalised_and_spoofing_characters_are_refused() {
    let app = TestApp::spawn().await;
    let session = app.signed_up("hygiene@example.com").await;
    let token = Some(session.access.as_str());

    // Decomposed "é" (e + U+0301) is stored composed, and trimmed.
    let (_, _, body) = app
        .graphql_as(
            token,
            UPDATE,
            json!({ "input": { "displayName": "  Ame\u{301}lie  " } }),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["displayName"], "Amélie",
        "{body}"
    );

    for (spoof, kind) in [
        ("evil\u{202E}gpj.exe", "text-direction"),
        ("ad\u{200B}min", "invisible"),
        ("ad\u{200D}min", "invisible"),
        ("name\u{FEFF}", "invisible"),
        ("two\nlines", "control"),
        ("bell\u{7}", "control"),
        ("\u{2066}isolate\u{2069}", "text-direction"),
    ] {
        let (_, _, body) = app
            .graphql_as(token, UPDATE, json!({ "input": { "displayName": spoof } }))
            .await;
        let error = &body["errors"][0]["extensions"];
        assert_eq!(error["code"], "BAD_USER_INPUT", "{spoof:?}: {body}");
        let message = error["fields"]["displayName"].as_str().unwrap();
        assert!(message.contains(kind), "{spoof:?}: {message}");
    }
    // Nothing changed.
    let (_, _, body) = app
        .graphql_as(token, "{ me { displayName } }", json!({}))
        .await;
    assert_eq!(body["data"]["me"]["displayName"], "Amélie");

    // Emoji sequences and other scripts are names too.
    let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} 山田 Łukasz";
    let (_, _, body) = app
        .graphql_as(token, UPDATE, json!({ "input": { "displayName": family } }))
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["displayName"], family,
        "{body}"
    );

    // Registration applies the same rules.
    let (_, _, body) = app
        .graphql_as(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { message } }",
            json!({ "input": { "email": "spoof@example.com", "password": PASSWORD, "displayName": "a\u{202E}b" } }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body["errors"][0]["extensions"]["fields"]["displayName"].is_string());
}

#[tokio::test]
async fn admin_free_text_follows_the_same_rules() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let target = app.signed_up("target@example.com").await;
    let token = Some(admin.access.as_str());

    let ban = "mutation($id: ID!, $reason: String!) { banUser(userId: $id, reason: $reason) { banReason } }";
    let (_, _, body) = app
        .graphql_as(
            token,
            ban,
            json!({ "id": target.user_id, "reason": "spam\u{202E}" }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body["errors"][0]["extensions"]["fields"]["reason"].is_string());
    // Several lines are fine in a reason; it is trimmed.
    let (_, _, body) = app
        .graphql_as(
            token,
            ban,
            json!({ "id": target.user_id, "reason": "  spam\r\nand abuse  " }),
        )
        .await;
    assert_eq!(
        body["data"]["banUser"]["banReason"], "spam\nand abuse",
        "{body}"
    );

    let (_, _, body) = app
        .graphql_as(
            token,
            "mutation { createRole(name: \"editor\", description: \"edits\u{200B}\", permissions: []) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(body["errors"][0]["extensions"]["fields"]["description"].is_string());
}

#[tokio::test]
async fn refusals_are_counted_and_logged_without_the_value() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    // The built server, its JSON log lines read from its standard output.
    let dir =
        std::env::temp_dir().join(format!("multipult-input-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
        .env_clear()
        .current_dir(&dir)
        .envs([
            ("APP_ENV", "test"),
            ("APP_PORT", "0"),
            ("DATABASE_URL", "sqlite::memory:"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "info"),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let address = loop {
        let line = lines.next_line().await.unwrap().expect("server output");
        let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        log.push(line);
        if value["message"] == "listening" {
            break value["address"].as_str().unwrap().to_owned();
        }
    };
    let marker = "visible-marker\u{202E}";
    let client = reqwest::Client::new();
    let body: Value = client
        .post(format!("http://{address}/graphql"))
        .json(&json!({
            "query": "mutation($input: RegisterInput!) { register(input: $input) { message } }",
            "variables": { "input": { "email": "counted@example.com", "password": PASSWORD, "displayName": marker } }
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );

    let metrics = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"input_rejected_total{field="displayName"} 1"#),
        "{metrics}"
    );
    let logged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            log.push(line);
            if value["message"] == "input rejected" {
                return value;
            }
        }
        Value::Null
    })
    .await
    .unwrap();
    assert_eq!(logged["fields"], "displayName", "{logged}");
    assert!(logged["span"]["request_id"].is_string(), "{logged}");
    server.kill().await.ok();
    assert!(
        !log.iter().any(|line| line.contains("visible-marker")),
        "the value is never logged"
    );
}
