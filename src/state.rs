//! Everything a request handler or background task shares, behind one cheap-to-clone handle.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, PoisonError};

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
    /// Per-instance services of features (local subscriber hubs and the like): see [`AppState::local`].
    locals: Locals,
}

/// One value per type and instance, created on first use.
#[derive(Default)]
struct Locals(std::sync::RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

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
            locals: Locals::default(),
        })))
    }

    /// This instance's `T`, created with `T::default()` on first use: where a feature keeps
    /// in-process state that belongs to one running application (several run in one test
    /// process, so never a `static`).
    pub fn local<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let key = TypeId::of::<T>();
        let found = self
            .locals
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let value = match found {
            Some(value) => value,
            None => self
                .locals
                .0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_insert_with(|| Arc::new(T::default()))
                .clone(),
        };
        // The map holds a `T` under `TypeId::of::<T>()` and nothing else.
        value
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
