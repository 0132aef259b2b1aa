//! The actor of a change: who did it, from where, and with what authority. Audit entries record
//! the first two; the rank rules ([`super::rank`]) check the third.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::viewer::{ClientInfo, Viewer};

/// What an actor may do to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// An operator at the command line or the system itself: outranks everyone.
    System,
    /// A signed-in user (or nobody): the permissions they hold.
    Permissions(BTreeSet<String>),
}

impl Default for Authority {
    fn default() -> Self {
        Self::Permissions(BTreeSet::new())
    }
}

/// An API key as the author of a change: named in the audit entry, never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyActor {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
}

/// Who acts, from where, and with what authority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub id: Option<Uuid>,
    pub email: Option<String>,
    /// The API key acting (then `id` and `email` are empty).
    pub api_key: Option<ApiKeyActor>,
    /// The organization the change belongs to, if any: see [`Actor::within`].
    pub organization: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub authority: Authority,
}

impl Actor {
    pub fn new(viewer: &Viewer, request_id: Option<&str>, client: &ClientInfo) -> Self {
        let user = viewer.user().ok();
        Self {
            id: user.map(|u| u.id),
            email: user.map(|u| u.email.clone()),
            api_key: viewer.api_key().map(|key| ApiKeyActor {
                id: key.id,
                name: key.name.clone(),
                prefix: key.prefix.clone(),
            }),
            organization: None,
            request_id: request_id.map(str::to_owned),
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client
                .user_agent
                .as_deref()
                .map(|ua| ua.chars().take(255).collect()),
            authority: Authority::Permissions(
                user.map(|u| u.permissions.clone()).unwrap_or_default(),
            ),
        }
    }

    /// The operator running a command (`source` says which, e.g. `cli (alice@host)`).
    pub fn system(source: &str) -> Self {
        Self {
            user_agent: Some(source.chars().take(255).collect()),
            authority: Authority::System,
            ..Self::default()
        }
    }

    /// The same actor, for a change inside `organization` (recorded with the entry).
    #[must_use]
    pub fn within(&self, organization: Uuid) -> Self {
        Self {
            organization: Some(organization),
            ..self.clone()
        }
    }

    /// The same request, acting as (or on behalf of) a given account.
    #[must_use]
    pub fn as_user(&self, id: Uuid, email: &str) -> Self {
        Self {
            id: Some(id),
            email: Some(email.to_owned()),
            ..self.clone()
        }
    }
}
