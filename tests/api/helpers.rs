//! `TestApp`: a real server on a random port, backed by SQLite in memory by default, by a fresh
//! PostgreSQL database with `TEST_DATABASE_URL`, and by real Redis (own key prefix) with
//! `TEST_REDIS_URL`. Everything a test created is removed when the `TestApp` drops.

use std::time::Duration;

use multipult::app::Application;
use multipult::config::{RedisSettings, Settings};
use multipult::infra::{SharedStores, db};
use multipult::state::AppState;
use reqwest::header::HeaderMap;
use sea_orm::{ConnectionTrait as _, Database};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;

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
        pool_size: 4,
        timeout: Duration::from_secs(2),
    })
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
}

impl Drop for RedisCleanupGuard {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
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

/// The settings a test app starts from: test environment, port 0, backends from the env.
pub fn base_settings() -> Settings {
    let mut settings = Settings::for_tests();
    settings.redis = test_redis_settings();
    settings.key_prefix = unique_prefix();
    settings
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _database: Option<TestDatabase>,
    _redis: Option<RedisCleanupGuard>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts an app after `configure` adjusts the settings.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = base_settings();
        let mut database = None;
        if let Some(admin_url) = test_database_url() {
            let (db, url) = TestDatabase::create(&admin_url).await;
            settings.database.url = url.into();
            settings.database.max_connections = 5;
            database = Some(db);
        }
        configure(&mut settings);
        let redis_cleanup = settings
            .redis
            .is_some()
            .then(|| RedisCleanupGuard::for_settings(&settings));

        let connection = db::connect(&settings.database)
            .await
            .expect("connect database");
        db::migrate(&connection).await.expect("migrate");
        let stores = SharedStores::from_settings(&settings).expect("stores");
        let app = Application::build_with(settings, connection, stores)
            .await
            .expect("build app");
        let port = app.port();
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            state,
            stop: Some(stop),
            server: Some(server),
            _database: database,
            _redis: redis_cleanup,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs a GraphQL request as JSON and returns the status, headers and body.
    pub async fn post_graphql(&self, query: &str, variables: Value) -> (u16, HeaderMap, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        read(response).await
    }

    /// GETs `/graphql` with the given query-string parameters.
    pub async fn get_graphql(&self, params: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
        let response = self
            .client
            .get(self.url("/graphql"))
            .query(params)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    /// Starts shutting down without waiting.
    pub fn begin_shutdown(&mut self) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn read(response: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, body)
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
