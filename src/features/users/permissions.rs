//! The closed catalogue of permissions. Guards name these variants, never strings, so a typo is a
//! compile error; the database mirrors the catalogue (synced at start) for role management.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    UsersRead,
    AdminRead,
    AdminUpdate,
    AdminDelete,
    RolesManage,
    AuditRead,
    NotificationsBroadcast,
    LangfuseManage,
    RateLimitBypass,
}

impl Permission {
    pub const ALL: [Self; 9] = [
        Self::UsersRead,
        Self::AdminRead,
        Self::AdminUpdate,
        Self::AdminDelete,
        Self::RolesManage,
        Self::AuditRead,
        Self::NotificationsBroadcast,
        Self::LangfuseManage,
        Self::RateLimitBypass,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UsersRead => "users:read",
            Self::AdminRead => "admin:read",
            Self::AdminUpdate => "admin:update",
            Self::AdminDelete => "admin:delete",
            Self::RolesManage => "roles:manage",
            Self::AuditRead => "audit:read",
            Self::NotificationsBroadcast => "notifications:broadcast",
            Self::LangfuseManage => "langfuse:manage",
            Self::RateLimitBypass => "ratelimit:bypass",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Self::UsersRead => "See other users' public profiles",
            Self::AdminRead => "Read admin views: user lists, user details, system stats",
            Self::AdminUpdate => "Ban and unban users, change their roles",
            Self::AdminDelete => "Delete users permanently",
            Self::RolesManage => "Create, change and delete roles",
            Self::AuditRead => "Read the audit log",
            Self::NotificationsBroadcast => "Send notifications to many users",
            Self::LangfuseManage => "Manage an organization's Langfuse settings",
            Self::RateLimitBypass => "Not subject to request rate limits (service accounts)",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A built-in role: created when missing, never deletable.
pub struct SystemRole {
    pub name: &'static str,
    pub description: &'static str,
    /// Granted when the role is created; `admin` is also topped up to every permission at start.
    pub permissions: &'static [Permission],
}

pub const ADMIN_ROLE: &str = "admin";
pub const MODERATOR_ROLE: &str = "moderator";
/// Assigned to every new account.
pub const USER_ROLE: &str = "user";

pub const SYSTEM_ROLES: [SystemRole; 3] = [
    SystemRole {
        name: ADMIN_ROLE,
        description: "Everything",
        permissions: &Permission::ALL,
    },
    SystemRole {
        name: MODERATOR_ROLE,
        description: "Reads admin views and the audit log, bans users",
        permissions: &[
            Permission::UsersRead,
            Permission::AdminRead,
            Permission::AdminUpdate,
            Permission::AuditRead,
        ],
    },
    SystemRole {
        name: USER_ROLE,
        description: "Every signed-up account",
        permissions: &[],
    },
];
