//! The SeaORM connection: SQLite by default, PostgreSQL when `DATABASE_URL` says so.

use migration::{Migrator, MigratorTrait as _};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous as Synchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use secrecy::ExposeSecret as _;

use crate::config::{DatabaseSettings, SqliteSynchronous};

/// Opens the pool (creating the SQLite file's folder when needed).
///
/// # Errors
/// The database cannot be reached or the file cannot be created.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let url = settings.url.expose_secret();
    if let Some(file) = sqlite_file(url) {
        if let Some(dir) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::files::private_dir(dir).map_err(|e| {
                DbErr::Custom(format!(
                    "cannot create database folder {}: {e}",
                    dir.display()
                ))
            })?;
        }
        super::files::private_file(&file).map_err(|e| {
            DbErr::Custom(format!(
                "cannot create database file {}: {e}",
                file.display()
            ))
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.acquire_timeout)
        // Not a ping per checkout (a round trip before every statement on PostgreSQL): only
        // connections idle long enough to have been dropped by the server or a proxy.
        .test_before_acquire_if_idle_for(settings.ping_after_idle)
        .sqlx_logging(false);
    if settings.is_sqlite_memory() {
        // An in-memory database lives exactly as long as its one connection: never recycle it.
        options
            .idle_timeout(None)
            .max_lifetime(None)
            .min_connections(1);
    } else if !settings.is_postgres() {
        // Readers do not block the writer, and a busy writer makes others wait, not fail. In
        // WAL mode `NORMAL` syncs at checkpoints rather than on every commit (the file stays
        // sound either way): a commit holds the write lock for microseconds, not an `fsync`.
        let synchronous = match settings.sqlite_synchronous {
            SqliteSynchronous::Normal => Synchronous::Normal,
            SqliteSynchronous::Full => Synchronous::Full,
        };
        options.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(std::time::Duration::from_secs(5))
                .foreign_keys(true)
        });
    }
    let mut connection = Database::connect(options).await?;
    connection.set_metric_callback(on_statement);
    Ok(connection)
}

/// What every statement reports when it finished: a `db.query` span with its real timing and
/// its SQL (placeholders, never the values) when traces are on; nothing otherwise. A connection
/// that installs its own callback (tests counting statements) calls this from it.
pub fn on_statement(info: &sea_orm::metric::Info<'_>) {
    if !crate::telemetry::otel::enabled() {
        return;
    }
    let sql: String = info.statement.sql.chars().take(2000).collect();
    let operation = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let system = match info.statement.db_backend {
        sea_orm::DatabaseBackend::Postgres => "postgresql",
        sea_orm::DatabaseBackend::Sqlite => "sqlite",
        _ => "other_sql",
    };
    crate::telemetry::otel::record_finished(
        "db.query",
        info.elapsed,
        vec![
            opentelemetry::KeyValue::new("db.system.name", system),
            opentelemetry::KeyValue::new("db.operation.name", operation),
            opentelemetry::KeyValue::new("db.query.text", sql),
        ],
        info.failed,
    );
}

/// One connection, for schema changes: SQLite's `PRAGMA foreign_keys` and dropped tables are per
/// connection, so a pool lets `migrate fresh` drop on one connection and look on another.
///
/// # Errors
/// The database cannot be reached or the file cannot be created.
pub async fn connect_for_schema_changes(
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, DbErr> {
    let mut single = settings.clone();
    single.max_connections = 1;
    single.min_connections = single.min_connections.min(1);
    connect(&single).await
}

/// Applies every pending migration.
///
/// # Errors
/// A migration fails; it is rolled back where the backend supports transactional DDL.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// The file of a SQLite file URL (`sqlite://data/multipult.db?mode=rwc` → `data/multipult.db`).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split('?').next()?;
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// `sqlite` or `postgres`, for stats and logs.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "postgres",
        sea_orm::DatabaseBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

/// Starts a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`, waiting up to the busy timeout for another writer): a deferred transaction that
/// reads first and writes later fails at once with "database is locked" when another connection
/// wrote in between, and the busy timeout cannot help it. PostgreSQL begins as usual.
///
/// # Errors
/// The transaction cannot be started (the database is unreachable, or the lock was not had in
/// time).
pub async fn begin<D: TransactionTrait>(db: &D) -> Result<D::Transaction, DbErr> {
    #[allow(clippy::disallowed_methods)] // this is the one place that may
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}
