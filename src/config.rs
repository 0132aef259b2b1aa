//! Typed settings read once from the environment (and `.env`), validated before anything binds.
//!
//! Every problem is collected and reported at once, naming the variable, so an operator fixes a
//! deployment in one pass instead of one restart per typo.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

/// Where the process runs; decides defaults and how strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    pub public_url: Url,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Exact origins allowed by CORS; empty means no cross-origin access.
    pub cors_origins: Vec<String>,
    pub metrics_token: Option<SecretString>,
    pub health_check_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    pub auto_migrate: bool,
}

impl DatabaseSettings {
    pub fn is_postgres(&self) -> bool {
        self.url.expose_secret().starts_with("postgres")
    }

    pub fn is_sqlite_memory(&self) -> bool {
        self.url.expose_secret().contains(":memory:")
            || self.url.expose_secret().contains("mode=memory")
    }
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    pub pool_size: usize,
    /// Upper bound for one command, so a stalled Redis adds bounded latency.
    pub timeout: Duration,
    /// Consecutive errors that open the circuit breaker (a timeout opens it at once).
    pub circuit_threshold: u32,
    /// How long an open circuit fails fast before one probe call is let through.
    pub circuit_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct GraphqlSettings {
    /// Bytes of one document's text.
    pub max_document_size: usize,
    /// Lexical tokens of one document.
    pub max_tokens: usize,
    /// Field selections after expanding fragments (`__typename` included).
    pub max_selections: usize,
    /// Fragment definitions in one document.
    pub max_fragments: usize,
    /// Fragment spreads in one selection set.
    pub max_spreads: usize,
    /// Errors in one response (the rest are summarised in one more).
    pub max_errors: usize,
    /// An operation (query or mutation) still running after this is stopped.
    pub execution_timeout: Duration,
    pub max_depth: usize,
    pub max_complexity: usize,
    /// The ceiling for callers holding `admin:read`.
    pub admin_max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    /// Operations costlier than this are logged with their cost, name, user and request id.
    pub cost_warn_threshold: usize,
    /// Report `extensions.cost {requested, limit}` on every response.
    pub cost_extension: bool,
    /// Points per window an authenticated caller may spend (each operation costs its complexity).
    pub user_budget: Option<Quota>,
    pub anonymous_budget: Option<Quota>,
    pub introspection: bool,
    pub graphiql: bool,
    /// Maximum operations in one batched (JSON array) request; 0 disables batching.
    pub max_batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    pub connection_init_timeout: Duration,
    pub keepalive_interval: Duration,
    pub max_message_size: usize,
    pub max_subscriptions: usize,
    /// An authenticated socket re-checks its session at least this often (it also does on every
    /// operation and whenever its user changes).
    pub reauth_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `iss` and `aud` of access tokens; both are checked on every request.
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub password_min_length: usize,
    /// Failed logins per account (and ten times that per client IP) within the window before
    /// further attempts are refused with `RATE_LIMITED`.
    pub login_max_failures: u64,
    pub login_failure_window: Duration,
    /// Mails a stranger can trigger (verification, reset, "already registered"), per kind and
    /// recipient.
    pub mail_limit: Quota,
}

/// One OAuth2 provider's client registration.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_url: Url,
    pub token_url: Url,
    pub userinfo_url: Url,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SocialSettings {
    /// By name: `google`, `github`, `generic`.
    pub oauth: BTreeMap<String, OAuthProvider>,
    /// Frontend URLs tokens may be handed back to (exact scheme, host, port and path prefix).
    pub redirect_allowlist: Vec<Url>,
    pub telegram_bot_token: Option<SecretString>,
    pub telegram_max_age: Duration,
}

/// A number of requests per sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub window: Duration,
}

impl Quota {
    /// `100/1m`, `5/30s`.
    pub fn parse(text: &str) -> Option<Self> {
        let (limit, window) = text.trim().split_once('/')?;
        let limit: u64 = limit.trim().parse().ok().filter(|l| *l > 0)?;
        let window = humantime::parse_duration(window.trim())
            .ok()
            .filter(|w| !w.is_zero())?;
        Some(Self { limit, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// A GraphQL root field (`login`): requests selecting it count against the rule.
    Field(String),
    /// A path prefix (`/auth/oauth`).
    Path(String),
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub user: Quota,
    pub anonymous: Quota,
    pub rules: Vec<(RuleTarget, Quota)>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Clients never limited.
    pub allowlist: Vec<ipnet::IpNet>,
    /// Refuse (503) instead of letting requests through when the store is unreachable.
    pub fail_closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistedQueryMode {
    Off,
    /// Apollo automatic persisted queries: any document may be registered by its hash.
    Apq,
    /// Only documents from the manifest run.
    Safelist,
}

#[derive(Debug, Clone)]
pub struct PersistedQuerySettings {
    pub mode: PersistedQueryMode,
    /// hash → document, from `PERSISTED_QUERIES_MANIFEST` (required for `safelist`).
    pub manifest: std::sync::Arc<BTreeMap<String, String>>,
    pub manifest_path: Option<PathBuf>,
    /// How long a registered APQ document is kept after its last use.
    pub apq_ttl: Duration,
    /// Registered documents kept at most (least recently used evicted first).
    pub max_entries: usize,
    /// Registrations per principal and window.
    pub registrations: Quota,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `max-age` for anonymous query responses without a schema hint.
    pub public_max_age: u32,
    /// `max-age` for authenticated query responses (always `private`).
    pub private_max_age: u32,
}

#[derive(Debug, Clone)]
pub struct CsrfSettings {
    pub enabled: bool,
    /// Any of these (non-empty) marks a request as not sendable cross-site without a preflight.
    pub headers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Entries older than this many days are removed; `None` keeps everything.
    pub retention_days: Option<u32>,
    pub retention_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://host:port` (STARTTLS when offered), `smtps://…` (TLS); unset writes `.eml` files to
    /// `DATA_DIR/outbox` instead.
    pub smtp_url: Option<SecretString>,
    pub from: String,
    pub smtp_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs this instance runs at once; 0 runs none (enqueue only).
    pub workers: usize,
    pub max_attempts: i32,
    /// Delay before the first retry; each later retry waits twice as long (capped at an hour).
    pub backoff_base: Duration,
    pub poll_interval: Duration,
    /// How long a claimed job stays claimed; a crashed worker's jobs run again after it.
    pub lease: Duration,
    /// Finished jobs are deleted after this long (their payloads are of no use once delivered).
    pub retention: Duration,
    /// Dead jobs are kept longer, for inspection and requeueing.
    pub dead_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Secrets {
    /// HMAC key for access tokens (≥ 32 bytes).
    pub jwt_secret: SecretString,
    /// 32-byte AES-256-GCM key for secrets at rest, as given (base64 or hex).
    pub secrets_key: SecretString,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: Option<RedisSettings>,
    /// Prefix of every key and channel this instance writes to the shared store.
    pub key_prefix: String,
    pub graphql: GraphqlSettings,
    pub websocket: WebSocketSettings,
    pub auth: AuthSettings,
    pub social: SocialSettings,
    pub rate_limit: RateLimitSettings,
    pub csrf: CsrfSettings,
    pub cache: CacheSettings,
    pub persisted_queries: PersistedQuerySettings,
    pub audit: AuditSettings,
    pub mail: MailSettings,
    pub jobs: JobSettings,
    pub secrets: Secrets,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What happened to a secret that was not configured (development only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    /// Generated now and written to the file.
    Generated(PathBuf),
    /// Read from a file generated by an earlier start.
    Stored(PathBuf),
    /// Generated in memory for this process only (test environment).
    Ephemeral,
}

const DEV_SECRETS_FILE: &str = "dev-secrets.env";

/// Reads variables from a snapshot, recording every failure instead of stopping at the first.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn raw(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: name.to_owned(),
            message: message.into(),
        });
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T, what: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(value) => value.parse().unwrap_or_else(|_| {
                self.fail(name, format!("must be {what}, got {value:?}"));
                default
            }),
        }
    }

    fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let what = format!("a whole number from {min} to {max}");
        let value = self.parse(name, default, &what);
        if value < min || value > max {
            self.fail(name, format!("must be {what}, got {value}"));
            return default;
        }
        value
    }

    fn boolean(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.fail(name, format!("must be true or false, got {other:?}"));
                default
            }
        }
    }

    fn duration(&mut self, name: &str, default: Duration) -> Duration {
        match self.raw(name) {
            None => default,
            Some(value) => match humantime::parse_duration(value) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    self.fail(
                        name,
                        format!("must be a positive duration such as 30s or 500ms, got {value:?}"),
                    );
                    default
                }
            },
        }
    }

    fn byte_size(&mut self, name: &str, default: usize) -> usize {
        let Some(value) = self.raw(name) else {
            return default;
        };
        let lower = value.to_ascii_lowercase();
        let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => lower.split_at(i),
            None => (lower.as_str(), ""),
        };
        let factor = match unit.trim() {
            "" | "b" => Some(1),
            "k" | "kb" | "kib" => Some(1024),
            "m" | "mb" | "mib" => Some(1024 * 1024),
            _ => None,
        };
        match (digits.parse::<usize>(), factor) {
            (Ok(n), Some(f)) if n > 0 => n.saturating_mul(f),
            _ => {
                self.fail(
                    name,
                    format!("must be a size such as 1048576, 512KiB or 1MiB, got {value:?}"),
                );
                default
            }
        }
    }
}

impl Settings {
    /// Loads `.env` (when present) into the process environment, then reads it.
    ///
    /// # Errors
    /// Every missing or invalid variable, at once.
    pub fn from_process_env() -> Result<Self, ConfigErrors> {
        // A missing .env is normal; a malformed one is a configuration error worth reporting.
        if let Err(error) = dotenvy::dotenv()
            && !error.not_found()
        {
            return Err(ConfigErrors(vec![ConfigError {
                variable: ".env".into(),
                message: format!("cannot be read: {error}"),
            }]));
        }
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads settings from a snapshot of variables (what tests and the binary both use).
    ///
    /// Missing secrets stay empty here outside production; [`Settings::ensure_secrets`] fills them.
    ///
    /// # Errors
    /// Every missing or invalid variable, at once.
    pub fn from_vars(vars: BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            vars: &vars,
            errors: Vec::new(),
        };

        let environment = match r.raw("APP_ENV").map(str::to_ascii_lowercase).as_deref() {
            None | Some("development" | "dev") => Environment::Development,
            Some("test") => Environment::Test,
            Some("production" | "prod") => Environment::Production,
            Some(other) => {
                r.fail(
                    "APP_ENV",
                    format!("must be development, test or production, got {other:?}"),
                );
                Environment::Development
            }
        };
        let production = environment == Environment::Production;

        let host = r.parse(
            "APP_HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        );
        let port = r.parse("APP_PORT", 8080u16, "a port number from 0 to 65535");
        let public_url = match r.raw("PUBLIC_URL") {
            None => Url::parse(&format!("http://{}:{port}/", display_host(host))).ok(),
            Some(value) => match Url::parse(value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
                _ => {
                    r.fail("PUBLIC_URL", "must be an absolute http(s) URL");
                    None
                }
            },
        };

        let data_dir = PathBuf::from(r.raw("DATA_DIR").unwrap_or("data"));

        let default_db = format!("sqlite://{}/multipult.db?mode=rwc", data_dir.display());
        let database_url = match r.raw("DATABASE_URL") {
            None if production => {
                r.fail("DATABASE_URL", "is required in production");
                default_db
            }
            None => default_db,
            Some(value) => {
                if let Err(message) = validate_database_url(value) {
                    r.fail("DATABASE_URL", message);
                }
                value.to_owned()
            }
        };
        let max_connections = r.number("DATABASE_MAX_CONNECTIONS", 10u32, 1, 1000);
        let min_connections = r.number("DATABASE_MIN_CONNECTIONS", 0u32, 0, 1000);
        if min_connections > max_connections {
            r.fail(
                "DATABASE_MIN_CONNECTIONS",
                "must not exceed DATABASE_MAX_CONNECTIONS",
            );
        }
        let database = DatabaseSettings {
            url: database_url.into(),
            max_connections,
            min_connections: min_connections.min(max_connections),
            connect_timeout: r.duration("DATABASE_CONNECT_TIMEOUT", Duration::from_secs(5)),
            acquire_timeout: r.duration("DATABASE_ACQUIRE_TIMEOUT", Duration::from_secs(5)),
            auto_migrate: r.boolean("AUTO_MIGRATE", !production),
        };

        let redis = match r.raw("REDIS_URL") {
            None => {
                if production {
                    r.fail("REDIS_URL", "is required in production");
                }
                None
            }
            Some(value) => {
                match Url::parse(value) {
                    Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.has_host() => {}
                    _ => r.fail(
                        "REDIS_URL",
                        "must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379",
                    ),
                }
                Some(RedisSettings {
                    url: value.to_owned().into(),
                    pool_size: r.number("REDIS_POOL_SIZE", 16usize, 1, 1024),
                    timeout: r.duration("REDIS_TIMEOUT", Duration::from_millis(500)),
                    circuit_threshold: r.number("REDIS_CIRCUIT_THRESHOLD", 3u32, 1, 1000),
                    circuit_cooldown: r.duration("REDIS_CIRCUIT_COOLDOWN", Duration::from_secs(2)),
                })
            }
        };
        let key_prefix = r.raw("REDIS_KEY_PREFIX").unwrap_or("multipult:").to_owned();

        let jwt_secret = r.raw("JWT_SECRET").map(str::to_owned);
        match &jwt_secret {
            Some(secret) if secret.len() < 32 => {
                r.fail("JWT_SECRET", "must be at least 32 bytes long");
            }
            None if production => r.fail("JWT_SECRET", "is required in production"),
            _ => {}
        }
        let secrets_key = r.raw("SECRETS_KEY").map(str::to_owned);
        match &secrets_key {
            Some(key) if decode_secrets_key(key).is_none() => r.fail(
                "SECRETS_KEY",
                "must be 32 bytes encoded as base64 or 64 hex digits (openssl rand -base64 32)",
            ),
            None if production => r.fail("SECRETS_KEY", "is required in production"),
            _ => {}
        }

        let metrics_token = r
            .raw("METRICS_TOKEN")
            .map(|t| SecretString::from(t.to_owned()));
        if production && metrics_token.is_none() {
            // Metrics name users' operations, routes and error rates: not for the public.
            r.fail(
                "METRICS_TOKEN",
                "is required in production (Prometheus sends it as a bearer token)",
            );
        }
        let cors_origins = r
            .raw("CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            let valid = origin != "*"
                && Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.has_host() && u.path() == "/"
                });
            if !valid {
                r.fail(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not an origin such as https://app.example.com"),
                );
            }
        }

        let http = HttpSettings {
            host,
            port,
            public_url: public_url
                .unwrap_or_else(|| Url::parse("http://127.0.0.1:8080/").expect("static URL")),
            body_limit: r.byte_size("HTTP_BODY_LIMIT", 1024 * 1024),
            request_timeout: r.duration("HTTP_REQUEST_TIMEOUT", Duration::from_secs(30)),
            shutdown_timeout: r.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30)),
            cors_origins,
            metrics_token,
            health_check_timeout: r.duration("HEALTH_CHECK_TIMEOUT", Duration::from_secs(2)),
        };

        let graphql = GraphqlSettings {
            max_document_size: r.byte_size("GRAPHQL_MAX_DOCUMENT_SIZE", 32 * 1024),
            max_tokens: r.number("GRAPHQL_MAX_TOKENS", 10_000usize, 10, 1_000_000),
            max_selections: r.number("GRAPHQL_MAX_SELECTIONS", 2_000usize, 1, 1_000_000),
            max_fragments: r.number("GRAPHQL_MAX_FRAGMENTS", 100usize, 0, 10_000),
            max_spreads: r.number("GRAPHQL_MAX_SPREADS", 50usize, 1, 10_000),
            max_errors: r.number("GRAPHQL_MAX_ERRORS", 20usize, 1, 1_000),
            execution_timeout: r.duration("GRAPHQL_EXECUTION_TIMEOUT", Duration::from_secs(10)),
            max_depth: r.number("GRAPHQL_MAX_DEPTH", 15usize, 1, 1000),
            max_complexity: r.number("GRAPHQL_MAX_COMPLEXITY", 1000usize, 1, 1_000_000),
            admin_max_complexity: r.number(
                "GRAPHQL_ADMIN_MAX_COMPLEXITY",
                10_000usize,
                1,
                10_000_000,
            ),
            max_aliases: r.number("GRAPHQL_MAX_ALIASES", 30usize, 1, 10_000),
            max_root_fields: r.number("GRAPHQL_MAX_ROOT_FIELDS", 20usize, 1, 10_000),
            cost_warn_threshold: r.number("GRAPHQL_COST_WARN_THRESHOLD", 500usize, 1, 10_000_000),
            cost_extension: r.boolean("GRAPHQL_COST_EXTENSION", false),
            user_budget: budget(&mut r, "COST_BUDGET_USER", "5000/1h"),
            anonymous_budget: budget(&mut r, "COST_BUDGET_ANONYMOUS", "500/1h"),
            introspection: r.boolean("GRAPHQL_INTROSPECTION", !production),
            graphiql: r.boolean("GRAPHIQL", !production),
            max_batch_size: r.number("GRAPHQL_MAX_BATCH_SIZE", 0usize, 0, 100),
        };
        let websocket = WebSocketSettings {
            connection_init_timeout: r
                .duration("WS_CONNECTION_INIT_TIMEOUT", Duration::from_secs(10)),
            keepalive_interval: r.duration("WS_KEEPALIVE_INTERVAL", Duration::from_secs(15)),
            max_message_size: r.byte_size("WS_MAX_MESSAGE_SIZE", 64 * 1024),
            max_subscriptions: r.number("WS_MAX_SUBSCRIPTIONS", 100usize, 1, 10_000),
            reauth_interval: r.duration("WS_REAUTH_INTERVAL", Duration::from_secs(60)),
        };

        let auth = AuthSettings {
            access_token_ttl: r.duration("ACCESS_TOKEN_TTL", Duration::from_secs(15 * 60)),
            refresh_token_ttl: r.duration("REFRESH_TOKEN_TTL", Duration::from_secs(30 * 24 * 3600)),
            jwt_issuer: r.raw("JWT_ISSUER").unwrap_or("multipult").to_owned(),
            jwt_audience: r.raw("JWT_AUDIENCE").unwrap_or("multipult").to_owned(),
            password_min_length: r.number("PASSWORD_MIN_LENGTH", 10usize, 8, 128),
            login_max_failures: r.number("LOGIN_MAX_FAILURES", 5u64, 1, 1000),
            login_failure_window: r.duration("LOGIN_FAILURE_WINDOW", Duration::from_secs(15 * 60)),
            mail_limit: quota(&mut r, "AUTH_MAIL_LIMIT", "3/1h"),
        };

        let social = read_social(&mut r);
        let rate_limit = read_rate_limits(&mut r);
        let csrf = CsrfSettings {
            enabled: r.boolean("CSRF_PREVENTION", true),
            headers: {
                let mut headers = vec![
                    "apollo-require-preflight".to_owned(),
                    "x-apollo-operation-name".to_owned(),
                ];
                headers.extend(
                    r.raw("CSRF_REQUIRED_HEADERS")
                        .unwrap_or_default()
                        .split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty()),
                );
                headers
            },
        };
        let cache = CacheSettings {
            public_max_age: r.number("CACHE_PUBLIC_MAX_AGE", 0u32, 0, 31_536_000),
            private_max_age: r.number("CACHE_PRIVATE_MAX_AGE", 0u32, 0, 31_536_000),
        };
        let persisted_queries = read_persisted_queries(&mut r);
        let audit = AuditSettings {
            retention_days: r
                .raw("AUDIT_RETENTION_DAYS")
                .is_some()
                .then(|| r.number("AUDIT_RETENTION_DAYS", 365u32, 1, 36_500)),
            retention_interval: r.duration("AUDIT_RETENTION_INTERVAL", Duration::from_secs(3600)),
        };

        let smtp_url = r.raw("SMTP_URL").map(str::to_owned);
        if production && smtp_url.is_none() {
            r.fail(
                "SMTP_URL",
                "is required in production (without it mail would only be written to disk)",
            );
        }
        if let Some(url) = &smtp_url
            && !Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.has_host())
        {
            r.fail(
                "SMTP_URL",
                "must be an smtp:// or smtps:// URL such as smtp://127.0.0.1:1025",
            );
        }
        let mail = MailSettings {
            smtp_url: smtp_url.map(SecretString::from),
            from: r
                .raw("MAIL_FROM")
                .unwrap_or("multipult <no-reply@localhost>")
                .to_owned(),
            smtp_timeout: r.duration("SMTP_TIMEOUT", Duration::from_secs(10)),
        };
        if mail.from.parse::<lettre::message::Mailbox>().is_err() {
            r.fail(
                "MAIL_FROM",
                "must be an address such as \"App <no-reply@example.com>\"",
            );
        }
        let jobs = JobSettings {
            workers: r.number("JOB_WORKERS", 4usize, 0, 256),
            max_attempts: r.number("JOB_MAX_ATTEMPTS", 5i32, 1, 100),
            backoff_base: r.duration("JOB_BACKOFF_BASE", Duration::from_secs(2)),
            poll_interval: r.duration("JOB_POLL_INTERVAL", Duration::from_secs(1)),
            lease: r.duration("JOB_LEASE", Duration::from_secs(300)),
            retention: r.duration("JOB_RETENTION", Duration::from_secs(7 * 24 * 3600)),
            dead_retention: r.duration("JOB_DEAD_RETENTION", Duration::from_secs(30 * 24 * 3600)),
        };

        let log_format = match r.raw("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None if production => LogFormat::Json,
            None => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some("pretty" | "text") => LogFormat::Pretty,
            Some(other) => {
                r.fail(
                    "LOG_FORMAT",
                    format!("must be json or pretty, got {other:?}"),
                );
                LogFormat::Pretty
            }
        };
        let log_level = r.raw("LOG_LEVEL").unwrap_or("info").to_owned();
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            r.fail(
                "LOG_LEVEL",
                format!("must be a tracing filter such as info or multipult=debug,info, got {log_level:?}"),
            );
        }

        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        Ok(Self {
            environment,
            data_dir,
            http,
            database,
            redis,
            key_prefix,
            graphql,
            websocket,
            auth,
            social,
            rate_limit,
            csrf,
            cache,
            persisted_queries,
            audit,
            mail,
            jobs,
            secrets: Secrets {
                jwt_secret: jwt_secret.unwrap_or_default().into(),
                secrets_key: secrets_key.unwrap_or_default().into(),
            },
            log_format,
            log_level,
        })
    }

    /// Settings for tests and examples: in-memory SQLite, no Redis, ephemeral secrets, port 0.
    pub fn for_tests() -> Self {
        let vars = BTreeMap::from([
            ("APP_ENV".to_owned(), "test".to_owned()),
            ("APP_PORT".to_owned(), "0".to_owned()),
            ("DATABASE_URL".to_owned(), "sqlite::memory:".to_owned()),
            ("DATABASE_MAX_CONNECTIONS".to_owned(), "1".to_owned()),
        ]);
        let mut settings = Self::from_vars(vars).expect("test settings are valid");
        settings
            .ensure_secrets()
            .expect("test secrets are ephemeral");
        settings
    }

    /// Fills secrets that were not configured: generated once and stored under the data
    /// directory in development (so tokens survive restarts), in memory for tests.
    ///
    /// # Errors
    /// The secrets file cannot be read or written.
    pub fn ensure_secrets(&mut self) -> std::io::Result<Vec<(&'static str, SecretSource)>> {
        let missing_jwt = self.secrets.jwt_secret.expose_secret().is_empty();
        let missing_key = self.secrets.secrets_key.expose_secret().is_empty();
        if !missing_jwt && !missing_key {
            return Ok(vec![]);
        }
        if self.environment != Environment::Development {
            // Production never gets here (validation requires both); tests stay in memory.
            let mut out = vec![];
            if missing_jwt {
                self.secrets.jwt_secret = random_secret().into();
                out.push(("JWT_SECRET", SecretSource::Ephemeral));
            }
            if missing_key {
                self.secrets.secrets_key = random_secret().into();
                out.push(("SECRETS_KEY", SecretSource::Ephemeral));
            }
            return Ok(out);
        }

        let path = self.data_dir.join(DEV_SECRETS_FILE);
        let mut stored = read_secrets_file(&path)?;
        let mut generated = false;
        let mut out = vec![];
        for (name, missing) in [("JWT_SECRET", missing_jwt), ("SECRETS_KEY", missing_key)] {
            if !missing {
                continue;
            }
            let value = match stored.get(name) {
                Some(v) if name != "SECRETS_KEY" || decode_secrets_key(v).is_some() => {
                    out.push((name, SecretSource::Stored(path.clone())));
                    v.clone()
                }
                _ => {
                    generated = true;
                    let v = random_secret();
                    stored.insert(name.to_owned(), v.clone());
                    out.push((name, SecretSource::Generated(path.clone())));
                    v
                }
            };
            match name {
                "JWT_SECRET" => self.secrets.jwt_secret = value.into(),
                _ => self.secrets.secrets_key = value.into(),
            }
        }
        if generated {
            write_secrets_file(&path, &stored)?;
        }
        Ok(out)
    }

    /// The effective settings as `(variable, value)` pairs with every secret masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mask = |s: &SecretString| {
            if s.expose_secret().is_empty() {
                "(unset)".to_owned()
            } else {
                "********".to_owned()
            }
        };
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        let mut out = vec![
            ("APP_ENV", self.environment.as_str().to_owned()),
            ("APP_HOST", self.http.host.to_string()),
            ("APP_PORT", self.http.port.to_string()),
            ("PUBLIC_URL", self.http.public_url.to_string()),
            ("DATA_DIR", self.data_dir.display().to_string()),
            ("DATABASE_URL", mask_url(self.database.url.expose_secret())),
            (
                "DATABASE_MAX_CONNECTIONS",
                self.database.max_connections.to_string(),
            ),
            (
                "DATABASE_MIN_CONNECTIONS",
                self.database.min_connections.to_string(),
            ),
            (
                "DATABASE_CONNECT_TIMEOUT",
                secs(self.database.connect_timeout),
            ),
            (
                "DATABASE_ACQUIRE_TIMEOUT",
                secs(self.database.acquire_timeout),
            ),
            ("AUTO_MIGRATE", self.database.auto_migrate.to_string()),
        ];
        match &self.redis {
            Some(redis) => out.extend([
                ("REDIS_URL", mask_url(redis.url.expose_secret())),
                ("REDIS_POOL_SIZE", redis.pool_size.to_string()),
                ("REDIS_TIMEOUT", secs(redis.timeout)),
                (
                    "REDIS_CIRCUIT_THRESHOLD",
                    redis.circuit_threshold.to_string(),
                ),
                ("REDIS_CIRCUIT_COOLDOWN", secs(redis.circuit_cooldown)),
            ]),
            None => out.push(("REDIS_URL", "(unset: in-process stores)".to_owned())),
        }
        out.extend([
            ("REDIS_KEY_PREFIX", self.key_prefix.clone()),
            ("JWT_SECRET", mask(&self.secrets.jwt_secret)),
            ("SECRETS_KEY", mask(&self.secrets.secrets_key)),
            ("HTTP_BODY_LIMIT", self.http.body_limit.to_string()),
            ("HTTP_REQUEST_TIMEOUT", secs(self.http.request_timeout)),
            ("SHUTDOWN_TIMEOUT", secs(self.http.shutdown_timeout)),
            ("CORS_ORIGINS", self.http.cors_origins.join(",")),
            (
                "METRICS_TOKEN",
                self.http
                    .metrics_token
                    .as_ref()
                    .map_or_else(|| "(unset)".to_owned(), mask),
            ),
            ("HEALTH_CHECK_TIMEOUT", secs(self.http.health_check_timeout)),
            (
                "GRAPHQL_MAX_DOCUMENT_SIZE",
                self.graphql.max_document_size.to_string(),
            ),
            ("GRAPHQL_MAX_TOKENS", self.graphql.max_tokens.to_string()),
            (
                "GRAPHQL_MAX_SELECTIONS",
                self.graphql.max_selections.to_string(),
            ),
            (
                "GRAPHQL_MAX_FRAGMENTS",
                self.graphql.max_fragments.to_string(),
            ),
            ("GRAPHQL_MAX_SPREADS", self.graphql.max_spreads.to_string()),
            ("GRAPHQL_MAX_ERRORS", self.graphql.max_errors.to_string()),
            (
                "GRAPHQL_EXECUTION_TIMEOUT",
                secs(self.graphql.execution_timeout),
            ),
            ("GRAPHQL_MAX_DEPTH", self.graphql.max_depth.to_string()),
            (
                "GRAPHQL_MAX_COMPLEXITY",
                self.graphql.max_complexity.to_string(),
            ),
            (
                "GRAPHQL_INTROSPECTION",
                self.graphql.introspection.to_string(),
            ),
            ("GRAPHIQL", self.graphql.graphiql.to_string()),
            (
                "GRAPHQL_MAX_BATCH_SIZE",
                self.graphql.max_batch_size.to_string(),
            ),
            (
                "WS_CONNECTION_INIT_TIMEOUT",
                secs(self.websocket.connection_init_timeout),
            ),
            (
                "WS_KEEPALIVE_INTERVAL",
                secs(self.websocket.keepalive_interval),
            ),
            (
                "WS_MAX_MESSAGE_SIZE",
                self.websocket.max_message_size.to_string(),
            ),
            (
                "WS_MAX_SUBSCRIPTIONS",
                self.websocket.max_subscriptions.to_string(),
            ),
            ("WS_REAUTH_INTERVAL", secs(self.websocket.reauth_interval)),
            ("ACCESS_TOKEN_TTL", secs(self.auth.access_token_ttl)),
            ("REFRESH_TOKEN_TTL", secs(self.auth.refresh_token_ttl)),
            ("JWT_ISSUER", self.auth.jwt_issuer.clone()),
            ("JWT_AUDIENCE", self.auth.jwt_audience.clone()),
            (
                "PASSWORD_MIN_LENGTH",
                self.auth.password_min_length.to_string(),
            ),
            (
                "LOGIN_MAX_FAILURES",
                self.auth.login_max_failures.to_string(),
            ),
            ("LOGIN_FAILURE_WINDOW", secs(self.auth.login_failure_window)),
            ("AUTH_MAIL_LIMIT", self.auth.mail_limit.to_string()),
            (
                "SMTP_URL",
                self.mail.smtp_url.as_ref().map_or_else(
                    || "(unset: mail goes to DATA_DIR/outbox)".to_owned(),
                    |u| mask_url(u.expose_secret()),
                ),
            ),
            ("MAIL_FROM", self.mail.from.clone()),
            ("SMTP_TIMEOUT", secs(self.mail.smtp_timeout)),
            (
                "OAUTH_PROVIDERS",
                self.social
                    .oauth
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "OAUTH_REDIRECT_ALLOWLIST",
                self.social
                    .redirect_allowlist
                    .iter()
                    .map(Url::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "TELEGRAM_BOT_TOKEN",
                self.social
                    .telegram_bot_token
                    .as_ref()
                    .map_or_else(|| "(unset)".to_owned(), mask),
            ),
            ("TELEGRAM_AUTH_MAX_AGE", secs(self.social.telegram_max_age)),
            ("RATE_LIMIT_ENABLED", self.rate_limit.enabled.to_string()),
            ("RATE_LIMIT_USER", self.rate_limit.user.to_string()),
            (
                "RATE_LIMIT_ANONYMOUS",
                self.rate_limit.anonymous.to_string(),
            ),
            (
                "RATE_LIMIT_RULES",
                self.rate_limit
                    .rules
                    .iter()
                    .map(|(target, quota)| match target {
                        RuleTarget::Field(f) => format!("{f}={quota}"),
                        RuleTarget::Path(p) => format!("path:{p}={quota}"),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "TRUSTED_PROXIES",
                self.rate_limit
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "RATE_LIMIT_ALLOWLIST",
                self.rate_limit
                    .allowlist
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "RATE_LIMIT_FAIL_CLOSED",
                self.rate_limit.fail_closed.to_string(),
            ),
            (
                "CACHE_PUBLIC_MAX_AGE",
                self.cache.public_max_age.to_string(),
            ),
            (
                "CACHE_PRIVATE_MAX_AGE",
                self.cache.private_max_age.to_string(),
            ),
            (
                "PERSISTED_QUERIES",
                match self.persisted_queries.mode {
                    PersistedQueryMode::Off => "off",
                    PersistedQueryMode::Apq => "apq",
                    PersistedQueryMode::Safelist => "safelist",
                }
                .to_owned(),
            ),
            (
                "PERSISTED_QUERIES_MANIFEST",
                self.persisted_queries.manifest_path.as_ref().map_or_else(
                    || "(unset)".to_owned(),
                    |p| {
                        format!(
                            "{} ({} documents)",
                            p.display(),
                            self.persisted_queries.manifest.len()
                        )
                    },
                ),
            ),
            ("APQ_TTL", secs(self.persisted_queries.apq_ttl)),
            (
                "APQ_MAX_ENTRIES",
                self.persisted_queries.max_entries.to_string(),
            ),
            (
                "APQ_REGISTRATIONS",
                self.persisted_queries.registrations.to_string(),
            ),
            ("CSRF_PREVENTION", self.csrf.enabled.to_string()),
            ("CSRF_REQUIRED_HEADERS", self.csrf.headers.join(",")),
            (
                "AUDIT_RETENTION_DAYS",
                self.audit
                    .retention_days
                    .map_or_else(|| "(unset: keep)".to_owned(), |d| d.to_string()),
            ),
            (
                "AUDIT_RETENTION_INTERVAL",
                secs(self.audit.retention_interval),
            ),
            ("JOB_WORKERS", self.jobs.workers.to_string()),
            ("JOB_MAX_ATTEMPTS", self.jobs.max_attempts.to_string()),
            ("JOB_BACKOFF_BASE", secs(self.jobs.backoff_base)),
            ("JOB_POLL_INTERVAL", secs(self.jobs.poll_interval)),
            ("JOB_LEASE", secs(self.jobs.lease)),
            ("JOB_RETENTION", secs(self.jobs.retention)),
            ("JOB_DEAD_RETENTION", secs(self.jobs.dead_retention)),
            (
                "LOG_FORMAT",
                match self.log_format {
                    LogFormat::Json => "json".to_owned(),
                    LogFormat::Pretty => "pretty".to_owned(),
                },
            ),
            ("LOG_LEVEL", self.log_level.clone()),
        ]);
        out
    }
}

/// Reads a manifest: Apollo's `{"format":"apollo-persisted-query-manifest","operations":[{"id",
/// "body"}]}` or a plain `{"<sha256>": "<document>"}` map (graphql-codegen's client preset). Every
/// id must be the SHA-256 of its document.
pub fn parse_manifest(text: &str) -> Result<BTreeMap<String, String>, String> {
    use sha2::{Digest as _, Sha256};
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    if let Some(operations) = value.get("operations").and_then(|o| o.as_array()) {
        for operation in operations {
            let id = operation.get("id").and_then(|v| v.as_str());
            let body = operation.get("body").and_then(|v| v.as_str());
            match (id, body) {
                (Some(id), Some(body)) => {
                    out.insert(id.to_ascii_lowercase(), body.to_owned());
                }
                _ => return Err("has an operation without id and body".into()),
            }
        }
    } else if let Some(map) = value.as_object() {
        for (id, body) in map {
            let body = body
                .as_str()
                .ok_or("maps a hash to something other than a document")?;
            out.insert(id.to_ascii_lowercase(), body.to_owned());
        }
    } else {
        return Err("is neither an Apollo manifest nor a hash → document map".into());
    }
    for (id, body) in &out {
        if hex::encode(Sha256::digest(body.as_bytes())) != *id {
            return Err(format!("lists {id} with a document whose SHA-256 differs"));
        }
    }
    Ok(out)
}

fn read_persisted_queries(r: &mut Reader<'_>) -> PersistedQuerySettings {
    let mode = match r
        .raw("PERSISTED_QUERIES")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("apq") => PersistedQueryMode::Apq,
        Some("off") => PersistedQueryMode::Off,
        Some("safelist") => PersistedQueryMode::Safelist,
        Some(other) => {
            r.fail(
                "PERSISTED_QUERIES",
                format!("must be off, apq or safelist, got {other:?}"),
            );
            PersistedQueryMode::Apq
        }
    };
    let manifest_path = r.raw("PERSISTED_QUERIES_MANIFEST").map(PathBuf::from);
    let manifest = match &manifest_path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => parse_manifest(&text).unwrap_or_else(|problem| {
                r.fail(
                    "PERSISTED_QUERIES_MANIFEST",
                    format!("{}: {problem}", path.display()),
                );
                BTreeMap::new()
            }),
            Err(e) => {
                r.fail(
                    "PERSISTED_QUERIES_MANIFEST",
                    format!("cannot read {}: {e}", path.display()),
                );
                BTreeMap::new()
            }
        },
        None => {
            if mode == PersistedQueryMode::Safelist {
                r.fail(
                    "PERSISTED_QUERIES_MANIFEST",
                    "is required with PERSISTED_QUERIES=safelist",
                );
            }
            BTreeMap::new()
        }
    };
    PersistedQuerySettings {
        mode,
        manifest: std::sync::Arc::new(manifest),
        manifest_path,
        apq_ttl: r.duration("APQ_TTL", Duration::from_secs(24 * 3600)),
        max_entries: r.number("APQ_MAX_ENTRIES", 2_000usize, 1, 1_000_000),
        registrations: quota(r, "APQ_REGISTRATIONS", "30/1m"),
    }
}

/// A number per window (`3/1h`).
fn quota(r: &mut Reader<'_>, name: &str, default: &str) -> Quota {
    let text = r.raw(name).unwrap_or(default).to_owned();
    Quota::parse(&text).unwrap_or_else(|| {
        r.fail(
            name,
            format!("must be count/window such as 3/1h, got {text:?}"),
        );
        Quota::parse(default).unwrap_or(Quota {
            limit: 1,
            window: Duration::from_secs(3600),
        })
    })
}

/// A budget (`5000/1h`), or `off`.
fn budget(r: &mut Reader<'_>, name: &str, default: &str) -> Option<Quota> {
    let text = r.raw(name).unwrap_or(default).to_owned();
    if text.eq_ignore_ascii_case("off") {
        return None;
    }
    Quota::parse(&text).or_else(|| {
        r.fail(
            name,
            format!("must be points/window such as 5000/1h, or off, got {text:?}"),
        );
        None
    })
}

fn read_cidrs(r: &mut Reader<'_>, name: &str) -> Vec<ipnet::IpNet> {
    let mut out = vec![];
    for entry in r
        .raw(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let parsed = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => r.fail(
                name,
                format!("{entry:?} is not an IP address or CIDR such as 10.0.0.0/8"),
            ),
        }
    }
    out
}

fn read_rate_limits(r: &mut Reader<'_>) -> RateLimitSettings {
    let mut quota = |name: &str, default: Quota| match r.raw(name) {
        None => default,
        Some(text) => Quota::parse(text).unwrap_or_else(|| {
            r.fail(
                name,
                format!("must be requests/window such as 100/1m, got {text:?}"),
            );
            default
        }),
    };
    let user = quota(
        "RATE_LIMIT_USER",
        Quota {
            limit: 100,
            window: Duration::from_secs(60),
        },
    );
    let anonymous = quota(
        "RATE_LIMIT_ANONYMOUS",
        Quota {
            limit: 20,
            window: Duration::from_secs(60),
        },
    );
    let mut rules = vec![];
    for entry in r
        .raw("RATE_LIMIT_RULES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let parsed = entry.split_once('=').and_then(|(target, q)| {
            let target = target.trim();
            let target = match target.strip_prefix("path:") {
                Some(path) if path.starts_with('/') => RuleTarget::Path(path.to_owned()),
                Some(_) => return None,
                None if !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    RuleTarget::Field(target.to_owned())
                }
                None => return None,
            };
            Quota::parse(q).map(|q| (target, q))
        });
        match parsed {
            Some(rule) => rules.push(rule),
            None => r.fail(
                "RATE_LIMIT_RULES",
                format!("{entry:?} is not field=N/window or path:/prefix=N/window"),
            ),
        }
    }
    RateLimitSettings {
        enabled: r.boolean("RATE_LIMIT_ENABLED", true),
        user,
        anonymous,
        rules,
        trusted_proxies: read_cidrs(r, "TRUSTED_PROXIES"),
        allowlist: read_cidrs(r, "RATE_LIMIT_ALLOWLIST"),
        fail_closed: r.boolean("RATE_LIMIT_FAIL_CLOSED", false),
    }
}

/// OAuth providers (`OAUTH_<NAME>_CLIENT_ID`/`_CLIENT_SECRET`; the generic one also needs
/// `_AUTH_URL`, `_TOKEN_URL`, `_USERINFO_URL`), the redirect allowlist and Telegram.
fn read_social(r: &mut Reader<'_>) -> SocialSettings {
    let known = [
        (
            "google",
            Some((
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
                "https://openidconnect.googleapis.com/v1/userinfo",
                "openid email profile",
            )),
        ),
        (
            "github",
            Some((
                "https://github.com/login/oauth/authorize",
                "https://github.com/login/oauth/access_token",
                "https://api.github.com/user",
                "read:user user:email",
            )),
        ),
        ("generic", None),
    ];
    let mut oauth = BTreeMap::new();
    for (name, defaults) in known {
        let upper = name.to_ascii_uppercase();
        let var = |suffix: &str| format!("OAUTH_{upper}_{suffix}");
        let Some(client_id) = r.raw(&var("CLIENT_ID")).map(str::to_owned) else {
            continue;
        };
        let Some(client_secret) = r.raw(&var("CLIENT_SECRET")).map(str::to_owned) else {
            r.fail(
                &var("CLIENT_SECRET"),
                format!("is required with {}", var("CLIENT_ID")),
            );
            continue;
        };
        let mut url = |suffix: &str, default: Option<&str>| -> Option<Url> {
            let name = var(suffix);
            match r.raw(&name).or(default) {
                Some(value) => Url::parse(value)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .or_else(|| {
                        r.fail(&name, "must be an absolute http(s) URL");
                        None
                    }),
                None => {
                    r.fail(&name, format!("is required with {}", var("CLIENT_ID")));
                    None
                }
            }
        };
        let (auth, token, userinfo) = (
            url("AUTH_URL", defaults.map(|d| d.0)),
            url("TOKEN_URL", defaults.map(|d| d.1)),
            url("USERINFO_URL", defaults.map(|d| d.2)),
        );
        let scopes = r
            .raw(&var("SCOPES"))
            .or(defaults.map(|d| d.3))
            .unwrap_or("openid email profile")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let (Some(auth_url), Some(token_url), Some(userinfo_url)) = (auth, token, userinfo) {
            oauth.insert(
                name.to_owned(),
                OAuthProvider {
                    client_id,
                    client_secret: client_secret.into(),
                    auth_url,
                    token_url,
                    userinfo_url,
                    scopes,
                },
            );
        }
    }
    let mut redirect_allowlist = Vec::new();
    for entry in r
        .raw("OAUTH_REDIRECT_ALLOWLIST")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match Url::parse(entry) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                redirect_allowlist.push(url);
            }
            _ => r.fail(
                "OAUTH_REDIRECT_ALLOWLIST",
                format!("{entry:?} is not an absolute http(s) URL"),
            ),
        }
    }
    if !oauth.is_empty() && redirect_allowlist.is_empty() {
        r.fail(
            "OAUTH_REDIRECT_ALLOWLIST",
            "is required when an OAuth provider is configured (where may tokens be handed back?)",
        );
    }
    SocialSettings {
        oauth,
        redirect_allowlist,
        telegram_bot_token: r
            .raw("TELEGRAM_BOT_TOKEN")
            .map(|t| SecretString::from(t.to_owned())),
        telegram_max_age: r.duration("TELEGRAM_AUTH_MAX_AGE", Duration::from_secs(3600)),
    }
}

fn display_host(host: IpAddr) -> String {
    match host {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn validate_database_url(value: &str) -> Result<(), String> {
    const HINT: &str =
        "must be a postgres://user:password@host:5432/db or sqlite://path/to/file.db?mode=rwc URL";
    if value == "sqlite::memory:" || value.starts_with("sqlite::memory:?") {
        return Ok(());
    }
    let url = Url::parse(value).map_err(|_| HINT.to_owned())?;
    match url.scheme() {
        "postgres" | "postgresql" if url.has_host() && url.path().len() > 1 => Ok(()),
        "postgres" | "postgresql" => Err("must name a host and a database".to_owned()),
        "sqlite" => Ok(()),
        other => Err(format!("unsupported scheme {other:?}; {HINT}")),
    }
}

/// Decodes a 32-byte key given as base64 (standard or URL-safe) or as 64 hex digits.
pub fn decode_secrets_key(value: &str) -> Option<[u8; 32]> {
    let value = value.trim();
    let bytes = if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&value[i * 2..i * 2 + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .ok()?
    };
    bytes.try_into().ok()
}

/// Masks the password of a URL (`postgres://app:********@db/app`).
fn mask_url(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("********"));
            url.to_string()
        }
        _ => value.to_owned(),
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read_secrets_file(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn write_secrets_file(path: &Path, values: &BTreeMap<String, String>) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::infra::files::private_dir(dir)?;
    }
    let mut text = String::from(
        "# Generated by multipult for development only. Set real secrets in the environment in production.\n",
    );
    for (k, v) in values {
        text.push_str(&format!("{k}={v}\n"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_for_development() {
        let s = Settings::from_vars(BTreeMap::new()).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.http.port, 8080);
        assert_eq!(
            s.database.url.expose_secret(),
            "sqlite://data/multipult.db?mode=rwc"
        );
        assert!(s.database.auto_migrate);
        assert!(s.redis.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = Settings::from_vars(vars(&[
            ("APP_ENV", "production"),
            ("APP_PORT", "abc"),
            ("DATABASE_URL", "not a url"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errors.0.iter().map(|e| e.variable.as_str()).collect();
        for expected in [
            "APP_PORT",
            "DATABASE_URL",
            "REDIS_URL",
            "JWT_SECRET",
            "SECRETS_KEY",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn secrets_key_accepts_base64_and_hex_only_of_32_bytes() {
        assert!(decode_secrets_key(&"ab".repeat(32)).is_some());
        assert!(decode_secrets_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_some());
        assert!(decode_secrets_key("c2hvcnQ=").is_none());
    }

    #[test]
    fn described_settings_mask_secrets_and_passwords() {
        let s = Settings::from_vars(vars(&[
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
            ("JWT_SECRET", "x".repeat(40).as_str()),
        ]))
        .unwrap();
        let text = format!("{:?}", s.describe());
        assert!(!text.contains("hunter2"));
        assert!(!text.contains(&"x".repeat(40)));
    }
}
