//! Organizations as authorization sees them: organization roles, the organization permissions
//! features declare for them, environments, and the tenant check every organization-scoped field
//! runs ([`authorize`], reached from resolvers through `crate::graphql::tenant`).
//!
//! The rule: a caller that is not a member of an organization (or an API key of another
//! organization) learns nothing about it — the answer is `NOT_FOUND`, exactly as for a slug
//! that does not exist. `FORBIDDEN` is only ever said to members, about a permission their
//! role (or the key's scopes) lacks.

use std::collections::BTreeSet;
use std::fmt;

use sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::viewer::Viewer;
use crate::entities::{organization_members, organizations};
use crate::error::{AppError, AppResult};

/// A member's role in an organization. Owners can do everything, including deleting the
/// organization and handing it over; admins manage members and keys; members use what the
/// organization configured; viewers only read.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[graphql(name = "OrganizationRole")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrgRole {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl OrgRole {
    pub const ALL: [Self; 4] = [Self::Owner, Self::Admin, Self::Member, Self::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Admin => "ADMIN",
            Self::Member => "MEMBER",
            Self::Viewer => "VIEWER",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Higher outranks lower: a member may only give or take roles up to their own.
    pub fn rank(self) -> u8 {
        match self {
            Self::Owner => 3,
            Self::Admin => 2,
            Self::Member => 1,
            Self::Viewer => 0,
        }
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An organization's environments. Every organization has all of them from its creation; keys
/// and per-environment settings name one. A closed set: add a variant (and its key label) to
/// extend it — stored as text, so no migration.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[graphql(name = "OrganizationEnvironment")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    Development,
    Staging,
    Production,
}

impl Stage {
    pub const ALL: [Self; 3] = [Self::Development, Self::Staging, Self::Production];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "DEVELOPMENT",
            Self::Staging => "STAGING",
            Self::Production => "PRODUCTION",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.as_str() == text)
    }

    /// How the environment appears in an API key (`mpk_prod_…`).
    pub fn key_label(self) -> &'static str {
        match self {
            Self::Development => "dev",
            Self::Staging => "staging",
            Self::Production => "prod",
        }
    }

    pub fn from_key_label(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|stage| stage.key_label() == label)
    }
}

/// A capability inside an organization, granted by organization role (and to API keys by
/// scope). Declared by the feature that owns it (`Feature::org_permissions`), like
/// [`super::Permission`]; guards name the constant.
#[derive(Debug, Clone, Copy)]
pub struct OrgPermission {
    name: &'static str,
    description: &'static str,
    roles: &'static [OrgRole],
}

impl OrgPermission {
    /// A permission held by the given roles (list every role that gets it).
    pub const fn new(
        name: &'static str,
        description: &'static str,
        roles: &'static [OrgRole],
    ) -> Self {
        Self {
            name,
            description,
            roles,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.name
    }

    pub const fn description(self) -> &'static str {
        self.description
    }

    pub const fn roles(self) -> &'static [OrgRole] {
        self.roles
    }

    pub fn granted_to(self, role: OrgRole) -> bool {
        self.roles.contains(&role)
    }
}

impl PartialEq for OrgPermission {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for OrgPermission {}

impl fmt::Display for OrgPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// How the caller reaches an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Member {
        user_id: Uuid,
        role: OrgRole,
    },
    ApiKey {
        key_id: Uuid,
        scopes: BTreeSet<String>,
    },
}

/// An organization the caller may act in, and how: what every organization-scoped resolver
/// starts from.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub organization: organizations::Model,
    pub access: Access,
}

impl Tenant {
    pub fn id(&self) -> Uuid {
        self.organization.id
    }

    /// The caller's role (`None` for an API key).
    pub fn role(&self) -> Option<OrgRole> {
        match &self.access {
            Access::Member { role, .. } => Some(*role),
            Access::ApiKey { .. } => None,
        }
    }

    pub fn has(&self, permission: OrgPermission) -> bool {
        match &self.access {
            Access::Member { role, .. } => permission.granted_to(*role),
            Access::ApiKey { scopes, .. } => scopes.contains(permission.as_str()),
        }
    }

    /// # Errors
    /// `FORBIDDEN` without the permission (the caller is a member: they may know that much).
    pub fn require(&self, permission: OrgPermission) -> AppResult<()> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "requires the organization permission {permission}"
            )))
        }
    }

    /// The member acting, for changes only a person may make (API keys are refused).
    ///
    /// # Errors
    /// `FORBIDDEN` for API keys.
    pub fn member(&self) -> AppResult<(Uuid, OrgRole)> {
        match &self.access {
            Access::Member { user_id, role } => Ok((*user_id, *role)),
            Access::ApiKey { .. } => Err(AppError::Forbidden(
                "API keys cannot do this; sign in as a member".into(),
            )),
        }
    }
}

/// What a caller outside an organization is told about it, whether or not it exists.
pub fn not_found() -> AppError {
    AppError::NotFound("no such organization".into())
}

/// The longest slug there is; longer input cannot name an organization.
pub const MAX_SLUG: usize = 40;

/// Resolves `slug` for `viewer` and checks `permission`: `NOT_FOUND` unless the viewer is a
/// member (or an API key) of that organization, then `FORBIDDEN` without the permission.
///
/// # Errors
/// `UNAUTHENTICATED` for anonymous callers; `NOT_FOUND`; `FORBIDDEN`; the database fails.
pub async fn authorize(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    slug: &str,
    permission: OrgPermission,
) -> AppResult<Tenant> {
    let slug = slug.trim().to_ascii_lowercase();
    let tenant = match viewer {
        Viewer::Anonymous => return Err(AppError::Unauthenticated),
        _ if slug.is_empty() || slug.len() > MAX_SLUG => return Err(not_found()),
        Viewer::ApiKey(key) => {
            if key.organization_slug != slug {
                return Err(not_found());
            }
            let organization = organizations::Entity::find_by_id(key.organization_id)
                .one(db)
                .await?
                .ok_or_else(not_found)?;
            Tenant {
                organization,
                access: Access::ApiKey {
                    key_id: key.id,
                    scopes: key.scopes.clone(),
                },
            }
        }
        Viewer::User(user) => {
            let organization = organizations::Entity::find()
                .filter(organizations::Column::Slug.eq(slug))
                .one(db)
                .await?
                .ok_or_else(not_found)?;
            let role = organization_members::Entity::find_by_id((organization.id, user.id))
                .one(db)
                .await?
                .and_then(|m| OrgRole::parse(&m.role))
                .ok_or_else(not_found)?;
            Tenant {
                organization,
                access: Access::Member {
                    user_id: user.id,
                    role,
                },
            }
        }
    };
    tenant.require(permission)?;
    Ok(tenant)
}
