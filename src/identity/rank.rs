//! Who may act on whom, and who may hand out what — one rule for every administrative change.
//!
//! - **Granting is bounded by holding.** Giving or taking a role, and creating a role or changing
//!   its permissions, requires the actor to hold every permission involved. A moderator cannot
//!   hand out `admin`, and a role manager cannot mint permissions they lack.
//! - **Acting on a user requires outranking them.** Banning, unbanning, deleting a user or
//!   changing their roles requires holding every permission the target holds and at least one
//!   more — or holding every permission in the catalogue (full authority), so admins can act on
//!   admins (the last-admin rule still applies). Peers cannot act on each other.
//! - The system itself (the command line) outranks everyone.
//!
//! Refusals are `FORBIDDEN` with a stable `extensions.reason`: `ROLE_NOT_GRANTABLE` or
//! `INSUFFICIENT_RANK`.

use std::collections::BTreeSet;

use super::actor::{Actor, Authority};
use super::permissions::Catalogue;
use crate::error::{AppError, AppResult};

/// Whether the actor holds every one of `permissions`.
pub fn holds_all<'a>(actor: &Actor, permissions: impl IntoIterator<Item = &'a str>) -> bool {
    match &actor.authority {
        Authority::System => true,
        Authority::Permissions(held) => permissions.into_iter().all(|p| held.contains(p)),
    }
}

/// Whether the actor holds every permission the application knows.
pub fn has_full_authority(actor: &Actor, catalogue: &Catalogue) -> bool {
    holds_all(actor, catalogue.all().iter().map(|p| p.as_str()))
}

/// Whether the actor may act on a user holding `target`.
pub fn outranks(actor: &Actor, target: &BTreeSet<String>, catalogue: &Catalogue) -> bool {
    match &actor.authority {
        Authority::System => true,
        Authority::Permissions(held) => {
            has_full_authority(actor, catalogue) || (held.is_superset(target) && held != target)
        }
    }
}

/// # Errors
/// `FORBIDDEN` (`ROLE_NOT_GRANTABLE`) unless the actor holds every permission of the role.
pub fn require_grantable<'a>(
    actor: &Actor,
    role: &str,
    permissions: impl IntoIterator<Item = &'a str>,
) -> AppResult<()> {
    if holds_all(actor, permissions) {
        return Ok(());
    }
    Err(AppError::Refused {
        reason: "ROLE_NOT_GRANTABLE",
        message: format!("you can only give or take roles whose permissions you hold ({role})"),
    })
}

/// # Errors
/// `FORBIDDEN` (`INSUFFICIENT_RANK`) unless the actor outranks the target.
pub fn require_outranks(
    actor: &Actor,
    target: &BTreeSet<String>,
    catalogue: &Catalogue,
) -> AppResult<()> {
    if outranks(actor, target, catalogue) {
        return Ok(());
    }
    Err(AppError::Refused {
        reason: "INSUFFICIENT_RANK",
        message: "you can only act on users whose permissions are a subset of yours".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::permissions::{ADMIN_READ, ADMIN_UPDATE, IDENTITY_PERMISSIONS, USERS_READ};
    use super::*;

    fn actor(permissions: &[&str]) -> Actor {
        Actor {
            authority: Authority::Permissions(
                permissions.iter().map(|p| (*p).to_owned()).collect(),
            ),
            ..Actor::default()
        }
    }

    fn set(permissions: &[&str]) -> BTreeSet<String> {
        permissions.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn only_a_strict_superset_or_full_authority_outranks() {
        let catalogue = Catalogue::new(IDENTITY_PERMISSIONS.iter().copied());
        let moderator = [
            USERS_READ.as_str(),
            ADMIN_READ.as_str(),
            ADMIN_UPDATE.as_str(),
        ];
        let admin: Vec<&str> = IDENTITY_PERMISSIONS.iter().map(|p| p.as_str()).collect();
        assert!(outranks(&actor(&moderator), &set(&[]), &catalogue));
        assert!(!outranks(&actor(&moderator), &set(&moderator), &catalogue));
        assert!(!outranks(&actor(&moderator), &set(&admin), &catalogue));
        assert!(outranks(&actor(&admin), &set(&admin), &catalogue));
        assert!(outranks(&Actor::system("cli"), &set(&admin), &catalogue));
    }

    #[test]
    fn granting_needs_every_permission_of_the_role() {
        let moderator = actor(&[ADMIN_READ.as_str(), ADMIN_UPDATE.as_str()]);
        assert!(require_grantable(&moderator, "helper", [ADMIN_READ.as_str()]).is_ok());
        assert!(require_grantable(&moderator, "admin", ["admin:read", "admin:delete"]).is_err());
    }
}
