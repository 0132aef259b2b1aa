//! Feature slices: one folder per feature with `service.rs` (logic), `resolvers.rs` (thin GraphQL
//! roots) and `types.rs` (GraphQL input/output types).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod meta;
pub mod users;
