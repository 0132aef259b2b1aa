//! The one integration-test binary: every module drives the server through its public interface.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod architecture;
mod auth;
mod caching;
mod cli;
mod document_limits;
mod fast_paths;
mod health;
mod helpers;
mod http;
mod identity;
mod input;
mod metrics;
mod notifications;
mod persisted;
mod protocol;
mod query_limits;
mod rate_limit;
mod response_cache;
mod schema;
mod shutdown;
mod sockets;
mod stores;
mod ws;
