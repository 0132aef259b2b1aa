//! The feature registry: every feature slice, its GraphQL roots, and what it contributes
//! (`FEATURE` in each folder). Adding a feature is a line in each list below; nothing else in the
//! kernel names a feature (docs/architecture.md, "Adding a feature").

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod langfuse;
pub mod meta;
pub mod notifications;
pub mod organizations;
pub mod users;

use async_graphql::{MergedObject, MergedSubscription};

use crate::feature::Feature;

/// Every feature, in the order their jobs, tasks and loaders are set up.
pub const FEATURES: &[Feature] = &[
    meta::FEATURE,
    users::FEATURE,
    audit::FEATURE,
    notifications::FEATURE,
    organizations::FEATURE,
    api_keys::FEATURE,
    langfuse::FEATURE,
    auth::FEATURE,
    admin::FEATURE,
];

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    meta::MetaQuery,
    auth::AuthQuery,
    users::UsersQuery,
    admin::AdminQuery,
    audit::AuditQuery,
    notifications::NotificationsQuery,
    organizations::OrganizationsQuery,
    api_keys::ApiKeysQuery,
    langfuse::LangfuseQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    auth::AuthMutation,
    users::UsersMutation,
    admin::AdminMutation,
    notifications::NotificationsMutation,
    organizations::OrganizationsMutation,
    api_keys::ApiKeysMutation,
    langfuse::LangfuseMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(
    meta::MetaSubscription,
    notifications::NotificationsSubscription,
    langfuse::LangfuseSubscription,
);
