//! `TestApp`: a real server on a random port, stopped when the test ends.

use multipult::app::Application;
use multipult::config::Settings;
use multipult::infra::{SharedStores, db};
use multipult::state::AppState;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{
    RedisCleanupGuard, TestDatabase, base_settings, init_test_logs, test_database_url,
    test_redis_url,
};

pub struct TestApp {
    /// SQL statements this app has run (for N+1 checks).
    pub statements: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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
        init_test_logs();
        let mut settings = base_settings();
        let mut database = None;
        if let Some(admin_url) = test_database_url() {
            let (db, url) = TestDatabase::create(&admin_url).await;
            settings.database.url = url.into();
            settings.database.max_connections = 5;
            database = Some(db);
        }
        configure(&mut settings);
        // Only the test Redis holds keys to clean (tests also point at Redis servers that are
        // down or hung on purpose).
        let redis_cleanup = settings
            .redis
            .as_ref()
            .is_some_and(|r| Some(r.url.expose_secret().to_owned()) == test_redis_url())
            .then(|| RedisCleanupGuard::for_settings(&settings));

        let mut connection = db::connect(&settings.database)
            .await
            .expect("connect database");
        db::migrate(&connection).await.expect("migrate");
        let statements = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = statements.clone();
        connection.set_metric_callback(move |info| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            db::on_statement(info);
        });
        let stores = SharedStores::from_settings(&settings).expect("stores");
        Self::start(
            settings,
            connection,
            stores,
            statements,
            database,
            redis_cleanup,
        )
        .await
    }

    async fn start(
        settings: Settings,
        connection: sea_orm::DatabaseConnection,
        stores: SharedStores,
        statements: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        database: Option<TestDatabase>,
        redis_cleanup: Option<RedisCleanupGuard>,
    ) -> Self {
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
            statements,
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

    /// Two instances of one deployment: the same database, and the same shared stores — one
    /// in-process set on the embedded default, or each its own Redis connections (same key
    /// prefix) with `TEST_REDIS_URL`, so what crosses instances goes through Redis.
    pub async fn spawn_pair_with(configure: impl Fn(&mut Settings)) -> (Self, Self) {
        let first = Self::spawn_with(&configure).await;
        let settings = first.state.settings.clone();
        let stores = if settings.redis.is_some() {
            SharedStores::from_settings(&settings).expect("stores")
        } else {
            first.state.stores.clone()
        };
        let second = Self::start(
            settings,
            first.state.db.clone(),
            stores,
            first.statements.clone(),
            None,
            None,
        )
        .await;
        (first, second)
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

impl TestApp {
    /// The `/metrics` exposition text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }
}
