//! The served GraphQL schema, assembled from the feature registry (`crate::features`, whose
//! `MergedObject` roots and `FEATURES` list this module is the kernel's only window on): limits
//! and production policies, the permission catalogue, public root fields, jobs, tasks and
//! request-scoped loaders.

use std::sync::LazyLock;

use async_graphql::{Schema, SchemaBuilder};

use crate::config::Environment;
use crate::feature::{Feature, Job, Task};
use crate::features::{FEATURES, MutationRoot, QueryRoot, SubscriptionRoot};
use crate::graphql::RequestContext;
use crate::identity::Catalogue;
use crate::identity::permissions::IDENTITY_PERMISSIONS;
use crate::state::AppState;

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Every registered feature.
pub fn features() -> &'static [Feature] {
    FEATURES
}

/// The types alone, without data or limits: what `export-schema` prints.
pub fn schema_builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
}

/// The served schema: state, the request extension (limits, codes, request ids) and production
/// policies.
pub fn build_schema(state: &AppState) -> AppSchema {
    configured(state, true)
}

/// The served schema twice over the same types and data.
///
/// With async-graphql, any extension at all makes every resolved field go through the
/// extensions' `resolve` chain (a registry lookup for its type and two boxed futures), whether or
/// not an extension looks at fields. An operation whose document and operation already passed
/// validation without variables ([`crate::graphql::RequestPhase::kept_validation`]) needs none
/// of the request extension's hooks: the transport checks its limits and budget before it runs
/// and decorates its response after ([`crate::graphql::extension::admit_kept`], `complete`), and
/// it runs on `direct`, which has no extension (and validates in async-graphql's fast mode: one
/// walk for fragment cycles and the measures, the rules having passed for this text). Everything
/// else — a document's first run, any operation with variables, every operation over WebSocket
/// — runs on `full`. With
/// traces on, whose slow-resolver check is an extension, there is no `direct`.
#[derive(Clone)]
pub struct Schemas {
    pub full: AppSchema,
    pub direct: Option<AppSchema>,
}

impl Schemas {
    pub fn build(state: &AppState) -> Self {
        Self {
            full: build_schema(state),
            direct: (!crate::telemetry::otel::enabled()).then(|| configured(state, false)),
        }
    }
}

fn configured(state: &AppState, extended: bool) -> AppSchema {
    let settings = &state.settings;
    let mut builder = schema_builder().data(state.clone());
    if extended {
        // Depth and complexity are enforced per caller by `RequestContext` (admins get a higher
        // ceiling), with the measured values in the error.
        builder = builder.extension(RequestContext);
        if crate::telemetry::otel::enabled() {
            builder = builder.extension(crate::graphql::slow_resolvers::SlowResolvers(
                settings.telemetry.slow_resolver,
            ));
        }
    } else {
        builder = builder.validation_mode(async_graphql::ValidationMode::Fast);
    }
    if !settings.graphql.introspection {
        builder = builder.disable_introspection();
    }
    if settings.environment == Environment::Production {
        builder = builder.disable_suggestions();
    }
    builder.finish()
}

/// The SDL that `multipult export-schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// Identity's permissions plus every feature's, and every feature's organization permissions.
pub fn catalogue() -> Catalogue {
    Catalogue::new(
        IDENTITY_PERMISSIONS
            .iter()
            .chain(FEATURES.iter().flat_map(|f| f.permissions))
            .copied(),
    )
    .with_organization(FEATURES.iter().flat_map(|f| f.org_permissions).copied())
}

/// Root fields reachable with an invalid credential (running as anonymous).
pub fn public_root_fields() -> &'static [&'static str] {
    static FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut fields: Vec<&'static str> = FEATURES
            .iter()
            .flat_map(|f| f.public_root_fields)
            .copied()
            .collect();
        fields.push("__typename");
        fields
    });
    &FIELDS
}

pub fn jobs() -> impl Iterator<Item = &'static Job> {
    FEATURES.iter().flat_map(|f| f.jobs)
}

pub fn tasks() -> impl Iterator<Item = &'static Task> {
    FEATURES.iter().flat_map(|f| f.tasks)
}

/// Every feature's schedules that the settings turn on.
pub fn schedules(settings: &crate::config::Settings) -> Vec<crate::infra::scheduler::Scheduled> {
    FEATURES
        .iter()
        .flat_map(|f| f.schedules)
        .filter_map(|schedule| {
            let (every, jitter) = (schedule.every)(settings)?;
            Some(crate::infra::scheduler::Scheduled {
                name: schedule.name,
                every,
                jitter,
                job: schedule.job,
            })
        })
        .collect()
}

/// Adds every feature's request-scoped loaders to one operation's request.
pub fn attach_loaders(state: &AppState, request: async_graphql::Request) -> async_graphql::Request {
    FEATURES
        .iter()
        .filter_map(|f| f.loaders)
        .fold(request, |request, attach| attach(state, request))
}

/// Every feature's own HTTP routes.
pub fn routes(state: &AppState) -> axum::Router {
    FEATURES
        .iter()
        .filter_map(|f| f.routes)
        .fold(axum::Router::new(), |router, routes| {
            router.merge(routes(state.clone()))
        })
}

/// Every feature that stores sealed secrets, by name, with its re-sealing.
pub fn resealers() -> impl Iterator<Item = (&'static str, crate::feature::Reseal)> {
    FEATURES
        .iter()
        .filter_map(|f| f.reseal.map(|reseal| (f.name, reseal)))
}

/// Every feature's scrape-time gauge refresh.
pub fn scrapers() -> impl Iterator<Item = crate::feature::Scrape> {
    FEATURES.iter().filter_map(|f| f.scrape)
}

/// Every feature's own settings section.
pub fn sections() -> Vec<crate::config::Section> {
    FEATURES.iter().filter_map(|f| f.settings).collect()
}
