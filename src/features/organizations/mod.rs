//! Organizations: teams with members in organization roles, invitations by mail, environments,
//! and the organization permissions other features scope their data by (docs/organizations.md).
//!
//! Every organization-scoped field starts with the kernel's tenant guard
//! (`crate::graphql::tenant`), which answers `NOT_FOUND` to anyone outside the organization.

pub mod entity;
pub mod invitations;
mod mail;
mod resolvers;
pub mod service;
mod types;

pub use resolvers::{OrganizationsMutation, OrganizationsQuery};

use crate::feature::{Feature, Job};
use crate::identity::{OrgPermission, OrgRole};

const ALL_ROLES: &[OrgRole] = &[
    OrgRole::Owner,
    OrgRole::Admin,
    OrgRole::Member,
    OrgRole::Viewer,
];
const MANAGERS: &[OrgRole] = &[OrgRole::Owner, OrgRole::Admin];

pub const ORG_READ: OrgPermission = OrgPermission::new(
    "org:read",
    "See the organization, its environments and the caller's own role",
    ALL_ROLES,
);
pub const ORG_MANAGE: OrgPermission =
    OrgPermission::new("org:manage", "Rename the organization", MANAGERS);
pub const ORG_OWN: OrgPermission = OrgPermission::new(
    "org:own",
    "Hand the organization over to another member, or delete it",
    &[OrgRole::Owner],
);
pub const MEMBERS_READ: OrgPermission =
    OrgPermission::new("members:read", "List the organization's members", ALL_ROLES);
pub const MEMBERS_MANAGE: OrgPermission = OrgPermission::new(
    "members:manage",
    "Invite members, revoke invitations, change roles (up to one's own) and remove members \
     (below one's own role; owners may remove anyone but the last owner)",
    MANAGERS,
);

pub const FEATURE: Feature = Feature {
    org_permissions: &[ORG_READ, ORG_MANAGE, ORG_OWN, MEMBERS_READ, MEMBERS_MANAGE],
    jobs: &[Job {
        kind: mail::INVITATION_MAIL,
        handler: mail::handler,
    }],
    ..Feature::new("organizations")
};
