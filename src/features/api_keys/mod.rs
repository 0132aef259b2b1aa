//! API keys for machine clients: per organization and environment, scoped to organization
//! permissions, shown once, revocable and rotatable with a grace period (docs/api-keys.md).
//! Checking a presented key is identity's (`crate::identity::api_keys`); this folder manages
//! them.

mod resolvers;
pub mod service;
mod types;

pub use resolvers::{ApiKeysMutation, ApiKeysQuery};

use crate::feature::{Feature, Task};
use crate::identity::{OrgPermission, OrgRole};

pub const APIKEYS_READ: OrgPermission = OrgPermission::new(
    "apikeys:read",
    "List the organization's API keys (names, prefixes, scopes, last use; never the keys)",
    &[OrgRole::Owner, OrgRole::Admin, OrgRole::Member],
);
pub const APIKEYS_MANAGE: OrgPermission = OrgPermission::new(
    "apikeys:manage",
    "Create, rotate and revoke the organization's API keys (scopes up to one's own permissions)",
    &[OrgRole::Owner, OrgRole::Admin],
);

pub const FEATURE: Feature = Feature {
    org_permissions: &[APIKEYS_READ, APIKEYS_MANAGE],
    tasks: &[Task {
        name: "api-key-usage",
        run: service::usage_task,
    }],
    ..Feature::new("api_keys")
};
