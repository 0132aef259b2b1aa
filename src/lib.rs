//! multipult: a production-ready GraphQL API backend template.

pub mod app;
pub mod cli;
pub mod config;
pub mod entities;
pub mod error;
pub mod feature;
pub mod features;
pub mod graphql;
pub mod http;
pub mod identity;
pub mod infra;
pub mod maintenance;
pub mod schema;
pub mod state;
pub mod telemetry;
pub mod text;
