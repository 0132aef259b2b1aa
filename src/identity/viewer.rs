//! Who is calling, as every layer sees it.
//!
//! The authentication step turns a request's credentials into an [`Authentication`] once; the
//! transport maps it to a [`Viewer`] with [`Caller::viewer`] (the same rule for HTTP and
//! WebSocket), and resolvers ask the viewer for what they need.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::permissions::Permission;
use crate::error::{AppError, AppResult};

/// An authenticated user and what they may do, as of this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    /// The session (refresh-token family) the access token belongs to.
    pub session_id: Uuid,
    pub roles: BTreeSet<String>,
    pub permissions: BTreeSet<String>,
    /// When the access token stops working (a WebSocket closes then).
    pub expires_at: DateTime<Utc>,
}

impl AuthUser {
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(permission.as_str())
    }
}

/// Who is calling. A present but invalid credential never becomes `Anonymous`: see
/// [`Caller::viewer`].
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

    /// Whether the caller holds `permission` (anonymous callers hold none).
    pub fn has(&self, permission: Permission) -> bool {
        matches!(self, Self::User(user) if user.has(permission))
    }

    /// # Errors
    /// `UNAUTHENTICATED` for anonymous callers, `FORBIDDEN` without the permission.
    pub fn require(&self, permission: Permission) -> AppResult<&AuthUser> {
        let user = self.user()?;
        if user.has(permission) {
            Ok(user)
        } else {
            Err(AppError::Forbidden(format!(
                "requires the {permission} permission"
            )))
        }
    }
}

/// What checking a request's credentials concluded.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No credentials.
    Anonymous,
    User(Arc<AuthUser>),
    /// Credentials were present but invalid, expired or revoked.
    Invalid(String),
    /// The credentials could not be checked: the stores that decide are unreachable.
    Unavailable,
}

/// Where a request comes from, for sessions, audit and throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What the authentication step attaches to every request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub authentication: Authentication,
    pub client: ClientInfo,
}

impl Caller {
    /// The viewer an operation runs as. A bad credential is an error, never anonymity — except
    /// when the operation only selects `public` fields (signing in again, refreshing a session),
    /// which then run anonymously.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for invalid credentials, `SERVICE_UNAVAILABLE` when they cannot be
    /// checked.
    pub fn viewer(&self, public: bool) -> AppResult<Viewer> {
        match &self.authentication {
            Authentication::Anonymous => Ok(Viewer::Anonymous),
            Authentication::User(user) => Ok(Viewer::User(user.clone())),
            Authentication::Invalid(_) | Authentication::Unavailable if public => {
                Ok(Viewer::Anonymous)
            }
            Authentication::Invalid(message) => Err(AppError::InvalidToken(message.clone())),
            Authentication::Unavailable => Err(AppError::Unavailable(anyhow::anyhow!(
                "the credential stores are unreachable"
            ))),
        }
    }

    pub fn user(&self) -> Option<&AuthUser> {
        match &self.authentication {
            Authentication::User(user) => Some(user),
            _ => None,
        }
    }
}
