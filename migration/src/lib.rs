//! Database migrations, portable across SQLite and PostgreSQL (SeaQuery builders only).
//! Name new files `mYYYYMMDD_NNNNNN_<verb>_<noun>.rs`; never edit one that has shipped.
// `MigrationTrait`'s async methods need the elided (late-bound) lifetime of `&SchemaManager`.
#![allow(elided_lifetimes_in_paths)]
pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_identity_tables;
mod m20261122_000002_create_jobs_and_email_tokens;
mod m20261122_000003_create_two_factor_tables;
mod m20261122_000004_create_linked_accounts;
mod m20261122_000005_create_audit_log;
mod m20261123_000006_create_revoked_sessions;
mod m20261201_000007_create_notifications;
mod m20261201_000008_create_organizations;
mod m20261201_000009_create_langfuse;
mod m20261201_000010_add_job_trace_parent;
mod m20261201_000011_index_user_pages;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_identity_tables::Migration),
            Box::new(m20261122_000002_create_jobs_and_email_tokens::Migration),
            Box::new(m20261122_000003_create_two_factor_tables::Migration),
            Box::new(m20261122_000004_create_linked_accounts::Migration),
            Box::new(m20261122_000005_create_audit_log::Migration),
            Box::new(m20261123_000006_create_revoked_sessions::Migration),
            Box::new(m20261201_000007_create_notifications::Migration),
            Box::new(m20261201_000008_create_organizations::Migration),
            Box::new(m20261201_000009_create_langfuse::Migration),
            Box::new(m20261201_000010_add_job_trace_parent::Migration),
            Box::new(m20261201_000011_index_user_pages::Migration),
        ]
    }
}
