//! Creating organizations and managing their members (invitations: [`super::invitations`]).
//! Every change runs in one
//! transaction with its audit entry (which names the organization); the rules on roles are here,
//! not in the resolvers:
//!
//! - Owners are made by an owner (`updateMemberRole` to `OWNER`, or `transferOwnership`); nobody
//!   is invited as owner.
//! - A manager gives roles up to their own, and changes or removes only members below them;
//!   owners may change or remove anyone.
//! - The last owner can neither leave, nor be demoted or removed: hand over first, or delete.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::entity::invitations;
use crate::entities::{api_keys, organization_members, organizations, users};
use crate::error::{AppError, AppResult, FieldErrors, conflict_on_unique};
use crate::features::audit;
use crate::identity::{Actor, OrgRole, Tenant, accounts, api_keys as keys};
use crate::state::AppState;

/// At most this many organizations one user owns.
pub const MAX_OWNED: u64 = 20;
/// At most this many members in one page.
pub const MAX_PAGE: u64 = 100;

/// Slugs that would read as something else in URLs or support conversations.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "app",
    "auth",
    "billing",
    "dashboard",
    "docs",
    "graphql",
    "health",
    "help",
    "login",
    "logout",
    "me",
    "metrics",
    "multipult",
    "new",
    "null",
    "oauth",
    "organization",
    "organizations",
    "root",
    "settings",
    "signup",
    "static",
    "support",
    "system",
    "undefined",
    "www",
];

/// A slug as stored: 3–40 of a-z, 0-9 and single inner hyphens, not reserved.
fn check_slug(slug: &str, errors: &mut FieldErrors) {
    let shape = (3..=40).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--");
    if !shape {
        errors.add(
            "slug",
            "must be 3 to 40 characters of a-z, 0-9 and single hyphens inside",
        );
    } else if RESERVED.contains(&slug) {
        errors.add("slug", "is reserved; choose another");
    }
}

const NAME: crate::text::Rules = crate::text::Rules::line(100);

/// # Errors
/// `BAD_USER_INPUT` (`name`, `slug`), `CONFLICT` for a taken slug or too many owned
/// organizations; the database fails.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    user_id: Uuid,
    name: &str,
    slug: &str,
) -> AppResult<organizations::Model> {
    let mut errors = FieldErrors::default();
    let name = errors.text("name", name, NAME);
    let slug = slug.trim().to_ascii_lowercase();
    check_slug(&slug, &mut errors);
    errors.into_result()?;
    let name = name.unwrap_or_default();

    let txn = crate::infra::db::begin(&state.db).await?;
    let owned = organization_members::Entity::find()
        .filter(organization_members::Column::UserId.eq(user_id))
        .filter(organization_members::Column::Role.eq(OrgRole::Owner.as_str()))
        .count(&txn)
        .await?;
    if owned >= MAX_OWNED {
        return Err(AppError::Conflict(format!(
            "you own {MAX_OWNED} organizations already"
        )));
    }
    let now = Utc::now();
    let organization = organizations::ActiveModel {
        id: Set(Uuid::now_v7()),
        slug: Set(slug),
        name: Set(name),
        created_by: Set(Some(user_id)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(conflict_on_unique("an organization with this slug exists"))?;
    organization_members::ActiveModel {
        organization_id: Set(organization.id),
        user_id: Set(user_id),
        role: Set(OrgRole::Owner.as_str().to_owned()),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::service::record(
        &txn,
        &actor.within(organization.id),
        "organization.create",
        Some(("organization", organization.id.to_string())),
        json!({ "slug": organization.slug, "name": organization.name }),
    )
    .await?;
    txn.commit().await?;
    Ok(organization)
}

/// # Errors
/// `BAD_USER_INPUT` (`name`); the database fails.
pub async fn rename(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    name: &str,
) -> AppResult<organizations::Model> {
    let mut errors = FieldErrors::default();
    let name = errors.text("name", name, NAME);
    errors.into_result()?;
    let name = name.unwrap_or_default();
    let txn = crate::infra::db::begin(&state.db).await?;
    let mut row: organizations::ActiveModel = tenant.organization.clone().into();
    row.name = Set(name.clone());
    row.updated_at = Set(Utc::now());
    let updated = row.update(&txn).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "organization.update",
        Some(("organization", tenant.id().to_string())),
        json!({ "before": { "name": tenant.organization.name }, "after": { "name": name } }),
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

/// The organizations `user_id` belongs to, with their role, by name.
///
/// # Errors
/// The database fails.
pub async fn mine(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<(organizations::Model, OrgRole)>> {
    let memberships = organization_members::Entity::find()
        .filter(organization_members::Column::UserId.eq(user_id))
        .all(db)
        .await?;
    let ids: Vec<Uuid> = memberships.iter().map(|m| m.organization_id).collect();
    let mut found = organizations::Entity::find()
        .filter(organizations::Column::Id.is_in(ids))
        .order_by_asc(organizations::Column::Name)
        .all(db)
        .await?;
    found.retain(|o| memberships.iter().any(|m| m.organization_id == o.id));
    Ok(found
        .into_iter()
        .filter_map(|o| {
            let role = memberships
                .iter()
                .find(|m| m.organization_id == o.id)
                .and_then(|m| OrgRole::parse(&m.role))?;
            Some((o, role))
        })
        .collect())
}

/// One member as listed.
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub role: OrgRole,
    pub joined_at: DateTime<Utc>,
}

/// A page of an organization's members in the order they were created (user ids are UUID v7),
/// after `after`; whether more follow; and the total.
///
/// # Errors
/// `BAD_USER_INPUT` for `first` outside 1–100; the database fails.
pub async fn members(
    db: &impl ConnectionTrait,
    organization: Uuid,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<(Vec<MemberRow>, bool, u64)> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(AppError::invalid(
            "first",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let base = organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(organization));
    let total = base.clone().count(db).await?;
    let mut query = base.order_by_asc(organization_members::Column::UserId);
    if let Some(after) = after {
        query = query.filter(organization_members::Column::UserId.gt(after));
    }
    let mut rows = query.limit(first + 1).all(db).await?;
    let more = rows.len() as u64 > first;
    rows.truncate(usize::try_from(first).unwrap_or(usize::MAX));
    let ids: Vec<Uuid> = rows.iter().map(|m| m.user_id).collect();
    let accounts = users::Entity::find()
        .filter(users::Column::Id.is_in(ids))
        .all(db)
        .await?;
    let members = rows
        .into_iter()
        .filter_map(|m| {
            let account = accounts.iter().find(|u| u.id == m.user_id)?;
            Some(MemberRow {
                user_id: m.user_id,
                email: account.email.clone(),
                display_name: account.display_name.clone(),
                role: OrgRole::parse(&m.role)?,
                joined_at: m.created_at,
            })
        })
        .collect();
    Ok((members, more, total))
}

/// The acting member, refusing API keys (membership changes are made by people).
pub(super) fn acting(tenant: &Tenant) -> AppResult<(Uuid, OrgRole)> {
    tenant.member()
}

pub(super) async fn membership(
    db: &impl ConnectionTrait,
    organization: Uuid,
    user_id: Uuid,
) -> AppResult<Option<(organization_members::Model, OrgRole)>> {
    Ok(
        organization_members::Entity::find_by_id((organization, user_id))
            .one(db)
            .await?
            .and_then(|m| OrgRole::parse(&m.role).map(|role| (m, role))),
    )
}

async fn set_role(
    db: &impl ConnectionTrait,
    organization: Uuid,
    user_id: Uuid,
    role: OrgRole,
) -> AppResult<()> {
    organization_members::Entity::update_many()
        .col_expr(
            organization_members::Column::Role,
            Expr::value(role.as_str()),
        )
        .filter(organization_members::Column::OrganizationId.eq(organization))
        .filter(organization_members::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

fn member_not_found() -> AppError {
    AppError::NotFound("no such member".into())
}

async fn owners(db: &impl ConnectionTrait, organization: Uuid) -> AppResult<u64> {
    Ok(organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(organization))
        .filter(organization_members::Column::Role.eq(OrgRole::Owner.as_str()))
        .count(db)
        .await?)
}

fn last_owner() -> AppError {
    AppError::Refused {
        reason: "LAST_OWNER",
        message: "the last owner cannot leave, be removed or be demoted; transfer ownership or \
                  delete the organization"
            .into(),
    }
}

/// Changes a member's role.
///
/// # Errors
/// `NOT_FOUND` for a non-member, `FORBIDDEN` by the rules above (and for API keys), `FORBIDDEN`
/// (`LAST_OWNER`) for demoting the last owner; the database fails.
pub async fn change_role(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    user_id: Uuid,
    role: OrgRole,
) -> AppResult<MemberRow> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let (row, current) = membership(&txn, tenant.id(), user_id)
        .await?
        .ok_or_else(member_not_found)?;
    let (me, own) = acting(tenant)?;
    let allowed = own == OrgRole::Owner
        || (role != OrgRole::Owner && role.rank() <= own.rank() && current.rank() < own.rank());
    if !allowed {
        return Err(AppError::Forbidden(
            "you may give roles up to your own, to members below you; only owners make or \
             change owners"
                .into(),
        ));
    }
    if current == OrgRole::Owner && role != OrgRole::Owner && owners(&txn, tenant.id()).await? <= 1
    {
        return Err(last_owner());
    }
    if current != role {
        set_role(&txn, tenant.id(), user_id, role).await?;
        audit::service::record(
            &txn,
            &actor.within(tenant.id()),
            "organization.member_role",
            Some(("user", user_id.to_string())),
            json!({ "before": current.as_str(), "after": role.as_str(), "self": me == user_id }),
        )
        .await?;
    }
    let account = accounts::find_by_id(&txn, user_id)
        .await?
        .ok_or_else(member_not_found)?;
    txn.commit().await?;
    Ok(MemberRow {
        user_id,
        email: account.email,
        display_name: account.display_name,
        role,
        joined_at: row.created_at,
    })
}

/// Removes a member (yourself: leaving).
///
/// # Errors
/// `NOT_FOUND` for a non-member, `FORBIDDEN` by the rules above (and for API keys), `FORBIDDEN`
/// (`LAST_OWNER`) for the last owner; the database fails.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    user_id: Uuid,
) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let (_, current) = membership(&txn, tenant.id(), user_id)
        .await?
        .ok_or_else(member_not_found)?;
    let (me, own) = acting(tenant)?;
    let leaving = me == user_id;
    if !leaving && own != OrgRole::Owner && current.rank() >= own.rank() {
        return Err(AppError::Forbidden(
            "you may remove only members below your own role".into(),
        ));
    }
    if current == OrgRole::Owner && owners(&txn, tenant.id()).await? <= 1 {
        return Err(last_owner());
    }
    organization_members::Entity::delete_by_id((tenant.id(), user_id))
        .exec(&txn)
        .await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        if leaving {
            "organization.leave"
        } else {
            "organization.member_remove"
        },
        Some(("user", user_id.to_string())),
        json!({ "role": current.as_str() }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Makes `user_id` an owner and the acting owner an admin.
///
/// # Errors
/// `NOT_FOUND` for a non-member, `BAD_USER_INPUT` (`userId`) for oneself, `FORBIDDEN` for
/// API keys; the database fails.
pub async fn transfer(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    user_id: Uuid,
) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let (_, before) = membership(&txn, tenant.id(), user_id)
        .await?
        .ok_or_else(member_not_found)?;
    let (me, _) = acting(tenant)?;
    if me == user_id {
        return Err(AppError::invalid("userId", "is you; name another member"));
    }
    set_role(&txn, tenant.id(), user_id, OrgRole::Owner).await?;
    set_role(&txn, tenant.id(), me, OrgRole::Admin).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "organization.transfer",
        Some(("user", user_id.to_string())),
        json!({ "previousRole": before.as_str() }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Deletes the organization with everything of it (members, invitations, API keys — which stop
/// working on every instance at once); its audit entries stay.
///
/// # Errors
/// `BAD_USER_INPUT` (`confirmSlug`) unless it repeats the slug, `FORBIDDEN` for API keys; the
/// database fails.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    confirm_slug: &str,
) -> AppResult<()> {
    acting(tenant)?;
    if confirm_slug.trim() != tenant.organization.slug {
        return Err(AppError::invalid(
            "confirmSlug",
            "must repeat the organization's slug",
        ));
    }
    let txn = crate::infra::db::begin(&state.db).await?;
    let (keys, members) = purge(&txn, tenant.id()).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "organization.delete",
        Some(("organization", tenant.id().to_string())),
        json!({
            "slug": tenant.organization.slug,
            "name": tenant.organization.name,
            "members": members,
            "apiKeys": keys.len(),
        }),
    )
    .await?;
    txn.commit().await?;
    Orphans(keys).release(state).await;
    Ok(())
}

/// Deletes an organization and everything of it, children first (the same on every backend,
/// whatever its foreign-key settings): its keys (to release after the commit) and how many
/// members it had.
async fn purge(
    conn: &impl ConnectionTrait,
    organization: Uuid,
) -> AppResult<(Vec<api_keys::Model>, u64)> {
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(organization))
        .all(conn)
        .await?;
    let members = organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(organization))
        .count(conn)
        .await?;
    api_keys::Entity::delete_many()
        .filter(api_keys::Column::OrganizationId.eq(organization))
        .exec(conn)
        .await?;
    invitations::Entity::delete_many()
        .filter(invitations::Column::OrganizationId.eq(organization))
        .exec(conn)
        .await?;
    organization_members::Entity::delete_many()
        .filter(organization_members::Column::OrganizationId.eq(organization))
        .exec(conn)
        .await?;
    organizations::Entity::delete_by_id(organization)
        .exec(conn)
        .await?;
    Ok((keys, members))
}

/// Keys whose cached state must be dropped once a transaction commits.
#[must_use = "drop the keys' cached state after the commit: `Orphans::release`"]
#[derive(Debug, Default)]
pub struct Orphans(Vec<api_keys::Model>);

impl Orphans {
    pub async fn release(self, state: &AppState) {
        for key in &self.0 {
            let mut hashes = vec![key.secret_hash.as_str()];
            hashes.extend(key.previous_hash.as_deref());
            keys::key_changed(state, key.id, &hashes).await;
        }
    }
}

/// Before an account is deleted (on `conn`, the deletion's transaction): no organization is left
/// without an owner. Where the account is the only owner, the longest-standing member of the
/// highest role becomes owner; an organization with no other member is deleted with its keys
/// (audited, like everything here). Call [`Orphans::release`] after the commit.
///
/// # Errors
/// The database fails.
pub async fn account_leaving(
    conn: &impl ConnectionTrait,
    actor: &Actor,
    user_id: Uuid,
) -> AppResult<Orphans> {
    let owned = organization_members::Entity::find()
        .filter(organization_members::Column::UserId.eq(user_id))
        .filter(organization_members::Column::Role.eq(OrgRole::Owner.as_str()))
        .all(conn)
        .await?;
    let mut orphans = Orphans::default();
    for membership in owned {
        let organization = membership.organization_id;
        if owners(conn, organization).await? > 1 {
            continue;
        }
        let others = organization_members::Entity::find()
            .filter(organization_members::Column::OrganizationId.eq(organization))
            .filter(organization_members::Column::UserId.ne(user_id))
            .order_by_asc(organization_members::Column::CreatedAt)
            .all(conn)
            .await?;
        let heir = others
            .iter()
            .filter_map(|m| OrgRole::parse(&m.role).map(|role| (m, role)))
            .max_by_key(|(m, role)| (role.rank(), std::cmp::Reverse(m.created_at)));
        if let Some((heir, _)) = heir {
            set_role(conn, organization, heir.user_id, OrgRole::Owner).await?;
            audit::service::record(
                conn,
                &actor.within(organization),
                "organization.owner_succession",
                Some(("user", heir.user_id.to_string())),
                json!({ "previousOwner": user_id }),
            )
            .await?;
            continue;
        }
        let (keys, _) = purge(conn, organization).await?;
        audit::service::record(
            conn,
            &actor.within(organization),
            "organization.delete",
            Some(("organization", organization.to_string())),
            json!({ "reason": "its only member's account was deleted", "apiKeys": keys.len() }),
        )
        .await?;
        orphans.0.extend(keys);
    }
    Ok(orphans)
}

/// Every organization, newest first, with its member count (admin view).
///
/// # Errors
/// `BAD_USER_INPUT` for a limit outside 1–100; the database fails.
pub async fn all(
    db: &impl ConnectionTrait,
    limit: u64,
    offset: u64,
) -> AppResult<(Vec<(organizations::Model, u64)>, u64)> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let total = organizations::Entity::find().count(db).await?;
    let rows = organizations::Entity::find()
        .order_by_desc(organizations::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
    let counts: Vec<(Uuid, i64)> = organization_members::Entity::find()
        .select_only()
        .column(organization_members::Column::OrganizationId)
        .column_as(organization_members::Column::UserId.count(), "members")
        .filter(organization_members::Column::OrganizationId.is_in(ids))
        .group_by(organization_members::Column::OrganizationId)
        .into_tuple()
        .all(db)
        .await?;
    Ok((
        rows.into_iter()
            .map(|o| {
                let members = counts
                    .iter()
                    .find(|(id, _)| *id == o.id)
                    .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
                (o, members)
            })
            .collect(),
        total,
    ))
}

/// How many organizations there are (for system stats).
///
/// # Errors
/// The database fails.
pub async fn count(db: &impl ConnectionTrait) -> AppResult<u64> {
    Ok(organizations::Entity::find().count(db).await?)
}
