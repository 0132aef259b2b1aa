//! The admin API: users, bans, permanent deletion, bulk roles, role management, system stats.
//! Every mutation is audited in its own transaction.

pub mod commands;
mod notices;
mod resolvers;
pub mod roles;
pub mod service;
mod types;

pub use resolvers::{AdminMutation, AdminQuery};

use crate::feature::Feature;

pub const FEATURE: Feature = Feature::new("admin");
