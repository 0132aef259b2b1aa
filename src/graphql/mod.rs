//! Schema assembly: feature roots merged into one schema, with limits and policies from settings.

pub mod context;
pub mod extension;
pub mod guards;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

pub use context::{ContextExt, RequestId};
pub use extension::{Budget, Cost, RequestContext, RequestPhase};
pub use guards::RequirePermission;

use crate::config::Environment;
use crate::features::admin::{AdminMutation, AdminQuery};
use crate::features::audit::AuditQuery;
use crate::features::auth::{AuthMutation, AuthQuery};
use crate::features::meta::{MetaQuery, MetaSubscription};
use crate::features::users::{UsersMutation, UsersQuery};
use crate::state::AppState;

#[derive(MergedObject, Default)]
pub struct QueryRoot(MetaQuery, AuthQuery, UsersQuery, AdminQuery, AuditQuery);

#[derive(MergedObject, Default)]
pub struct MutationRoot(AuthMutation, UsersMutation, AdminMutation);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(MetaSubscription);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The types alone, without data or limits: what `export-schema` prints.
pub fn schema_builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
}

/// The served schema: state, depth/complexity limits, and production policies.
pub fn build_schema(state: &AppState) -> AppSchema {
    let settings = &state.settings;
    // Depth and complexity are enforced per caller by `RequestContext` (admins get a higher
    // ceiling), with the measured values in the error.
    let mut builder = schema_builder()
        .data(state.clone())
        .extension(RequestContext);
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
