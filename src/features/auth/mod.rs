//! Signing up and in: registration and email verification, password login with throttling,
//! two-factor authentication, password changes and resets, sessions, OAuth2 and Telegram sign-in.
//! Who the caller is, once signed in, is `crate::identity`'s business.

mod email_tokens;
mod emails;
mod login;
mod mail;
mod notices;
pub mod oauth;
mod password;
mod registration;
mod resolvers;
mod routes;
pub mod settings;
pub mod social;
pub mod two_factor;
mod types;

pub use resolvers::{AuthMutation, AuthQuery};

use crate::feature::{Feature, Job};

pub const FEATURE: Feature = Feature {
    public_root_fields: &[
        "register",
        "login",
        "refreshSession",
        "verifyEmail",
        "requestPasswordReset",
        "resetPassword",
        "loginWithTelegram",
    ],
    jobs: &[Job {
        kind: mail::AUTH_MAIL,
        handler: mail::handler,
    }],
    routes: Some(routes::routes),
    settings: Some(settings::SECTION),
    reseal: Some(two_factor::reseal),
    ..Feature::new("auth")
};
