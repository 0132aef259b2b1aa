//! Who is calling: registration, login, sessions (rotating refresh tokens), access tokens, and the
//! `Viewer` every request carries.

mod emails;
pub mod oauth;
mod passwords;
mod resolvers;
pub mod service;
pub mod social;
mod tokens;
pub mod two_factor;
mod types;
pub mod viewer;

pub use resolvers::{AuthMutation, AuthQuery};
pub use viewer::{AuthUser, Authentication, Caller, ClientInfo, Viewer};

/// Root fields a request may reach with an invalid or expired access token (it is then treated as
/// anonymous), so a client can always log in again or refresh its session.
pub const PUBLIC_ROOT_FIELDS: &[&str] = &[
    "register",
    "login",
    "refreshSession",
    "verifyEmail",
    "requestPasswordReset",
    "resetPassword",
    "loginWithTelegram",
    "__typename",
];
