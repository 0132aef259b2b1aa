//! Small helpers resolvers use to reach shared state and request facts without unwrapping; each
//! returns a GraphQL result with a stable code, so a resolver reads `let user = ctx.user()?;`.

use async_graphql::{Context, ErrorExtensions as _};

use std::sync::Arc;

use crate::error::AppError;
use crate::graphql::RequestPhase;
use crate::identity::{Actor, AuthUser, ClientInfo, Permission, Viewer};
use crate::state::AppState;
use crate::telemetry::RequestId;

/// What one operation's resolvers and extensions may ask about it, attached to its request as one
/// piece of request data (one allocation and one lookup, not one of each per fact).
pub struct OperationData {
    pub viewer: Viewer,
    pub client: ClientInfo,
    pub request_id: RequestId,
    /// Its cost, its budget and its document's cache policy.
    pub phase: Arc<RequestPhase>,
    /// The entity tags the response shows, collected while it resolves.
    pub tags: Arc<CacheTags>,
}

impl OperationData {
    /// What `request` carries, read before it executes (where no resolver context exists yet).
    pub fn of(request: &async_graphql::Request) -> Option<&Self> {
        request
            .data
            .get(&std::any::TypeId::of::<Self>())
            .and_then(|data| data.downcast_ref::<Self>())
    }
}

pub trait ContextExt {
    /// # Errors
    /// The schema was built without state (a programming error, reported as internal).
    fn state(&self) -> async_graphql::Result<&AppState>;

    fn request_id(&self) -> Option<&str>;

    /// The caller; `Anonymous` when the transport supplied none.
    fn viewer(&self) -> &Viewer;

    /// The signed-in caller.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for anonymous callers.
    fn user(&self) -> async_graphql::Result<&AuthUser>;

    /// The signed-in caller holding `permission`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED`, or `FORBIDDEN` without the permission.
    fn require(&self, permission: Permission) -> async_graphql::Result<&AuthUser>;

    /// Where the request comes from.
    fn client(&self) -> ClientInfo;

    /// The caller as the actor of a change (for audit entries and rank checks).
    fn actor(&self) -> Actor;

    /// Tags the response with an entity it shows (`("User", Some(id))`) or a list it shows
    /// (`("User", None)`): a cached copy of the response is dropped when that entity — or, for a
    /// list, any entity of the kind — changes (`crate::infra::tags`, `docs/caching.md`).
    fn cache_tag(&self, kind: &str, id: Option<&dyn std::fmt::Display>);
}

impl ContextExt for Context<'_> {
    fn state(&self) -> async_graphql::Result<&AppState> {
        self.data_opt::<AppState>()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("schema has no AppState")).extend())
    }

    fn request_id(&self) -> Option<&str> {
        self.data_opt::<OperationData>()
            .map(|operation| operation.request_id.as_str())
    }

    fn viewer(&self) -> &Viewer {
        static ANONYMOUS: Viewer = Viewer::Anonymous;
        self.data_opt::<OperationData>()
            .map_or(&ANONYMOUS, |operation| &operation.viewer)
    }

    fn user(&self) -> async_graphql::Result<&AuthUser> {
        self.viewer().user().map_err(|e| e.extend())
    }

    fn require(&self, permission: Permission) -> async_graphql::Result<&AuthUser> {
        self.viewer().require(permission).map_err(|e| e.extend())
    }

    fn client(&self) -> ClientInfo {
        self.data_opt::<OperationData>()
            .map(|operation| operation.client.clone())
            .unwrap_or_default()
    }

    fn actor(&self) -> Actor {
        Actor::new(self.viewer(), self.request_id(), &self.client())
    }

    fn cache_tag(&self, kind: &str, id: Option<&dyn std::fmt::Display>) {
        if let Some(tags) = self.data_opt::<OperationData>().map(|o| &o.tags) {
            let mut tag = match id {
                Some(id) => crate::infra::tags::entity(kind, id),
                None => kind.to_owned(),
            };
            // Stored in a space-separated header line: no white space in a tag.
            if tag.contains(char::is_whitespace) {
                tag = tag.split_whitespace().collect::<Vec<_>>().join("_");
            }
            tags.add(tag);
        }
    }
}

/// The entity tags an operation's response carries, collected while it resolves.
#[derive(Debug, Default)]
pub struct CacheTags(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl CacheTags {
    pub fn add(&self, tag: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tag);
    }

    pub fn collected(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}
