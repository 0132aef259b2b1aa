//! Bootstrap: connect, migrate, bind, serve, and shut down gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use sea_orm::DatabaseConnection;
use tokio::net::{TcpListener, TcpSocket};

use std::sync::Arc;

use crate::config::Settings;
use crate::infra::jobs::Worker;
use crate::infra::mailer::{SEND_EMAIL, SendEmailJob};
use crate::infra::{SharedStores, db};
use crate::state::AppState;
use crate::{identity, schema};

/// Binds `address` with room for `backlog` connections waiting to be accepted (the standard
/// library's `bind` asks for 128).
fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects to the configured database (migrating it when `AUTO_MIGRATE`) and shared stores,
    /// then binds the listener.
    ///
    /// # Errors
    /// The database is unreachable, a migration fails, or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (db, stores) = connect(&settings).await?;
        Self::build_with(settings, db, stores).await
    }

    /// Serves on an existing connection and stores (tests share them between instances).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn build_with(
        settings: Settings,
        db: DatabaseConnection,
        stores: SharedStores,
    ) -> anyhow::Result<Self> {
        let address = SocketAddr::new(settings.http.host, settings.http.port);
        let listener = listen(address, settings.http.listen_backlog)
            .with_context(|| format!("cannot listen on {address}"))?;
        let state = prepare_state(settings, db, stores).await?;
        let router = crate::http::router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map_or(0, |a| a.port())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM.
    ///
    /// # Errors
    /// The server fails to accept connections.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes, then stops accepting, lets in-flight requests finish
    /// (bounded by `SHUTDOWN_TIMEOUT`) and closes WebSockets with 1001.
    ///
    /// # Errors
    /// The server fails to accept connections.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            state,
        } = self;
        let grace = state.settings.http.shutdown_timeout;
        // Background jobs run beside the server and drain with it.
        let mut worker = Worker::new(state.jobs.clone(), state.metrics.clone()).register(
            SEND_EMAIL,
            Arc::new(SendEmailJob {
                mailer: state.mailer.clone(),
            }),
        );
        for job in schema::jobs() {
            worker = worker.register(job.kind, (job.handler)(&state));
        }
        let worker = tokio::spawn(worker.run(state.shutdown.clone(), grace));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(identity::events::listen(state.clone()));
        tasks.spawn(crate::maintenance::run(state.clone()));
        tasks.spawn(crate::maintenance::flush_budgets(state.clone()));
        for task in schema::tasks() {
            tasks.spawn((task.run)(state.clone()));
        }
        let scheduler = crate::infra::scheduler::Scheduler {
            kv: state.stores.kv.clone(),
            jobs: state.jobs.clone(),
            db: state.db.clone(),
            metrics: state.metrics.clone(),
        };
        tasks.spawn(scheduler.run(schema::schedules(&state.settings), state.shutdown.clone()));
        let result = serve(listener, router, state.clone(), signal).await;
        // Requests are done; let running jobs finish (the worker bounds this by SHUTDOWN_TIMEOUT).
        state.shutdown.cancel();
        let _ = worker.await;
        while tasks.join_next().await.is_some() {}
        result
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let result = crate::http::server::serve(listener, router, state.clone(), signal).await;
    finish(&state).await;
    result
}

/// Connects to the configured database (migrating it when `AUTO_MIGRATE`) and shared stores.
///
/// # Errors
/// The database is unreachable, a migration fails, or Redis is misconfigured.
pub async fn connect(settings: &Settings) -> anyhow::Result<(DatabaseConnection, SharedStores)> {
    // Schema changes run on one connection (an in-memory SQLite database is its one connection,
    // so there the pool is it).
    let separate = settings.database.auto_migrate && !settings.database.is_sqlite_memory();
    if separate {
        let single = db::connect_for_schema_changes(&settings.database)
            .await
            .context("cannot connect to the database")?;
        db::migrate(&single)
            .await
            .context("cannot apply migrations")?;
        single.close().await.ok();
    }
    let db = db::connect(&settings.database)
        .await
        .context("cannot connect to the database")?;
    if settings.database.auto_migrate && !separate {
        db::migrate(&db).await.context("cannot apply migrations")?;
    }
    let stores = SharedStores::from_settings(settings).context("cannot set up Redis")?;
    Ok((db, stores))
}

/// The state every entry point (server, CLI) works with: the catalogue synced, nothing bound.
///
/// # Errors
/// The permission catalogue cannot be synced (for instance, migrations are missing).
pub async fn prepare_state(
    settings: Settings,
    db: DatabaseConnection,
    stores: SharedStores,
) -> anyhow::Result<AppState> {
    let catalogue = schema::catalogue();
    identity::permissions::sync_catalogue(&db, &catalogue)
        .await
        .context("cannot sync the permission catalogue (are migrations applied?)")?;
    AppState::new(settings, db, stores, catalogue)
}

/// Waits (briefly) for upgraded WebSockets, which saw the cancellation and are sending their
/// close frames.
async fn finish(state: &AppState) {
    state.tasks.close();
    // WebSockets saw the cancellation and are sending their close frames.
    if tokio::time::timeout(Duration::from_secs(5), state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSocket connections did not close in time");
    }
    tracing::info!("server stopped");
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
