//! Everything a request handler or background task shares, behind one cheap-to-clone handle.

use std::ops::Deref;
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::identity::Catalogue;
use crate::identity::events::Watchers;
use crate::infra::SharedStores;
use crate::infra::crypto::SecretBox;
use crate::infra::jobs::JobQueue;
use crate::infra::mailer::{self, Mailer};
use crate::infra::metrics::Metrics;
use crate::infra::rate_limit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub stores: SharedStores,
    pub jobs: JobQueue,
    pub mailer: Arc<dyn Mailer>,
    /// Encrypts secrets stored in the database.
    pub secret_box: SecretBox,
    /// Outbound HTTP (OAuth providers, integrations): rustls, timeouts, no redirects.
    pub http_client: reqwest::Client,
    pub metrics: Arc<Metrics>,
    pub rate_limiter: RateLimiter,
    /// Cost-budget charges, sent to the shared store in batches.
    pub budgets: crate::infra::budget::BudgetLedger,
    /// Every permission the application knows (identity's and each feature's).
    pub catalogue: Catalogue,
    /// Open sockets of this instance watching their users' identity changes.
    pub identity_watchers: Arc<Watchers>,
    /// Cancelled when the server starts shutting down; long-lived tasks (WebSockets) watch it.
    pub shutdown: CancellationToken,
    /// Work that outlives its request (upgraded WebSockets); shutdown waits for it.
    pub tasks: TaskTracker,
    pub started_at: Instant,
}

impl AppState {
    /// # Errors
    /// The mail transport or the secrets key cannot be set up from the settings.
    pub fn new(
        settings: Settings,
        db: DatabaseConnection,
        stores: SharedStores,
        catalogue: Catalogue,
    ) -> anyhow::Result<Self> {
        let mailer = mailer::from_settings(&settings)?;
        let secret_box = SecretBox::from_settings(&settings)?;
        let http_client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let jobs = JobQueue::new(db.clone(), settings.jobs.clone());
        let metrics = Metrics::new();
        let rate_limiter = RateLimiter::new(
            stores.kv.clone(),
            metrics.clone(),
            settings.rate_limit.fail_closed,
        );
        Ok(Self(Arc::new(AppInner {
            settings,
            db,
            stores,
            jobs,
            mailer,
            secret_box,
            http_client,
            metrics,
            rate_limiter,
            budgets: crate::infra::budget::BudgetLedger::default(),
            catalogue,
            identity_watchers: Arc::new(Watchers::default()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
        })))
    }
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
