//! The audit trail: who did what to whom, from where, written in the same transaction as the
//! change it records. Append-only: no API edits or deletes entries; retention removes old ones.

mod resolvers;
pub mod service;
pub mod settings;
mod types;

pub use resolvers::AuditQuery;

use crate::feature::{Feature, Task};
use crate::identity::Permission;
use crate::identity::permissions::MODERATOR_ROLE;

pub const AUDIT_READ: Permission =
    Permission::new("audit:read", "Read the audit log").granted_to(&[MODERATOR_ROLE]);

pub const FEATURE: Feature = Feature {
    permissions: &[AUDIT_READ],
    settings: Some(settings::SECTION),
    tasks: &[Task {
        name: "audit-retention",
        run: service::retention_task,
    }],
    ..Feature::new("audit")
};
