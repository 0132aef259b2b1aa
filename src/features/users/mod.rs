//! Accounts as the rest of the API sees them: profiles, roles and the closed catalogue of
//! permissions, synced to the database at start.

pub mod loaders;
pub mod permissions;
mod resolvers;
pub mod service;
pub mod types;

pub use permissions::Permission;
pub use resolvers::{UsersMutation, UsersQuery};
