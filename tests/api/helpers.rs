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
        circuit_threshold: 3,
        circuit_cooldown: Duration::from_secs(1),
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
        connection.set_metric_callback(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            .header("apollo-require-preflight", "true")
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

/// A password that satisfies the default policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// The tokens of a signed-in test user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Session {
    pub fn from_payload(payload: &Value) -> Self {
        Self {
            access: payload["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            refresh: payload["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_owned(),
            user_id: payload["user"]["id"].as_str().expect("user.id").to_owned(),
        }
    }
}

pub const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken accessTokenExpiresAt refreshTokenExpiresAt sessionId user { id email } } }";
pub const REFRESH: &str = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken sessionId user { id } } }";

impl TestApp {
    /// POSTs a GraphQL request with an optional bearer token.
    pub async fn graphql_as(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Value {
        let (_, _, body) = self
            .graphql_as(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { message } }",
                json!({ "input": { "email": email, "password": password } }),
            )
            .await;
        body
    }

    pub async fn login_body(&self, email: &str, password: &str) -> Value {
        let (_, _, body) = self
            .graphql_as(
                None,
                LOGIN,
                json!({ "input": { "email": email, "password": password } }),
            )
            .await;
        body
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let body = self.login_body(email, password).await;
        Session::from_payload(&body["data"]["login"])
    }

    /// Registers and signs in a new user with [`PASSWORD`].
    pub async fn signed_up(&self, email: &str) -> Session {
        let registered = self.register(email, PASSWORD).await;
        assert!(registered.get("errors").is_none(), "{registered}");
        self.login(email, PASSWORD).await
    }

    /// Gives a user a role directly through the service (what an admin or the CLI would do).
    pub async fn grant_role(&self, user_id: &str, role: &str) {
        let id = uuid::Uuid::parse_str(user_id).unwrap();
        multipult::identity::accounts::assign_role(&self.state.db, id, role)
            .await
            .unwrap();
        multipult::identity::user_changed(&self.state, id).await;
    }
}

impl TestApp {
    /// Every message in the outbox, oldest first.
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.state.settings.data_dir.join("outbox");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (up to 10 s) for a message to `to` whose subject contains `subject`.
    pub async fn wait_for_mail(&self, to: &str, subject: &str) -> String {
        for _ in 0..200 {
            if let Some(mail) = self
                .outbox()
                .into_iter()
                .find(|m| m.contains(&format!("To: {to}")) && m.contains(subject))
            {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail to {to} about {subject:?}; outbox: {:?}",
            self.outbox()
        );
    }
}

/// The `token: …` code of a mail.
pub fn mail_token(mail: &str) -> String {
    let start = mail.find("token: ").expect("a token in the mail") + "token: ".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

impl TestApp {
    /// A signed-in user with extra roles (created directly, verified).
    pub async fn user_with_roles(&self, email: &str, roles: &[&str]) -> Session {
        let mut all = vec!["user"];
        all.extend_from_slice(roles);
        multipult::identity::accounts::create_account(
            &self.state,
            multipult::identity::accounts::NewAccount {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
                username: None,
                display_name: None,
            },
            &all,
            true,
        )
        .await
        .expect("create account");
        self.login(email, PASSWORD).await
    }

    pub async fn admin(&self) -> Session {
        self.user_with_roles("root@example.com", &["admin"]).await
    }

    /// Audit entries, newest first, straight from the database.
    pub async fn audit_entries(&self) -> Vec<multipult::entities::audit_log::Model> {
        use sea_orm::{EntityTrait as _, QueryOrder as _};
        multipult::entities::audit_log::Entity::find()
            .order_by_desc(multipult::entities::audit_log::Column::CreatedAt)
            .order_by_desc(multipult::entities::audit_log::Column::Id)
            .all(&self.state.db)
            .await
            .unwrap()
    }
}

/// A GraphQL response over HTTP, read once.
#[derive(Debug, Clone)]
pub struct GqlResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl GqlResponse {
    /// The first error's `extensions.code` (empty when there is none).
    pub fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// `extensions.<name>` of the first error.
    pub fn extension(&self, name: &str) -> Value {
        self.body["errors"][0]["extensions"][name].clone()
    }

    /// The message for `field` in the first error's `extensions.fields`.
    pub fn field_error(&self, field: &str) -> &str {
        self.body["errors"][0]["extensions"]["fields"][field]
            .as_str()
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> &str {
        header(&self.headers, name)
    }
}

impl TestApp {
    /// POSTs a GraphQL request (with a bearer token when given).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResponse {
        let (status, headers, body) = self.graphql_as(token, query, variables).await;
        GqlResponse {
            status,
            headers,
            body,
        }
    }
}
