//! Accounts as the rest of the API sees them: the `User` type, the caller's profile, other users'
//! profiles, and the request-scoped loaders that batch their lookups.

pub mod loaders;
mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{UsersMutation, UsersQuery};

use crate::feature::Feature;

pub const FEATURE: Feature = Feature {
    loaders: Some(loaders::attach),
    ..Feature::new("users")
};
