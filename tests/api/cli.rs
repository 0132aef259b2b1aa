//! The built binary: configuration errors, check-config, and what a served request logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_multipult"));
    // A clean environment in an empty folder: no .env, no inherited variables.
    let dir = std::env::temp_dir().join(format!("multipult-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    command.env_clear().current_dir(dir);
    command
}

fn run(vars: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = binary()
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A query with a bearer token to a server the test started, its body as JSON.
async fn query_as(address: &str, token: &str, query: &str) -> Value {
    reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn bad_configuration_exits_2_naming_every_variable() {
    let (code, _, stderr) = run(
        &[
            ("APP_PORT", "abc"),
            ("DATABASE_URL", "::not a url::"),
            ("LOG_LEVEL", "info"),
        ],
        &["check-config"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("APP_PORT"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let (code, _, stderr) = run(&[("APP_ENV", "production")], &["serve"]);
    assert_eq!(code, 2);
    for variable in [
        "JWT_SECRET",
        "SECRETS_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "METRICS_TOKEN",
        "SMTP_URL",
    ] {
        assert!(stderr.contains(variable), "{variable} missing: {stderr}");
    }
}

#[test]
fn check_config_prints_settings_with_secrets_masked() {
    let secret = "s".repeat(48);
    let (code, stdout, stderr) = run(
        &[
            ("APP_ENV", "test"),
            ("JWT_SECRET", secret.as_str()),
            (
                "DATABASE_URL",
                "postgres://app:hunter2@db.internal:5432/app",
            ),
        ],
        &["check-config"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("APP_ENV=test"));
    assert!(stdout.contains("JWT_SECRET=********"));
    assert!(!stdout.contains(&secret));
    assert!(!stdout.contains("hunter2"));
    assert!(stdout.contains("db.internal"));
}

#[test]
fn development_secrets_are_generated_once_and_reused() {
    let dir = std::env::temp_dir().join(format!("multipult-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
            .env_clear()
            .current_dir(&dir)
            .arg("check-config")
            .output()
            .unwrap()
    };
    assert!(check().status.success());
    let stored = std::fs::read_to_string(dir.join("data/dev-secrets.env")).unwrap();
    assert!(stored.contains("JWT_SECRET="));
    assert!(check().status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("data/dev-secrets.env")).unwrap(),
        stored
    );
}

#[tokio::test]
async fn a_request_log_line_has_the_request_id_and_never_the_bearer_token() {
    let mut child = tokio::process::Command::from(binary())
        .envs([
            ("APP_ENV", "test"),
            ("APP_PORT", "0"),
            ("DATABASE_URL", "sqlite::memory:"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "info"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if value["message"] == "listening" {
                return value["address"].as_str().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("listening within 30 s");

    let response = reqwest::Client::new()
        .post(format!("http://{address}/graphql?token=query-secret"))
        .bearer_auth("secret-value")
        .header("x-request-id", "log-probe-1")
        .header("cookie", "session=cookie-secret")
        .json(&serde_json::json!({ "query": "query LogProbe { __typename }", "variables": { "password": "pw-secret" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    crate::helpers::sigterm(&child);
    let mut log = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
    {
        log.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful exit after SIGTERM");

    let all = log.join("\n");
    for secret in ["secret-value", "cookie-secret", "pw-secret", "query-secret"] {
        assert!(
            !all.contains(secret),
            "{secret} leaked into the log:\n{all}"
        );
    }
    let completed: Value = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request completed" && v["span"]["request_id"] == "log-probe-1")
        .unwrap_or_else(|| panic!("no log line for the request:\n{all}"));
    assert_eq!(completed["status"], 200);
    assert_eq!(completed["span"]["path"], "/graphql");
    assert_eq!(completed["span"]["operation_name"], "LogProbe");
    assert!(completed["latency_ms"].is_number());
}

#[tokio::test]
async fn healthcheck_exits_0_against_a_live_server_and_1_otherwise() {
    let app = crate::helpers::TestApp::spawn().await;
    let probe = |port: u16| {
        let mut command = binary();
        command.args(["healthcheck", "--port", &port.to_string()]);
        tokio::process::Command::from(command).status()
    };
    assert!(probe(app.port).await.unwrap().success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(probe(port).await.unwrap().code(), Some(1));
}

#[test]
fn migrate_commands_create_and_report_the_database() {
    let dir = std::env::temp_dir().join(format!(
        "multipult-migrate-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}/nested/app.db?mode=rwc", dir.display());
    let vars = [("APP_ENV", "test"), ("DATABASE_URL", url.as_str())];
    let (code, _, stderr) = run(&vars, &["migrate", "up"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        dir.join("nested/app.db").exists(),
        "the SQLite file and its folder are created"
    );
    let (code, stdout, stderr) = run(&vars, &["migrate", "status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("Pending"), "{stdout}");

    let (code, _, stderr) = run(&[("APP_ENV", "production")], &["migrate", "fresh"]);
    assert_eq!(
        code, 2,
        "production settings are checked before anything runs: {stderr}"
    );
}

/// A SQLite file opens in WAL mode with commits synced as `DATABASE_SQLITE_SYNCHRONOUS` says
/// (`NORMAL` by default: at checkpoints, not an `fsync` per commit); a value that could leave the
/// file unsound is refused before anything starts.
#[tokio::test]
async fn sqlite_commits_are_synced_as_configured() {
    use sea_orm::{ConnectionTrait as _, Statement};
    let dir = std::env::temp_dir().join(format!(
        "multipult-synchronous-{}",
        uuid::Uuid::new_v4().simple()
    ));
    for (index, (value, expected)) in [(None, 1), (Some("full"), 2), (Some("NORMAL"), 1)]
        .into_iter()
        .enumerate()
    {
        let url = format!("sqlite://{}/{index}.db?mode=rwc", dir.display());
        let mut vars = std::collections::BTreeMap::from([
            ("APP_ENV".to_owned(), "test".to_owned()),
            ("DATABASE_URL".to_owned(), url),
        ]);
        if let Some(value) = value {
            vars.insert("DATABASE_SQLITE_SYNCHRONOUS".to_owned(), value.to_owned());
        }
        let settings =
            multipult::config::Settings::from_vars(vars, &multipult::schema::sections()).unwrap();
        let db = multipult::infra::db::connect(&settings.database)
            .await
            .unwrap();
        let pragma = |name: &str| {
            Statement::from_string(db.get_database_backend(), format!("PRAGMA {name}"))
        };
        let row = db
            .query_one_raw(pragma("synchronous"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get_by_index::<i32>(0).unwrap(),
            expected,
            "{value:?}"
        );
        let row = db
            .query_one_raw(pragma("journal_mode"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "wal");
        db.close().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);

    for bad in ["off", "sometimes"] {
        let (code, _, stderr) = run(
            &[("APP_ENV", "test"), ("DATABASE_SQLITE_SYNCHRONOUS", bad)],
            &["check-config"],
        );
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains("DATABASE_SQLITE_SYNCHRONOUS") && stderr.contains("normal or full"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn an_admin_created_with_the_cli_can_log_in() {
    use std::io::Write as _;
    let dir =
        std::env::temp_dir().join(format!("multipult-admin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/app.db?mode=rwc", dir.display());
    let vars = [
        ("APP_ENV", "test"),
        ("DATABASE_URL", url.as_str()),
        ("LOG_LEVEL", "warn"),
    ];

    let mut child = binary()
        .envs(vars)
        .args([
            "admin",
            "create-user",
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a strong admin passphrase\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("created root@example.com"));

    // A generated password is printed once.
    let (code, stdout, stderr) = run(
        &vars,
        &["admin", "create-user", "--email", "gen@example.com"],
    );
    assert_eq!(code, 0, "{stderr}");
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();

    // Unknown role and invalid email are refused with exit code 2.
    let (code, _, stderr) = run(
        &vars,
        &[
            "admin",
            "assign-role",
            "--email",
            "gen@example.com",
            "--role",
            "wizard",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run(&vars, &["admin", "create-user", "--email", "nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("email"), "{stderr}");

    let (code, stdout, stderr) = run(
        &vars,
        &[
            "admin",
            "assign-role",
            "--email",
            "gen@example.com",
            "--role",
            "moderator",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("now has the moderator role"), "{stdout}");

    // Serve the same database and log in as both.
    let mut server = tokio::process::Command::from(binary())
        .envs(vars)
        .envs([
            ("APP_PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "info"),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next_line().await.unwrap().expect("server output");
        let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if value["message"] == "listening" {
            break value["address"].as_str().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    for (email, password) in [
        ("root@example.com", "a strong admin passphrase"),
        ("gen@example.com", generated.as_str()),
    ] {
        let body: Value = client
            .post(format!("http://{address}/graphql"))
            .json(&serde_json::json!({ "query": crate::helpers::LOGIN, "variables": { "input": { "email": email, "password": password } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["data"]["login"]["user"]["email"], email, "{body}");
    }
    let body: Value = client
        .post(format!("http://{address}/graphql"))
        .json(&serde_json::json!({ "query": crate::helpers::LOGIN, "variables": { "input": { "email": "root@example.com", "password": "a strong admin passphrase" } } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["data"]["login"]["accessToken"].as_str().unwrap();
    let me = query_as(&address, token, "{ me { roles { name } permissions } }").await;
    assert!(
        me["data"]["me"]["permissions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("admin:delete")),
        "{me}"
    );

    // Every command left its audit entry, the operator at the command line as the actor.
    let audit = query_as(
        &address,
        token,
        "{ auditLog(limit: 50) { items { action actorId userAgent targetId metadata } } }",
    )
    .await;
    let items = audit["data"]["auditLog"]["items"].as_array().unwrap();
    let by_cli: Vec<&Value> = items
        .iter()
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("cli (") && ua.contains('@'))
        })
        .collect();
    let actions: Vec<&str> = by_cli
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "user.create").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "role.assign").count(),
        1,
        "one assignment; the refused one left nothing: {audit}"
    );
    let assigned = by_cli
        .iter()
        .find(|e| e["action"] == "role.assign")
        .unwrap();
    assert_eq!(assigned["metadata"]["role"], "moderator");
    assert_eq!(assigned["metadata"]["targetEmail"], "gen@example.com");
    assert!(by_cli.iter().all(|e| e["actorId"].is_null()));
    server.kill().await.ok();
}

#[test]
fn seeding_is_idempotent_reports_progress_and_is_refused_in_production() {
    let dir =
        std::env::temp_dir().join(format!("multipult-seed-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/app.db?mode=rwc", dir.display());
    let vars = [
        ("APP_ENV", "development"),
        ("DATA_DIR", dir.to_str().unwrap()),
        ("DATABASE_URL", url.as_str()),
        ("LOG_LEVEL", "warn"),
    ];
    let (code, stdout, stderr) = run(&vars, &["admin", "seed", "--users", "12"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("seeded 10/14 accounts") && stdout.contains("seeded 14/14 accounts"),
        "{stdout}"
    );
    assert!(stdout.contains("14 created, 0 already there"), "{stdout}");
    let (code, stdout, _) = run(&vars, &["admin", "seed", "--users", "12"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("0 created, 14 already there"), "{stdout}");
    // One audit entry for the run that created accounts, none for the one that did not.
    let entries = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
        let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
        multipult::entities::audit_log::Entity::find()
            .filter(multipult::entities::audit_log::Column::Action.eq("admin.seed"))
            .all(&db)
            .await
            .unwrap()
    });
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0]
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("cli (")
    );
    assert!(
        entries[0].metadata.contains("\"created\":14"),
        "{}",
        entries[0].metadata
    );

    let production = [
        ("APP_ENV", "production"),
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("JWT_SECRET", "a-production-secret-of-at-least-32-bytes"),
        (
            "SECRETS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("AUTO_MIGRATE", "false"),
        ("METRICS_TOKEN", "a-metrics-token"),
        ("SMTP_URL", "smtp://127.0.0.1:1025"),
    ];
    let (code, _, stderr) = run(&production, &["admin", "seed"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("production"), "{stderr}");
}

fn env_example() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"))
        .unwrap()
}

/// `NAME` of a `NAME=…` or `# NAME=…` line.
fn variable_of(line: &str) -> Option<&str> {
    let line = line.trim_start_matches('#').trim_start();
    let (name, _) = line.split_once('=')?;
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    .then_some(name)
}

#[test]
fn the_example_file_works_as_a_dot_env_as_it_is() {
    let dir = std::env::temp_dir().join(format!("multipult-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), env_example()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
        .env_clear()
        .current_dir(&dir)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("MAIL_FROM=multipult <no-reply@localhost>"),
        "{stdout}"
    );
}

#[test]
fn every_variable_of_the_example_file_has_a_comment() {
    let text = env_example();
    let mut commented = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            commented = false;
        } else if let Some(name) = variable_of(line) {
            assert!(commented, "{name} has no comment above it in .env.example");
        } else if line.starts_with('#') {
            commented = true;
        }
    }
}

#[test]
fn check_config_shows_exactly_the_variables_of_the_example_file() {
    // Every optional part switched on, so every variable is read.
    let everything = [
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("PERSISTED_QUERIES", "apq"),
        ("AUDIT_RETENTION_DAYS", "30"),
        ("OAUTH_GOOGLE_CLIENT_ID", "id"),
        ("OAUTH_GOOGLE_CLIENT_SECRET", "secret"),
        ("OAUTH_GITHUB_CLIENT_ID", "id"),
        ("OAUTH_GITHUB_CLIENT_SECRET", "secret"),
        ("OAUTH_GENERIC_CLIENT_ID", "id"),
        ("OAUTH_GENERIC_CLIENT_SECRET", "secret"),
        ("OAUTH_GENERIC_AUTH_URL", "https://id.example.com/authorize"),
        ("OAUTH_GENERIC_TOKEN_URL", "https://id.example.com/token"),
        (
            "OAUTH_GENERIC_USERINFO_URL",
            "https://id.example.com/userinfo",
        ),
        ("OAUTH_REDIRECT_ALLOWLIST", "https://app.example.com/"),
    ];
    let (code, stdout, stderr) = run(&everything, &["check-config"]);
    assert_eq!(code, 0, "{stderr}");
    let shown: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    let text = env_example();
    let listed: std::collections::BTreeSet<&str> = text.lines().filter_map(variable_of).collect();
    let missing: Vec<_> = shown.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "read but not in .env.example: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in .env.example but never read: {extra:?}"
    );
}

/// Every `migrate` subcommand through the binary, on the default pool (not one connection), on
/// the test's backend; `fresh` several times in a row (it used to leave SQLite half-dropped).
#[tokio::test]
async fn every_migrate_subcommand_works_on_the_default_pool() {
    let dir = std::env::temp_dir().join(format!(
        "multipult-migrate-all-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (_database, url) = match crate::helpers::test_database_url() {
        Some(admin) => {
            let (guard, url) = crate::helpers::TestDatabase::create(&admin).await;
            (Some(guard), url)
        }
        None => (None, format!("sqlite://{}/app.db?mode=rwc", dir.display())),
    };
    let vars = [("APP_ENV", "test"), ("DATABASE_URL", url.as_str())];
    let pending = |stdout: &str| stdout.lines().filter(|l| l.starts_with("Pending")).count();
    let applied = |stdout: &str| stdout.lines().filter(|l| l.starts_with("Applied")).count();

    let (code, _, stderr) = run(&vars, &["migrate", "up"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(&vars, &["migrate", "status"]);
    assert_eq!(code, 0, "{stderr}");
    let total = applied(&stdout);
    assert!(total >= 6 && pending(&stdout) == 0, "{stdout}");

    let (code, _, stderr) = run(&vars, &["migrate", "down", "--steps", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run(&vars, &["migrate", "status"]);
    assert_eq!(pending(&stdout), 2, "{stdout}");
    let (code, _, stderr) = run(&vars, &["migrate", "up", "--steps", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run(&vars, &["migrate", "status"]);
    assert_eq!(pending(&stdout), 1, "{stdout}");

    for round in 0..3 {
        let (code, _, stderr) = run(&vars, &["migrate", "fresh"]);
        assert_eq!(code, 0, "fresh #{round}: {stderr}");
        let (_, stdout, _) = run(&vars, &["migrate", "status"]);
        assert_eq!((applied(&stdout), pending(&stdout)), (total, 0), "{stdout}");
    }
    // The database is usable afterwards.
    let (code, stdout, stderr) = run(
        &vars,
        &["admin", "create-user", "--email", "after-fresh@example.com"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// The migration crate's own CLI reads the database like the app: `.env`, else the development
/// default — no panic without `DATABASE_URL`.
#[test]
fn the_migration_crate_cli_works_without_database_url() {
    let dir =
        std::env::temp_dir().join(format!("multipult-mcli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command
        .env_clear()
        .current_dir(&dir)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .args(["-p", "migration", "--", "status"]);
    // What cargo itself needs, and nothing of the app's configuration.
    for name in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Pending"), "{text}");
    assert!(dir.join("data/multipult.db").exists(), "{text}");
}

/// README, docs, `.env.example`, compose and CI name PostgreSQL with one set of credentials, so a
/// command copied from one place works against servers started from another.
#[test]
fn every_documented_postgres_url_uses_one_credential_set() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join(".env.example"),
        root.join("docker-compose.yml"),
        root.join(".ci/run"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut urls = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("postgres://") {
            let rest = &text[at + "postgres://".len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '`' || c == '"' || c == ')')
                .unwrap_or(rest.len());
            let url = &rest[..end];
            // Placeholders in prose (`postgres://…`, `postgres://user:password@host/db`).
            if url.is_empty() || url.starts_with('…') || url.starts_with("user:") {
                continue;
            }
            urls += 1;
            assert!(
                url.starts_with("multipult:multipult@") && url.ends_with("/multipult"),
                "{}: postgres://{url} does not use multipult:multipult@…/multipult",
                file.display()
            );
            // Compose publishes PostgreSQL on loopback at 5432 by default.
            let host = url.split('@').nth(1).unwrap();
            assert!(
                host.starts_with("127.0.0.1:")
                    || host.starts_with("postgres:5432/")
                    || host.starts_with("127.0.0.1:$"),
                "{}: postgres://{url}",
                file.display()
            );
        }
    }
    assert!(urls >= 5, "found only {urls} PostgreSQL URLs");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    for published in [
        "127.0.0.1:${POSTGRES_PORT:-5432}:5432",
        "127.0.0.1:${REDIS_PORT:-6379}:6379",
    ] {
        assert!(
            compose.contains(published),
            "compose does not publish {published}"
        );
    }
}

#[tokio::test]
async fn the_first_screen_says_where_to_go_and_the_secrets_warning_comes_once() {
    // A fresh folder without configuration: development secrets are generated on the first start.
    let dir =
        std::env::temp_dir().join(format!("multipult-first-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let serve = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
            .env_clear()
            .current_dir(&dir)
            .envs([
                ("APP_PORT", "0"),
                ("DATABASE_URL", "sqlite::memory:"),
                ("LOG_FORMAT", "pretty"),
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    // What the server printed up to its first screen, and the GraphiQL address on it.
    // (The reader is handed back: the server's stdout must stay open.)
    type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;
    async fn first_screen(child: &mut tokio::process::Child) -> (Vec<String>, String, Lines) {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let mut graphiql = String::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push(line.clone());
                if let Some(url) = line.trim().strip_prefix("GraphiQL") {
                    graphiql = url.trim().to_owned();
                }
                // The screen's last line.
                if line.trim().starts_with("Metrics") {
                    return;
                }
            }
            panic!("no first screen in {seen:?}");
        })
        .await
        .expect("a first screen within 30 s");
        (seen, graphiql, lines)
    }

    let mut first = serve();
    let (screen, graphiql, _output) = first_screen(&mut first).await;
    assert!(
        graphiql.starts_with("http://127.0.0.1:") && graphiql.ends_with("/graphql"),
        "{graphiql}"
    );
    let text = screen.join("\n");
    assert!(text.contains("/health/live"), "{text}");
    assert!(text.contains("/metrics"), "{text}");
    assert!(
        text.contains("generated one"),
        "first start names the generated secrets: {text}"
    );
    // The printed address answers.
    let health = reqwest::get(graphiql.replace("/graphql", "/health/live"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    first.kill().await.ok();

    let mut second = serve();
    let (screen, _, _output) = first_screen(&mut second).await;
    let text = screen.join("\n");
    assert!(
        !text.contains("secret not set"),
        "later starts reuse the stored secrets quietly: {text}"
    );
    second.kill().await.ok();
}

#[test]
fn commands_print_results_on_stdout_and_logs_on_stderr() {
    let dir = std::env::temp_dir().join(format!("multipult-out-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/app.db?mode=rwc", dir.display());
    let (code, stdout, stderr) = run(
        &[
            ("DATABASE_URL", url.as_str()),
            ("LOG_LEVEL", "debug"),
            ("LOG_FORMAT", "json"),
        ],
        &["admin", "create-user", "--email", "piped@example.com"],
    );
    assert_eq!(code, 0, "{stderr}");
    // Only the results: a line that says what was created, the password, the reminder.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("created piped@example.com"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("password: "), "{stdout}");
    assert!(!stdout.contains('{'), "no log line on stdout: {stdout}");
    // The logs went to stderr.
    assert!(stderr.lines().any(|l| l.starts_with('{')), "{stderr}");
}

/// `secrets rotate` re-seals stored secrets with the new key; afterwards the old key can go.
#[tokio::test]
async fn secrets_rotate_reseals_every_stored_secret_with_the_new_key() {
    use crate::helpers::{LOGIN, PASSWORD, TestApp};
    use sea_orm::EntityTrait as _;
    use serde_json::json;

    let dir = std::env::temp_dir().join(format!(
        "multipult-rotate-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/app.db?mode=rwc", dir.display());
    let (old_key, new_key) = ("11".repeat(32), "22".repeat(32));
    let on_file = |key: &str| {
        let (url, key) = (url.clone(), key.to_owned());
        move |s: &mut multipult::config::Settings| {
            s.database.url = url.into();
            s.database.max_connections = 1;
            s.secrets.secrets_key = secrecy::SecretString::from(key);
        }
    };

    // Two-factor on, sealed with the old key.
    let app = TestApp::spawn_with(on_file(&old_key)).await;
    let session = app.signed_up("careful@example.com").await;
    let setup = app
        .gql(
            Some(&session.access),
            "mutation { enableTwoFactor { secret } }",
            json!({}),
        )
        .await;
    let secret = setup.data()["enableTwoFactor"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmed = app
        .gql(
            Some(&session.access),
            "mutation($c: String!) { confirmTwoFactor(code: $c) { backupCodes } }",
            json!({ "c": crate::auth::totp_code(&secret, 0) }),
        )
        .await;
    assert!(confirmed.body.get("errors").is_none(), "{}", confirmed.body);
    // And a Langfuse secret key.
    crate::organizations::create_org(&app, &session, "acme").await;
    let langfuse = wiremock::MockServer::start().await;
    for (route, body) in [
        (
            "/api/public/health",
            json!({ "status": "OK", "version": "3" }),
        ),
        (
            "/api/public/projects",
            json!({ "data": [{ "name": "demo" }] }),
        ),
    ] {
        wiremock::Mock::given(wiremock::matchers::path(route))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(body))
            .mount(&langfuse)
            .await;
    }
    crate::langfuse::save(&app, &session, "acme", "PRODUCTION", &langfuse.uri()).await;
    let old_id = app.state.secret_box.key_id().to_owned();
    drop(app);

    let vars = [
        ("APP_ENV", "test"),
        ("DATABASE_URL", url.as_str()),
        ("SECRETS_KEY", new_key.as_str()),
        ("SECRETS_KEY_PREVIOUS", old_key.as_str()),
        ("LOG_LEVEL", "warn"),
    ];
    let (code, stdout, stderr) = run(&vars, &["secrets", "rotate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("auth: re-sealed 1 of 1"), "{stdout}");
    assert!(stdout.contains("langfuse: re-sealed 1 of 1"), "{stdout}");
    let (code, again, _) = run(&vars, &["secrets", "rotate"]);
    assert_eq!(code, 0);
    assert!(again.contains("auth: re-sealed 0 of 1"), "{again}");
    assert!(again.contains("langfuse: re-sealed 0 of 1"), "{again}");

    // With the new key alone, the secret opens: signing in with a code works.
    let app = TestApp::spawn_with(on_file(&new_key)).await;
    let rows = multipult::entities::user_totp::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    let new_id = app.state.secret_box.key_id();
    assert_ne!(new_id, old_id);
    assert!(
        rows[0]
            .secret_encrypted
            .starts_with(&format!("v2:{new_id}:"))
    );
    let input = json!({ "email": "careful@example.com", "password": PASSWORD, "twoFactorCode": crate::auth::totp_code(&secret, 30) });
    let login = app.gql(None, LOGIN, json!({ "input": input })).await;
    assert!(
        login.data()["login"]["accessToken"].is_string(),
        "{}",
        login.body
    );
    // The Langfuse secret opens too: the saved connection tests OK.
    let tested = app
        .gql(
            login.data()["login"]["accessToken"].as_str(),
            "mutation { testLangfuseConnection(organization: \"acme\", environment: PRODUCTION) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(
        tested.data()["testLangfuseConnection"]["status"],
        "OK",
        "{}",
        tested.body
    );
    use multipult::features::langfuse::entity::settings;
    let row = settings::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(row.secret_key_id, new_id);
}

/// `Max open files` of a process: (soft, hard), from `/proc/<pid>/limits`.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_raises_the_open_file_limit_and_serves_no_more_connections_than_it_allows() {
    type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;
    let (_, hard) = open_file_limits("self");
    assert!(
        hard >= 600,
        "this test needs a hard open-file limit of 600 or more"
    );
    let serve = |ulimit: &str| {
        let dir = std::env::temp_dir().join(format!(
            "multipult-nofile-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" serve 2>&1"))
            .arg(env!("CARGO_BIN_EXE_multipult"))
            .env_clear()
            .current_dir(dir)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("APP_PORT", "0"),
                ("DATABASE_URL", "sqlite::memory:"),
                ("LOG_FORMAT", "json"),
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines: Lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    // The first log line whose message is `message`.
    async fn logged(lines: &mut Lines, message: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if value["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                {
                    return value;
                }
            }
            panic!("the server stopped before logging {message:?}");
        })
        .await
        .expect("logged within 30 s")
    }

    // A soft limit under the hard one (systemd's 1024, say) is raised to it.
    let (child, mut lines) = serve("-Sn 300");
    logged(&mut lines, "listening").await;
    let pid = child.id().unwrap().to_string();
    let raised = tokio::time::timeout(Duration::from_secs(10), async {
        while open_file_limits(&pid).0 != hard {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(raised.is_ok(), "{:?}", open_file_limits(&pid));
    drop(child);

    // A hard limit too low for HTTP_MAX_CONNECTIONS (10 000): fewer are served at once, and
    // the log says how many.
    let (child, mut lines) = serve("-n 600");
    let warning = logged(&mut lines, "HTTP_MAX_CONNECTIONS is above").await;
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["open_file_limit"], 600, "{warning}");
    assert_eq!(warning["serving"], 600 - 256, "{warning}");
    drop(child);
}
