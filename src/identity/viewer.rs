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

use super::api_keys::ApiKeyCaller;
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
    /// The user's own account and roles, loaded (or found cached) with the rest: the viewer's
    /// own data is answered from here without the database (`me { … roles { … } }`).
    pub profile: Profile,
}

/// The viewer's account row as authentication knows it — never the password hash — and the
/// details of their roles. Cached with the user's state in the shared store and dropped with it
/// by every change (`user_changed`), so it is never staler than the roles and status beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub is_verified: bool,
    pub banned_at: Option<DateTime<Utc>>,
    pub ban_reason: Option<String>,
    pub banned_until: Option<DateTime<Utc>>,
    pub session_epoch: i64,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In the order they were given.
    pub roles: Vec<RoleSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleSummary {
    pub name: String,
    pub description: Option<String>,
}

impl Profile {
    pub fn new(
        user: &crate::entities::users::Model,
        roles: &[crate::entities::roles::Model],
    ) -> Self {
        Self {
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            is_verified: user.is_verified,
            banned_at: user.banned_at,
            ban_reason: user.ban_reason.clone(),
            banned_until: user.banned_until,
            session_epoch: user.session_epoch,
            last_login_at: user.last_login_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
            roles: roles
                .iter()
                .map(|r| RoleSummary {
                    name: r.name.clone(),
                    description: r.description.clone(),
                })
                .collect(),
        }
    }
}

impl AuthUser {
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(permission.as_str())
    }

    /// The viewer's account row, rebuilt from what authentication loaded (the password hash is
    /// never part of it: `None`). Usable accounts only reach here, so it is active.
    pub fn account(&self) -> crate::entities::users::Model {
        let p = &self.profile;
        crate::entities::users::Model {
            id: self.id,
            email: self.email.clone(),
            username: p.username.clone(),
            display_name: p.display_name.clone(),
            password_hash: None,
            is_active: true,
            is_verified: p.is_verified,
            banned_at: p.banned_at,
            ban_reason: p.ban_reason.clone(),
            banned_until: p.banned_until,
            session_epoch: p.session_epoch,
            last_login_at: p.last_login_at,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// Who is calling. A present but invalid credential never becomes `Anonymous`: see
/// [`Caller::viewer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    User(Arc<AuthUser>),
    /// A machine client: its permissions are its organization scopes (global permissions:
    /// none), and fields that need a person answer `FORBIDDEN`.
    ApiKey(Arc<ApiKeyCaller>),
}

impl Viewer {
    /// # Errors
    /// `UNAUTHENTICATED` for anonymous callers, `FORBIDDEN` for API keys.
    pub fn user(&self) -> AppResult<&AuthUser> {
        match self {
            Self::User(user) => Ok(user),
            Self::Anonymous => Err(AppError::Unauthenticated),
            Self::ApiKey(_) => Err(AppError::Forbidden(
                "API keys cannot use this field; it needs a signed-in user".into(),
            )),
        }
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::User(user) => Some(user.id),
            Self::Anonymous | Self::ApiKey(_) => None,
        }
    }

    pub fn api_key(&self) -> Option<&ApiKeyCaller> {
        match self {
            Self::ApiKey(key) => Some(key),
            _ => None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Self::Anonymous)
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
    ApiKey(Arc<ApiKeyCaller>),
    /// Credentials were present but invalid, expired or revoked.
    Invalid(String),
    /// The credentials could not be checked: the stores that decide are unreachable.
    Unavailable,
}

/// Where a request comes from, for sessions, audit and throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    /// What per-address limits count the client as ([`ClientInfo::network_of`]).
    pub network: Option<ipnet::IpNet>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The network per-address limits (rate limits, cost budgets, failed logins) count `ip` as:
    /// an IPv4 address alone (an IPv4-mapped IPv6 address as IPv4), an IPv6 address as its
    /// `ipv6_prefix`-bit network. One host usually holds a whole IPv6 /64 and may send from
    /// any address in it: counted address by address, it would step around every limit (and
    /// fill the store with keys).
    pub fn network_of(ip: IpAddr, ipv6_prefix: u8) -> ipnet::IpNet {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ipnet::IpNet::V4(ipnet::Ipv4Net::from(v4)),
            IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
                .map_or_else(|_| ipnet::Ipv6Net::from(v6), |net| net.trunc())
                .into(),
        }
    }

    /// The client in a store key: `192.0.2.7`, `2001:db8:1:2::/64`, or `unknown`.
    pub fn address_key(&self) -> AddressKey {
        AddressKey(self.network)
    }
}

/// [`ClientInfo::address_key`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressKey(Option<ipnet::IpNet>);

impl AddressKey {
    /// `prefix` followed by the key, as `format!("{prefix}{key}")` writes it; an IPv4 address
    /// (every anonymous request's rate-limit key) without the formatting machinery.
    pub fn prefixed(self, prefix: &str) -> String {
        let Some(ipnet::IpNet::V4(net)) = self.0.filter(|net| net.prefix_len() == 32) else {
            return format!("{prefix}{self}");
        };
        let mut key = String::with_capacity(prefix.len() + 15);
        key.push_str(prefix);
        let mut digits = itoa::Buffer::new();
        for (index, octet) in net.addr().octets().into_iter().enumerate() {
            if index > 0 {
                key.push('.');
            }
            key.push_str(digits.format(octet));
        }
        key
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ipnet::IpNet::V4(net)) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            Some(net) => write!(f, "{net}"),
            None => f.write_str("unknown"),
        }
    }
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
            Authentication::ApiKey(key) => Ok(Viewer::ApiKey(key.clone())),
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

    /// When the caller's credential stops working (an access token's expiry, an API key's end).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match &self.authentication {
            Authentication::User(user) => Some(user.expires_at),
            Authentication::ApiKey(key) => key.valid_until,
            _ => None,
        }
    }

    /// The id sockets watch for changes: the user's, or the API key's.
    pub fn principal_id(&self) -> Option<Uuid> {
        match &self.authentication {
            Authentication::User(user) => Some(user.id),
            Authentication::ApiKey(key) => Some(key.id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientInfo;

    fn key(ip: &str, prefix: u8) -> String {
        let ip = ip.parse().unwrap();
        ClientInfo {
            ip: Some(ip),
            network: Some(ClientInfo::network_of(ip, prefix)),
            user_agent: None,
        }
        .address_key()
        .to_string()
    }

    #[test]
    fn per_address_limits_count_ipv4_addresses_and_ipv6_networks() {
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:abcd::9", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:abcd::9", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:2:abcd::9", 128), "2001:db8:1:2:abcd::9/128");
        assert_eq!(ClientInfo::default().address_key().to_string(), "unknown");
    }

    #[test]
    fn a_prefixed_key_is_the_prefix_and_the_displayed_key() {
        for (ip, prefix) in [
            ("0.0.0.0", 64),
            ("192.0.2.7", 64),
            ("255.255.255.255", 64),
            ("10.200.3.45", 64),
            ("::ffff:192.0.2.7", 64),
            ("2001:db8:1:2:abcd::9", 64),
        ] {
            let ip = ip.parse().unwrap();
            let client = ClientInfo {
                ip: Some(ip),
                network: Some(ClientInfo::network_of(ip, prefix)),
                user_agent: None,
            };
            let key = client.address_key();
            assert_eq!(key.prefixed("ip:"), format!("ip:{key}"));
        }
        let unknown = ClientInfo::default().address_key();
        assert_eq!(unknown.prefixed("ip:"), "ip:unknown");
    }
}
