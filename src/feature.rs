//! What a feature contributes to the application, declared once in its own folder
//! (`src/features/<name>/mod.rs`, as `pub const FEATURE: Feature`) and collected by the registry
//! (`src/features/mod.rs`). The kernel never names a feature: it asks the registry.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::Section;
use crate::identity::{OrgPermission, Permission};
use crate::infra::jobs::JobHandler;
use crate::infra::scheduler::Every;
use crate::state::AppState;

/// A kind of durable job and how to build its handler.
#[derive(Clone, Copy)]
pub struct Job {
    pub kind: &'static str,
    pub handler: fn(&AppState) -> Arc<dyn JobHandler>,
}

/// Work that runs beside the server until shutdown (watch `state.shutdown`).
#[derive(Clone, Copy)]
pub struct Task {
    pub name: &'static str,
    pub run: fn(AppState) -> BoxFuture<'static, ()>,
}

/// Recurring work, run once across all instances (`crate::infra::scheduler`): when it runs comes
/// from the settings (`None`: off, e.g. retention not configured), and each run enqueues `job`
/// (one of the feature's `jobs`, with an `infra::scheduler::Run` payload).
#[derive(Clone, Copy)]
pub struct Schedule {
    pub name: &'static str,
    /// When, and the jitter added to each run.
    pub every: fn(&crate::config::Settings) -> Option<(Every, std::time::Duration)>,
    pub job: &'static str,
}

/// Re-seals every secret a feature stores encrypted with the current `SECRETS_KEY` (`multipult
/// secrets rotate`): how many values were re-sealed, and how many there are.
pub type Reseal = fn(AppState) -> BoxFuture<'static, crate::error::AppResult<(u64, u64)>>;

/// Refreshes a feature's gauges from shared state when `/metrics` is scraped (so every instance
/// reports the same value, whichever ran the work).
pub type Scrape = fn(&AppState) -> BoxFuture<'_, ()>;

/// Adds a feature's request-scoped data (DataLoaders) to one operation's request.
pub type AttachLoaders = fn(&AppState, async_graphql::Request) -> async_graphql::Request;

#[derive(Clone, Copy)]
pub struct Feature {
    pub name: &'static str,
    /// Permissions this feature declares (each with its description and default roles).
    pub permissions: &'static [Permission],
    /// Organization permissions this feature declares (each with the organization roles that
    /// hold it); API keys are scoped to them.
    pub org_permissions: &'static [OrgPermission],
    /// Root fields a request may reach with an invalid or expired credential (then running as
    /// anonymous), so a client can always sign in again.
    pub public_root_fields: &'static [&'static str],
    pub jobs: &'static [Job],
    pub tasks: &'static [Task],
    pub schedules: &'static [Schedule],
    pub loaders: Option<AttachLoaders>,
    /// HTTP routes besides GraphQL (OAuth callbacks, webhooks), behind every kernel layer.
    pub routes: Option<fn(AppState) -> axum::Router>,
    /// The feature's own settings, read with the rest at start (`settings.section::<T>()`).
    pub settings: Option<Section>,
    /// When the feature stores secrets sealed with `SECRETS_KEY`.
    pub reseal: Option<Reseal>,
    /// Gauges read at scrape time.
    pub scrape: Option<Scrape>,
}

impl Feature {
    /// A feature that contributes only GraphQL roots; add the rest with struct update syntax:
    /// `Feature { jobs: &[…], ..Feature::new("audit") }`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            permissions: &[],
            org_permissions: &[],
            public_root_fields: &[],
            jobs: &[],
            tasks: &[],
            schedules: &[],
            loaders: None,
            routes: None,
            settings: None,
            reseal: None,
            scrape: None,
        }
    }
}
