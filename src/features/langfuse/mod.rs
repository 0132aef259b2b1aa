//! Langfuse settings per organization and environment: host and project keys (the secret sealed
//! at rest, write-only), connection tests, periodic checks that alert owners and admins, and SDK
//! snippets (docs/langfuse.md).

mod config;
pub mod entity;
mod guard;
mod monitor;
mod probe;
mod resolvers;
pub mod service;
mod types;

pub use config::LangfuseConfig;
pub use monitor::run_checks;
pub use resolvers::{LangfuseMutation, LangfuseQuery, LangfuseSubscription};

use crate::feature::{Feature, Job, Schedule};
use crate::identity::{OrgPermission, OrgRole};

pub const LANGFUSE_READ: OrgPermission = OrgPermission::new(
    "langfuse:read",
    "See the Langfuse settings (secret keys masked), their status and SDK snippets",
    &[
        OrgRole::Owner,
        OrgRole::Admin,
        OrgRole::Member,
        OrgRole::Viewer,
    ],
);
pub const LANGFUSE_TEST: OrgPermission = OrgPermission::new(
    "langfuse:test",
    "Test the saved Langfuse connections",
    &[OrgRole::Owner, OrgRole::Admin, OrgRole::Member],
);
pub const LANGFUSE_MANAGE: OrgPermission = OrgPermission::new(
    "langfuse:manage",
    "Create, change and delete Langfuse settings; test credentials before saving them",
    &[OrgRole::Owner, OrgRole::Admin],
);

pub const FEATURE: Feature = Feature {
    org_permissions: &[LANGFUSE_READ, LANGFUSE_TEST, LANGFUSE_MANAGE],
    jobs: &[Job {
        kind: monitor::CHECKS_JOB,
        handler: monitor::handler,
    }],
    schedules: &[Schedule {
        name: "langfuse-checks",
        every: monitor::schedule,
        job: monitor::CHECKS_JOB,
    }],
    settings: Some(config::SECTION),
    reseal: Some(service::reseal),
    scrape: Some(monitor::scrape),
    ..Feature::new("langfuse")
};
