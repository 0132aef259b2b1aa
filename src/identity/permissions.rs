//! The permission model: named capabilities, granted to users through roles.
//!
//! A permission is declared once, as a constant, by the module that owns it (identity owns those
//! about accounts and roles; each feature declares its own in its folder). Guards name the
//! constant, never a string, so a typo is a compile error. The catalogue — identity's permissions
//! plus every registered feature's — is mirrored into the database at start for role management.

use std::collections::BTreeSet;
use std::fmt;

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set,
};
use uuid::Uuid;

use super::tenancy::OrgPermission;
use crate::entities::{permissions, role_permissions, roles};
use crate::error::AppResult;

/// A capability: its stable name (`admin:read`), what it allows, and which built-in roles get it
/// when they are created.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    name: &'static str,
    description: &'static str,
    default_roles: &'static [&'static str],
}

impl Permission {
    /// A permission no built-in role gets by default (`admin` always gets every permission).
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            default_roles: &[],
        }
    }

    /// The built-in roles (besides `admin`) that get this permission when they are created.
    #[must_use]
    pub const fn granted_to(mut self, roles: &'static [&'static str]) -> Self {
        self.default_roles = roles;
        self
    }

    pub const fn as_str(self) -> &'static str {
        self.name
    }

    pub const fn description(self) -> &'static str {
        self.description
    }

    pub const fn default_roles(self) -> &'static [&'static str] {
        self.default_roles
    }
}

impl PartialEq for Permission {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Permission {}

impl PartialOrd for Permission {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Permission {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(other.name)
    }
}

impl std::hash::Hash for Permission {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

pub const ADMIN_ROLE: &str = "admin";
pub const MODERATOR_ROLE: &str = "moderator";
/// Assigned to every new account.
pub const USER_ROLE: &str = "user";

pub const USERS_READ: Permission =
    Permission::new("users:read", "See other users' public profiles").granted_to(&[MODERATOR_ROLE]);
pub const ADMIN_READ: Permission = Permission::new(
    "admin:read",
    "Read admin views: user lists, user details, system stats; a higher query cost ceiling",
)
.granted_to(&[MODERATOR_ROLE]);
pub const ADMIN_UPDATE: Permission = Permission::new(
    "admin:update",
    "Ban and unban users, give and take roles (only roles whose permissions one holds, only on \
     users one outranks)",
)
.granted_to(&[MODERATOR_ROLE]);
pub const ADMIN_DELETE: Permission = Permission::new(
    "admin:delete",
    "Delete users permanently (only users one outranks)",
);
pub const ROLES_MANAGE: Permission = Permission::new(
    "roles:manage",
    "Create, change and delete roles (only with permissions one holds)",
);
pub const RATE_LIMIT_BYPASS: Permission = Permission::new(
    "ratelimit:bypass",
    "Not subject to request rate limits or cost budgets (service accounts)",
);

/// The permissions identity itself declares: accounts, roles and the kernel's own policies.
pub const IDENTITY_PERMISSIONS: &[Permission] = &[
    USERS_READ,
    ADMIN_READ,
    ADMIN_UPDATE,
    ADMIN_DELETE,
    ROLES_MANAGE,
    RATE_LIMIT_BYPASS,
];

/// A built-in role: created when missing, never deletable.
pub struct SystemRole {
    pub name: &'static str,
    pub description: &'static str,
}

pub const SYSTEM_ROLES: [SystemRole; 3] = [
    SystemRole {
        name: ADMIN_ROLE,
        description: "Everything",
    },
    SystemRole {
        name: MODERATOR_ROLE,
        description: "Reads admin views and the audit log, bans users",
    },
    SystemRole {
        name: USER_ROLE,
        description: "Every signed-up account",
    },
];

/// Every permission the running application knows: identity's and each feature's, global and
/// organization-scoped.
#[derive(Debug, Clone, Default)]
pub struct Catalogue(Vec<Permission>, Vec<OrgPermission>);

impl Catalogue {
    /// # Panics
    /// Never at run time for a consistent registry; two declarations of one name are a
    /// programming error caught by the registry test.
    pub fn new(permissions: impl IntoIterator<Item = Permission>) -> Self {
        let mut all: Vec<Permission> = permissions.into_iter().collect();
        all.sort();
        all.dedup();
        Self(all, Vec::new())
    }

    /// The same catalogue with these organization permissions (see
    /// [`super::tenancy::OrgPermission`]).
    #[must_use]
    pub fn with_organization(
        mut self,
        permissions: impl IntoIterator<Item = OrgPermission>,
    ) -> Self {
        let mut all: Vec<OrgPermission> = permissions.into_iter().collect();
        all.sort_by_key(|p| p.as_str());
        all.dedup();
        self.1 = all;
        self
    }

    /// Every organization permission, by name.
    pub fn organization(&self) -> &[OrgPermission] {
        &self.1
    }

    pub fn parse_organization(&self, name: &str) -> Option<OrgPermission> {
        self.1.iter().copied().find(|p| p.as_str() == name)
    }

    pub fn all(&self) -> &[Permission] {
        &self.0
    }

    pub fn names(&self) -> BTreeSet<&'static str> {
        self.0.iter().map(|p| p.as_str()).collect()
    }

    pub fn parse(&self, name: &str) -> Option<Permission> {
        self.0.iter().copied().find(|p| p.as_str() == name)
    }
}

/// Mirrors the catalogue and the system roles into the database, in one transaction: missing
/// permissions are added, retired ones removed (with their grants), missing system roles created
/// with their default grants, and `admin` topped up to every permission.
///
/// # Errors
/// The database fails.
pub async fn sync_catalogue(db: &DatabaseConnection, catalogue: &Catalogue) -> AppResult<()> {
    let txn = crate::infra::db::begin(db).await?;
    let wanted: Vec<permissions::ActiveModel> = catalogue
        .all()
        .iter()
        .map(|p| permissions::ActiveModel {
            name: Set(p.as_str().to_owned()),
            description: Set(Some(p.description().to_owned())),
        })
        .collect();
    if !wanted.is_empty() {
        permissions::Entity::insert_many(wanted)
            .on_conflict(
                OnConflict::column(permissions::Column::Name)
                    .update_column(permissions::Column::Description)
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
    }
    permissions::Entity::delete_many()
        .filter(permissions::Column::Name.is_not_in(catalogue.names()))
        .exec(&txn)
        .await?;

    for system in &SYSTEM_ROLES {
        let role = match roles::Entity::find()
            .filter(roles::Column::Name.eq(system.name))
            .one(&txn)
            .await?
        {
            Some(role) => role,
            None => {
                let role = roles::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    name: Set(system.name.to_owned()),
                    description: Set(Some(system.description.to_owned())),
                    is_system: Set(true),
                    created_at: Set(Utc::now()),
                }
                .insert(&txn)
                .await?;
                let defaults: Vec<Permission> = catalogue
                    .all()
                    .iter()
                    .copied()
                    .filter(|p| p.default_roles().contains(&system.name))
                    .collect();
                grant(&txn, role.id, &defaults).await?;
                role
            }
        };
        if system.name == ADMIN_ROLE {
            grant(&txn, role.id, catalogue.all()).await?;
        }
    }
    txn.commit().await?;
    Ok(())
}

/// Grants permissions to a role (existing grants are kept).
///
/// # Errors
/// The database fails.
pub async fn grant(
    db: &impl ConnectionTrait,
    role_id: Uuid,
    grants: &[Permission],
) -> AppResult<()> {
    if grants.is_empty() {
        return Ok(());
    }
    let rows = grants.iter().map(|p| role_permissions::ActiveModel {
        role_id: Set(role_id),
        permission: Set(p.as_str().to_owned()),
    });
    role_permissions::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([
            role_permissions::Column::RoleId,
            role_permissions::Column::Permission,
        ])
        .exec(db)
        .await?;
    Ok(())
}
