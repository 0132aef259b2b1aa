//! Who is calling and what they may do — below every feature, used by every layer.
//!
//! - [`viewer`]: the caller as the transports and resolvers see it ([`Viewer`], [`Caller`]).
//! - [`authenticate`]: access token → caller, with the user's current state (docs/auth.md).
//! - [`permissions`]: the permission model and the catalogue; [`rank`]: who may act on whom.
//! - [`accounts`], [`sessions`], [`passwords`], [`tokens`]: the records behind it.
//! - [`api_keys`]: API keys as credentials; [`tenancy`]: organization roles, permissions and
//!   the tenant check.
//! - [`actor`]: who did a change, for the audit trail; [`events`]: identity changes, fanned out.

pub mod accounts;
pub mod actor;
pub mod api_keys;
pub mod authenticate;
pub mod events;
pub mod passwords;
pub mod permissions;
pub mod rank;
pub mod sessions;
pub mod tenancy;
pub mod tokens;
pub mod viewer;

pub use actor::{Actor, Authority};
pub use api_keys::ApiKeyCaller;
pub use authenticate::{USER_TAG, profile_touched, sessions_ended, user_changed, user_created};
pub use events::SessionEnd;
pub use permissions::{Catalogue, Permission};
pub use tenancy::{OrgPermission, OrgRole, Stage, Tenant};
pub use viewer::{
    AddressKey, AuthUser, Authentication, Caller, ClientInfo, Profile, RoleSummary, Viewer,
};
