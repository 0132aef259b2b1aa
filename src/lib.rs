//! multipult: a production-ready GraphQL API backend template.

pub mod app;
pub mod cli;
pub mod config;
pub mod entities;
pub mod error;
pub mod features;
pub mod graphql;
pub mod http;
pub mod infra;
pub mod state;
pub mod telemetry;
