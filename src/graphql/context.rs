//! Small helpers resolvers use to reach shared state and request facts without unwrapping.

use async_graphql::Context;

use crate::error::AppError;
use crate::features::auth::{ClientInfo, Viewer};
use crate::state::AppState;

/// The id of the HTTP request (or WebSocket connection) an operation belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

pub trait ContextExt {
    /// # Errors
    /// The schema was built without state (a programming error, reported as internal).
    fn state(&self) -> Result<&AppState, AppError>;

    fn request_id(&self) -> Option<&str>;

    /// The caller; `Anonymous` when the transport supplied none.
    fn viewer(&self) -> &Viewer;

    /// Where the request comes from.
    fn client(&self) -> ClientInfo;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> Result<&AppState, AppError> {
        self.data_opt::<AppState>()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("schema has no AppState")))
    }

    fn request_id(&self) -> Option<&str> {
        self.data_opt::<RequestId>().map(|id| id.0.as_str())
    }

    fn viewer(&self) -> &Viewer {
        static ANONYMOUS: Viewer = Viewer::Anonymous;
        self.data_opt::<Viewer>().unwrap_or(&ANONYMOUS)
    }

    fn client(&self) -> ClientInfo {
        self.data_opt::<ClientInfo>().cloned().unwrap_or_default()
    }
}
