//! Small helpers resolvers use to reach shared state and request facts without unwrapping.

use async_graphql::Context;

use crate::error::AppError;
use crate::state::AppState;

/// The id of the HTTP request (or WebSocket connection) an operation belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

pub trait ContextExt {
    /// # Errors
    /// The schema was built without state (a programming error, reported as internal).
    fn state(&self) -> Result<&AppState, AppError>;

    fn request_id(&self) -> Option<&str>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> Result<&AppState, AppError> {
        self.data_opt::<AppState>()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("schema has no AppState")))
    }

    fn request_id(&self) -> Option<&str> {
        self.data_opt::<RequestId>().map(|id| id.0.as_str())
    }
}
