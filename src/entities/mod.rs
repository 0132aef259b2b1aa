//! SeaORM entities, one file per table. They never leave the crate as GraphQL types.

pub mod api_keys;
pub mod audit_log;
pub mod email_tokens;
pub mod jobs;
pub mod linked_accounts;
pub mod organization_members;
pub mod organizations;
pub mod permissions;
pub mod refresh_tokens;
pub mod revoked_sessions;
pub mod role_permissions;
pub mod roles;
pub mod totp_backup_codes;
pub mod user_roles;
pub mod user_totp;
pub mod users;
