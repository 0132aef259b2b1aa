//! The audit trail: who did what to whom, from where, written in the same transaction as the
//! change it records. Append-only: no API edits or deletes entries; retention removes old ones.

mod resolvers;
pub mod service;
mod types;

pub use resolvers::AuditQuery;
pub use service::Actor;
