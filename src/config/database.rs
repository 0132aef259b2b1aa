//! The database (`DATABASE_*`, `AUTO_MIGRATE`) and Redis (`REDIS_*`).

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::reader::{Reader, mask_url};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    /// A pooled connection idle at least this long is pinged before it is handed out (zero:
    /// every checkout); busy connections go out without the extra round trip.
    pub ping_after_idle: Duration,
    /// When a SQLite commit is on disk (`PRAGMA synchronous`; PostgreSQL has its own settings).
    pub sqlite_synchronous: SqliteSynchronous,
    pub auto_migrate: bool,
}

/// SQLite's `PRAGMA synchronous` in WAL mode, the two settings that never corrupt the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// Commits are written to the log and synced at checkpoints: durable across a crash of the
    /// process; the last commits can be lost to a power cut or an operating-system crash.
    Normal,
    /// Every commit synced to disk before it returns: durable across a power cut, one `fsync`
    /// per write transaction.
    Full,
}

impl DatabaseSettings {
    pub fn is_postgres(&self) -> bool {
        self.url.expose_secret().starts_with("postgres")
    }

    pub fn is_sqlite_memory(&self) -> bool {
        self.url.expose_secret().contains(":memory:")
            || self.url.expose_secret().contains("mode=memory")
    }

    pub fn read(r: &mut Reader<'_>, production: bool, data_dir: &Path) -> Self {
        let default = format!("sqlite://{}/multipult.db?mode=rwc", data_dir.display());
        let url = match r.url("DATABASE_URL") {
            None if production => {
                r.fail("DATABASE_URL", "is required in production");
                default
            }
            None => {
                r.record("DATABASE_URL", default.clone(), false);
                default
            }
            Some(value) => {
                if let Err(message) = validate_url(&value) {
                    r.fail("DATABASE_URL", message);
                }
                value
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
        Self {
            url: url.into(),
            max_connections,
            min_connections: min_connections.min(max_connections),
            connect_timeout: r.duration("DATABASE_CONNECT_TIMEOUT", Duration::from_secs(5)),
            acquire_timeout: r.duration("DATABASE_ACQUIRE_TIMEOUT", Duration::from_secs(5)),
            ping_after_idle: r.duration_or_zero(
                "DATABASE_PING_AFTER_IDLE",
                Duration::from_secs(30),
                Duration::from_secs(24 * 3600),
            ),
            sqlite_synchronous: read_synchronous(r),
            auto_migrate: r.boolean("AUTO_MIGRATE", !production),
        }
    }
}

fn read_synchronous(r: &mut Reader<'_>) -> SqliteSynchronous {
    let text = r.string("DATABASE_SQLITE_SYNCHRONOUS", "normal");
    match text.to_ascii_lowercase().as_str() {
        "normal" => SqliteSynchronous::Normal,
        "full" => SqliteSynchronous::Full,
        _ => {
            r.fail(
                "DATABASE_SQLITE_SYNCHRONOUS",
                format!("must be normal or full, got {text:?}"),
            );
            SqliteSynchronous::Normal
        }
    }
}

fn validate_url(value: &str) -> Result<(), String> {
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

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Multiplexed connections, taken in turn.
    pub pool_size: usize,
    /// Upper bound for one command, so a stalled Redis adds bounded latency.
    pub timeout: Duration,
    /// Consecutive errors that open the circuit breaker (a timeout opens it at once).
    pub circuit_threshold: u32,
    /// How long an open circuit fails fast before one probe call is let through.
    pub circuit_cooldown: Duration,
}

impl RedisSettings {
    /// Two multiplexed connections: measured against 1 and 4 with PostgreSQL + Redis on one
    /// 2-core machine, 2 and 1 tie and 4 is 5–20 % slower (fewer commands pipelined into each
    /// write, more driver tasks waking); two leave a second connection's driver task for busier
    /// machines (docs/benchmarks.md).
    pub const DEFAULT_POOL_SIZE: usize = 2;

    /// Defaults for `url` (tests and tools adjust the rest).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            timeout: Duration::from_millis(500),
            circuit_threshold: 3,
            circuit_cooldown: Duration::from_secs(2),
        }
    }

    /// `None` without `REDIS_URL` (in-process stores); required in production.
    pub fn read(r: &mut Reader<'_>, production: bool) -> Option<Self> {
        let url = r.url("REDIS_URL");
        // Read (and show) the rest whether or not Redis is configured.
        let pool_size = r.number("REDIS_POOL_SIZE", Self::DEFAULT_POOL_SIZE, 1, 1024);
        let timeout = r.duration("REDIS_TIMEOUT", Duration::from_millis(500));
        let circuit_threshold = r.number("REDIS_CIRCUIT_THRESHOLD", 3u32, 1, 1000);
        let circuit_cooldown = r.duration("REDIS_CIRCUIT_COOLDOWN", Duration::from_secs(2));
        let Some(url) = url else {
            if production {
                r.fail("REDIS_URL", "is required in production");
            } else {
                r.record("REDIS_URL", "(unset: in-process stores)", false);
            }
            return None;
        };
        match Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") && parsed.has_host() => {}
            _ => r.fail(
                "REDIS_URL",
                "must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379",
            ),
        }
        r.record("REDIS_URL", mask_url(&url), false);
        Some(Self {
            url: url.into(),
            pool_size,
            timeout,
            circuit_threshold,
            circuit_cooldown,
        })
    }
}
