//! The audit trail: who did what to whom, from where, written in the same transaction as the
//! change it records. Append-only: no API edits or deletes entries; retention removes old ones.

mod resolvers;
pub mod service;
pub mod settings;
mod types;

pub use resolvers::AuditQuery;

use crate::feature::{Feature, Job, Schedule};
use crate::identity::Permission;
use crate::identity::permissions::MODERATOR_ROLE;

pub const AUDIT_READ: Permission =
    Permission::new("audit:read", "Read the audit log").granted_to(&[MODERATOR_ROLE]);

pub const FEATURE: Feature = Feature {
    permissions: &[AUDIT_READ],
    settings: Some(settings::SECTION),
    jobs: &[Job {
        kind: service::RETENTION_JOB,
        handler: service::retention_handler,
    }],
    schedules: &[Schedule {
        name: "audit-retention",
        every: service::retention_schedule,
        job: service::RETENTION_JOB,
    }],
    ..Feature::new("audit")
};
