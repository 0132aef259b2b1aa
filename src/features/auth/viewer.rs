//! The caller of a request, as resolved from its credentials.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::features::users::Permission;

/// An authenticated user and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    /// The session (refresh-token family) the access token belongs to.
    pub session_id: Uuid,
    pub roles: BTreeSet<String>,
    pub permissions: BTreeSet<String>,
}

/// Who is calling. A present but invalid credential never becomes `Anonymous`: see
/// [`Authentication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    User(Arc<AuthUser>),
}

impl Viewer {
    /// # Errors
    /// `UNAUTHENTICATED` for anonymous callers.
    pub fn user(&self) -> AppResult<&AuthUser> {
        match self {
            Self::User(user) => Ok(user),
            Self::Anonymous => Err(AppError::Unauthenticated),
        }
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::User(user) => Some(user.id),
            Self::Anonymous => None,
        }
    }

    /// # Errors
    /// `UNAUTHENTICATED` for anonymous callers, `FORBIDDEN` without the permission.
    pub fn require(&self, permission: Permission) -> AppResult<&AuthUser> {
        let user = self.user()?;
        if user.permissions.contains(permission.as_str()) {
            Ok(user)
        } else {
            Err(AppError::Forbidden(format!(
                "requires the {permission} permission"
            )))
        }
    }
}

/// The outcome of checking a request's credentials, decided once per request by the HTTP layer.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No credentials.
    Anonymous,
    User(Arc<AuthUser>),
    /// Credentials were present but invalid, expired or revoked.
    Invalid(String),
}

/// Where a request comes from, for sessions, audit and throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What the authentication layer attaches to every request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub authentication: Authentication,
    pub client: ClientInfo,
}
