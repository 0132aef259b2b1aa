//! Facts about the running API (`apiInfo`) and a liveness stream (`heartbeat`) that clients use to
//! check their connection end to end.

mod resolvers;
mod service;
mod types;

pub use resolvers::{MetaQuery, MetaSubscription};

use crate::feature::Feature;

pub const FEATURE: Feature = Feature::new("meta");
