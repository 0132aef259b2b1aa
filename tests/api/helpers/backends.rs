//! The backends a test runs on: SQLite in memory by default, a fresh PostgreSQL database with
//! `TEST_DATABASE_URL`, real Redis (own key prefix) with `TEST_REDIS_URL`; each removed afterwards.

use std::time::Duration;

use multipult::config::{RedisSettings, Settings};
use sea_orm::{ConnectionTrait as _, Database};
use secrecy::ExposeSecret as _;

pub fn test_redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

pub fn test_database_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Redis settings with a fresh key prefix, when `TEST_REDIS_URL` is set.
pub fn test_redis_settings() -> Option<RedisSettings> {
    test_redis_url().map(|url| RedisSettings {
        url: url.into(),
        pool_size: RedisSettings::DEFAULT_POOL_SIZE,
        timeout: Duration::from_secs(2),
        circuit_threshold: 3,
        circuit_cooldown: Duration::from_secs(1),
    })
}

/// Commands sent to Redis while `work` runs, read with MONITOR: every command sent on a
/// connection that carried `prefix` (an app's or a store's key prefix) (other tests share the server), keyed or not —
/// so a `PING` a connection pool sends before each call counts as the round trip it is.
pub async fn redis_commands<F: Future<Output = ()>>(prefix: &str, work: F) -> Vec<String> {
    monitor(prefix, work, false).await
}

/// Commands Lua scripts ran inside Redis while `work` runs, on keys under `prefix`.
pub async fn redis_script_commands<F: Future<Output = ()>>(prefix: &str, work: F) -> Vec<String> {
    monitor(prefix, work, true).await
}

async fn monitor<F: Future<Output = ()>>(prefix: &str, work: F, scripts: bool) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let url = test_redis_url().expect("the Redis pass");
    let address = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
    work.await;
    // A marker through another connection: everything the app sent before it is in the stream.
    let marker = format!("end-{}", uuid::Uuid::new_v4().simple());
    let mut other = tokio::net::TcpStream::connect(&address).await.unwrap();
    other
        .write_all(format!("ECHO {marker}\r\n").as_bytes())
        .await
        .unwrap();
    let mut sent = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(&marker) {
                return;
            }
            // What clients sent, or what scripts ran inside Redis.
            if line.contains(" lua] ") == scripts {
                sent.push(line);
            }
        }
    })
    .await
    .expect("the marker comes back");
    // `<time> [<db> <address>] "COMMAND" …`: the connection is the address.
    let connection = |line: &str| {
        let start = line.find('[')?;
        let end = start + line[start..].find(']')?;
        Some(line[start + 1..end].to_owned())
    };
    if scripts {
        sent.retain(|line| line.contains(prefix));
        return sent;
    }
    let ours: std::collections::HashSet<String> = sent
        .iter()
        .filter(|line| line.contains(prefix))
        .filter_map(|line| connection(line))
        .collect();
    sent.into_iter()
        .filter(|line| connection(line).is_some_and(|c| ours.contains(&c)))
        .collect()
}

pub fn unique_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL database made for one test, dropped afterwards.
pub struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a database next to `TEST_DATABASE_URL` and returns its URL.
    pub async fn create(admin_url: &str) -> (Self, String) {
        let name = format!("mp_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .expect("connect TEST_DATABASE_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        (
            Self {
                admin_url: admin_url.to_owned(),
                name,
            },
            url.to_string(),
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    admin.close().await.ok();
                }
            });
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}

/// Deletes every Redis key under a test's prefix.
pub struct RedisCleanupGuard {
    url: String,
    prefix: String,
}

impl RedisCleanupGuard {
    pub fn for_settings(settings: &Settings) -> Self {
        Self {
            url: settings
                .redis
                .as_ref()
                .map(|r| r.url.expose_secret().to_owned())
                .unwrap_or_default(),
            prefix: settings.key_prefix.clone(),
        }
    }

    /// The key prefix whose keys it removes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for RedisCleanupGuard {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Settings for tests: in-memory SQLite, no Redis, ephemeral secrets, port 0.
pub fn test_settings() -> Settings {
    let vars = std::collections::BTreeMap::from(
        [
            ("APP_ENV", "test"),
            ("APP_PORT", "0"),
            ("DATABASE_URL", "sqlite::memory:"),
            ("DATABASE_MAX_CONNECTIONS", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut settings =
        Settings::from_vars(vars, &multipult::schema::sections()).expect("test settings are valid");
    settings
        .ensure_secrets()
        .expect("test secrets are ephemeral");
    settings
}

/// The settings a test app starts from: test environment, port 0, backends from the env.
pub fn base_settings() -> Settings {
    let mut settings = test_settings();
    settings.redis = test_redis_settings();
    settings.key_prefix = unique_prefix();
    // Each app writes its own outbox; jobs are picked up and retried quickly.
    settings.data_dir =
        std::env::temp_dir().join(format!("multipult-test-{}", uuid::Uuid::new_v4().simple()));
    settings.jobs.poll_interval = Duration::from_millis(50);
    settings.jobs.backoff_base = Duration::from_millis(50);
    // Every test client is 127.0.0.1: rate-limit tests turn limits on themselves.
    settings.rate_limit.enabled = false;
    settings.graphql.user_budget = None;
    settings.graphql.anonymous_budget = None;
    settings
}
