//! Everything a request handler or background task shares, behind one cheap-to-clone handle.

use std::ops::Deref;
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::infra::SharedStores;
use crate::infra::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub stores: SharedStores,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down; long-lived tasks (WebSockets) watch it.
    pub shutdown: CancellationToken,
    /// Work that outlives its request (upgraded WebSockets); shutdown waits for it.
    pub tasks: TaskTracker,
    pub started_at: Instant,
}

impl AppState {
    pub fn new(settings: Settings, db: DatabaseConnection, stores: SharedStores) -> Self {
        Self(Arc::new(AppInner {
            settings,
            db,
            stores,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
        }))
    }
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
