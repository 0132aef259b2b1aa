//! Administration: listing users, bans, permanent deletion, bulk role changes, role management
//! and system statistics. Every change is one transaction that includes its audit entry, and no
//! change may lock the system out of administration.

use super::notices::{self, Notice};
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, Func, LikeExpr, Query};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, DatabaseTransaction,
    EntityTrait as _, Order, PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, QueryTrait as _, Select, Set,
};
use serde_json::json;
use uuid::Uuid;

use crate::entities::{role_permissions, roles, user_roles, users};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::{api_keys, audit, organizations};
use crate::identity::permissions::ADMIN_ROLE;
use crate::identity::{Actor, SessionEnd, accounts, rank, sessions, sessions_ended, user_changed};
use crate::state::AppState;

pub use super::roles::{
    RoleDetails, create_role, delete_role, list_roles, update_role_permissions,
};

pub const MAX_PAGE: u64 = 100;
pub const MAX_BULK: usize = 500;

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_banned: Option<bool>,
    pub role_name: Option<String>,
    pub search: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    CreatedAt,
    Email,
    LastLoginAt,
}

fn banned_now(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(users::Column::BannedAt.is_not_null())
        .add(
            Condition::any()
                .add(users::Column::BannedUntil.is_null())
                .add(users::Column::BannedUntil.gt(now)),
        )
}

fn filtered(filter: &UserFilter) -> Select<users::Entity> {
    let now = Utc::now();
    let mut query = users::Entity::find();
    if let Some(active) = filter.is_active {
        query = query.filter(users::Column::IsActive.eq(active));
    }
    if let Some(verified) = filter.is_verified {
        query = query.filter(users::Column::IsVerified.eq(verified));
    }
    match filter.is_banned {
        Some(true) => query = query.filter(banned_now(now)),
        Some(false) => query = query.filter(banned_now(now).not()),
        None => {}
    }
    if let Some(role) = &filter.role_name {
        query = query.filter(
            users::Column::Id.in_subquery(
                Query::select()
                    .column((user_roles::Entity, user_roles::Column::UserId))
                    .from(user_roles::Entity)
                    .inner_join(
                        roles::Entity,
                        Expr::col((roles::Entity, roles::Column::Id))
                            .equals((user_roles::Entity, user_roles::Column::RoleId)),
                    )
                    .and_where(roles::Column::Name.eq(role.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // Case-insensitive on every backend: compare lower-cased columns with a lower-cased,
        // escaped pattern.
        let escaped = search
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
        let lower = |column: users::Column| Expr::expr(Func::lower(Expr::col(column)));
        query = query.filter(
            Condition::any()
                .add(lower(users::Column::Email).like(pattern()))
                .add(lower(users::Column::Username).like(pattern()))
                .add(lower(users::Column::DisplayName).like(pattern())),
        );
    }
    if let Some(after) = filter.created_after {
        query = query.filter(users::Column::CreatedAt.gte(after));
    }
    if let Some(before) = filter.created_before {
        query = query.filter(users::Column::CreatedAt.lt(before));
    }
    query
}

/// A page of users, and the total for the filter when `with_total` (a statement of its own).
/// With `columns`, only those are selected and the rows' other fields are placeholders
/// (`users::Model::from_columns`).
///
/// # Errors
/// `BAD_USER_INPUT` for a limit outside 1–100 or a negative offset.
#[tracing::instrument(name = "admin.list_users", skip_all, fields(limit = page.0, offset = page.1))]
pub async fn list_users(
    db: &impl ConnectionTrait,
    filter: &UserFilter,
    order: (OrderField, Order),
    page: (i64, i64),
    with_total: bool,
    columns: Option<&[users::Column]>,
) -> AppResult<(Vec<users::Model>, Option<u64>)> {
    let (limit, offset) = page;
    let mut errors = FieldErrors::default();
    let limit = u64::try_from(limit)
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l));
    if limit.is_none() {
        errors.add("limit", format!("must be from 1 to {MAX_PAGE}"));
    }
    let offset = u64::try_from(offset).ok();
    if offset.is_none() {
        errors.add("offset", "must not be negative");
    }
    errors.into_result()?;
    let (Some(limit), Some(offset)) = (limit, offset) else {
        return Err(AppError::invalid("limit", "is invalid"));
    };
    // The count is a statement of its own: only when the caller asked for it.
    let total = if with_total {
        Some(filtered(filter).count(db).await?)
    } else {
        None
    };
    let column = match order.0 {
        OrderField::CreatedAt => users::Column::CreatedAt,
        OrderField::Email => users::Column::Email,
        OrderField::LastLoginAt => users::Column::LastLoginAt,
    };
    let page = filtered(filter)
        .order_by(column, order.1.clone())
        .order_by(users::Column::Id, order.1)
        .limit(limit)
        .offset(offset);
    let items = match columns {
        None => page.all(db).await?,
        // Only what the fields shown read: each column not selected is a column SQLite does
        // not copy out and the driver does not decode, for every row of the page.
        Some(columns) => {
            let statement = page
                .select_only()
                .columns(columns.iter().copied())
                .build(db.get_database_backend());
            db.query_all_raw(statement)
                .await?
                .iter()
                .map(|row| users::Model::from_columns(row, columns))
                .collect::<Result<_, _>>()?
        }
    };
    Ok((items, total))
}

async fn target(db: &impl ConnectionTrait, id: Uuid) -> AppResult<users::Model> {
    users::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))
}

/// Refuses unless the actor outranks every one of `targets` (see `identity::rank`).
async fn require_outranks(
    state: &AppState,
    db: &impl ConnectionTrait,
    actor: &Actor,
    targets: &[Uuid],
) -> AppResult<()> {
    let held = accounts::permissions_of(db, targets).await?;
    for permissions in held.values() {
        rank::require_outranks(actor, permissions, &state.catalogue)?;
    }
    Ok(())
}

/// The permissions a role grants.
pub(super) async fn grants_of(db: &impl ConnectionTrait, role_id: Uuid) -> AppResult<Vec<String>> {
    Ok(role_permissions::Entity::find()
        .filter(role_permissions::Column::RoleId.eq(role_id))
        .all(db)
        .await?
        .into_iter()
        .map(|g| g.permission)
        .collect())
}

pub(super) fn refuse_self(actor: &Actor, target: Uuid, what: &str) -> AppResult<()> {
    if actor.id == Some(target) {
        return Err(AppError::Refused {
            reason: "SELF_ACTION",
            message: format!("you cannot {what} yourself"),
        });
    }
    Ok(())
}

pub(super) async fn admin_role(db: &impl ConnectionTrait) -> AppResult<roles::Model> {
    roles::Entity::find()
        .filter(roles::Column::Name.eq(ADMIN_ROLE))
        .one(db)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the admin role is missing")))
}

/// Active, unbanned holders of `admin`, other than `excluding`.
async fn other_active_admins(db: &impl ConnectionTrait, excluding: &[Uuid]) -> AppResult<u64> {
    let admin = admin_role(db).await?;
    let now = Utc::now();
    Ok(users::Entity::find()
        .filter(users::Column::IsActive.eq(true))
        .filter(banned_now(now).not())
        .filter(users::Column::Id.is_not_in(excluding.iter().copied()))
        .filter(
            users::Column::Id.in_subquery(
                Query::select()
                    .column(user_roles::Column::UserId)
                    .from(user_roles::Entity)
                    .and_where(user_roles::Column::RoleId.eq(admin.id))
                    .to_owned(),
            ),
        )
        .count(db)
        .await?)
}

async fn is_admin(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<bool> {
    let admin = admin_role(db).await?;
    Ok(user_roles::Entity::find_by_id((user_id, admin.id))
        .one(db)
        .await?
        .is_some())
}

/// Refuses when removing `users` from administration would leave no active admin.
async fn keep_an_admin(db: &impl ConnectionTrait, users: &[Uuid], what: &str) -> AppResult<()> {
    let mut any_admin = false;
    for user in users {
        any_admin |= is_admin(db, *user).await?;
    }
    if any_admin && other_active_admins(db, users).await? == 0 {
        return Err(AppError::Refused {
            reason: "LAST_ADMIN",
            message: format!("you cannot {what} the last active admin"),
        });
    }
    Ok(())
}

/// Bans a user (until a time, or indefinitely): every session ends at once.
///
/// # Errors
/// `NOT_FOUND`, `FORBIDDEN` (self, last admin), `BAD_USER_INPUT` (an end in the past, a long
/// reason).
#[tracing::instrument(name = "admin.ban", skip_all, fields(target = %user_id))]
pub async fn ban(
    state: &AppState,
    actor: &Actor,
    user_id: Uuid,
    reason: &str,
    until: Option<DateTime<Utc>>,
) -> AppResult<users::Model> {
    let mut errors = FieldErrors::default();
    let reason = errors
        .text("reason", reason, crate::text::Rules::lines(500))
        .unwrap_or_default();
    if until.is_some_and(|u| u <= Utc::now()) {
        errors.add("until", "must be in the future");
    }
    errors.into_result()?;
    refuse_self(actor, user_id, "ban")?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let user = target(&txn, user_id).await?;
    require_outranks(state, &txn, actor, &[user_id]).await?;
    keep_an_admin(&txn, &[user_id], "ban").await?;
    let before = json!({ "bannedAt": user.banned_at, "banReason": user.ban_reason, "bannedUntil": user.banned_until });
    let mut active: users::ActiveModel = user.into();
    active.banned_at = Set(Some(Utc::now()));
    active.ban_reason = Set(Some(reason.clone()));
    active.banned_until = Set(until);
    active.updated_at = Set(Utc::now());
    active.update(&txn).await?;
    sessions::end_all_in(&txn, user_id).await?;
    let user = target(&txn, user_id).await?;
    audit::service::record(
        &txn,
        actor,
        "user.ban",
        Some(("user", user_id.to_string())),
        json!({ "reason": reason, "until": until, "before": before, "targetEmail": user.email }),
    )
    .await?;
    let notice = Notice::Banned {
        reason: &reason,
        until,
    };
    let notice = notices::send(state, &txn, &[user_id], &notice, actor).await?;
    txn.commit().await?;
    sessions_ended(state, user_id, SessionEnd::Banned).await;
    notice.publish(state).await;
    Ok(user)
}

/// # Errors
/// `NOT_FOUND`, `FORBIDDEN` (a user the actor does not outrank).
#[tracing::instrument(name = "admin.unban", skip_all, fields(target = %user_id))]
pub async fn unban(state: &AppState, actor: &Actor, user_id: Uuid) -> AppResult<users::Model> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let user = target(&txn, user_id).await?;
    require_outranks(state, &txn, actor, &[user_id]).await?;
    let before = json!({ "bannedAt": user.banned_at, "banReason": user.ban_reason, "bannedUntil": user.banned_until });
    let mut active: users::ActiveModel = user.into();
    active.banned_at = Set(None);
    active.ban_reason = Set(None);
    active.banned_until = Set(None);
    active.updated_at = Set(Utc::now());
    let user = active.update(&txn).await?;
    audit::service::record(
        &txn,
        actor,
        "user.unban",
        Some(("user", user_id.to_string())),
        json!({ "before": before, "targetEmail": user.email }),
    )
    .await?;
    let notice = notices::send(state, &txn, &[user_id], &Notice::Unbanned, actor).await?;
    txn.commit().await?;
    user_changed(state, user_id).await;
    notice.publish(state).await;
    Ok(user)
}

/// Deletes a user and everything they own (sessions, roles, links, tokens) for good. The audit
/// entry keeps their email.
///
/// # Errors
/// `NOT_FOUND`, `FORBIDDEN` (self, last admin), `BAD_USER_INPUT` when `confirm_email` differs.
#[tracing::instrument(name = "admin.delete_user", skip_all, fields(target = %user_id))]
pub async fn delete_permanently(
    state: &AppState,
    actor: &Actor,
    user_id: Uuid,
    confirm_email: &str,
) -> AppResult<()> {
    refuse_self(actor, user_id, "delete")?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let user = target(&txn, user_id).await?;
    if accounts::normalize_email(confirm_email) != user.email {
        return Err(AppError::invalid(
            "confirmEmail",
            "does not match the user's email",
        ));
    }
    require_outranks(state, &txn, actor, &[user_id]).await?;
    keep_an_admin(&txn, &[user_id], "delete").await?;
    let roles = accounts::roles_of(&txn, user_id).await?;
    audit::service::record(
        &txn,
        actor,
        "user.delete",
        Some(("user", user_id.to_string())),
        json!({
            "email": user.email,
            "roles": roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "createdAt": user.created_at,
        }),
    )
    .await?;
    let orphans = organizations::service::account_leaving(&txn, actor, user_id).await?;
    users::Entity::delete_by_id(user_id).exec(&txn).await?;
    txn.commit().await?;
    orphans.release(state).await;
    sessions_ended(state, user_id, SessionEnd::Deleted).await;
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkResult {
    pub updated: Vec<Uuid>,
    pub unchanged: Vec<Uuid>,
    pub not_found: Vec<Uuid>,
}

fn check_bulk(ids: &[Uuid]) -> AppResult<Vec<Uuid>> {
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(AppError::invalid(
            "userIds",
            format!("must hold 1 to {MAX_BULK} ids"),
        ));
    }
    let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
    Ok(unique.into_iter().collect())
}

pub(super) async fn role_by_name(db: &impl ConnectionTrait, name: &str) -> AppResult<roles::Model> {
    roles::Entity::find()
        .filter(roles::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no role named {name:?}")))
}

/// The role named `name`, which the actor may give or take (they hold all its permissions).
async fn grantable_role(
    txn: &DatabaseTransaction,
    actor: &Actor,
    name: &str,
) -> AppResult<roles::Model> {
    let role = role_by_name(txn, name).await?;
    let grants = grants_of(txn, role.id).await?;
    rank::require_grantable(actor, &role.name, grants.iter().map(String::as_str))?;
    Ok(role)
}

/// Which of `ids` exist; refuses unless the actor outranks every one of them.
async fn outranked_users(
    state: &AppState,
    txn: &DatabaseTransaction,
    actor: &Actor,
    ids: &[Uuid],
) -> AppResult<BTreeSet<Uuid>> {
    let existing = existing_users(txn, ids).await?;
    require_outranks(
        state,
        txn,
        actor,
        &existing.iter().copied().collect::<Vec<_>>(),
    )
    .await?;
    Ok(existing)
}

async fn existing_users(txn: &DatabaseTransaction, ids: &[Uuid]) -> AppResult<BTreeSet<Uuid>> {
    let found: Vec<Uuid> = users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(found.into_iter().collect())
}

/// Gives a role to up to 500 users, all or nothing.
///
/// # Errors
/// `BAD_USER_INPUT` for too many ids, `NOT_FOUND` for an unknown role.
#[tracing::instrument(name = "admin.bulk_assign_role", skip_all, fields(role = role, users = ids.len()))]
pub async fn bulk_assign_role(
    state: &AppState,
    actor: &Actor,
    ids: &[Uuid],
    role: &str,
) -> AppResult<BulkResult> {
    let ids = check_bulk(ids)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let role = grantable_role(&txn, actor, role).await?;
    let existing = outranked_users(state, &txn, actor, &ids).await?;
    let mut result = BulkResult::default();
    for id in ids {
        if !existing.contains(&id) {
            result.not_found.push(id);
            continue;
        }
        let inserted = user_roles::Entity::insert(user_roles::ActiveModel {
            user_id: Set(id),
            role_id: Set(role.id),
            created_at: Set(Utc::now()),
        })
        .on_conflict_do_nothing_on([user_roles::Column::UserId, user_roles::Column::RoleId])
        .exec(&txn)
        .await?;
        match inserted {
            sea_orm::TryInsertResult::Inserted(_) => result.updated.push(id),
            _ => result.unchanged.push(id),
        }
    }
    record_bulk(&txn, actor, "role.bulk_assign", &role.name, &result).await?;
    let notice = Notice::RoleGranted(&role.name);
    let notice = notices::send(state, &txn, &result.updated, &notice, actor).await?;
    txn.commit().await?;
    for id in &result.updated {
        user_changed(state, *id).await;
    }
    notice.publish(state).await;
    Ok(result)
}

/// Takes a role from up to 500 users, all or nothing; never your own `admin`, never the last one.
///
/// # Errors
/// `BAD_USER_INPUT`, `NOT_FOUND`, `FORBIDDEN` (self-demotion, last admin).
#[tracing::instrument(name = "admin.bulk_remove_role", skip_all, fields(role = role, users = ids.len()))]
pub async fn bulk_remove_role(
    state: &AppState,
    actor: &Actor,
    ids: &[Uuid],
    role: &str,
) -> AppResult<BulkResult> {
    let ids = check_bulk(ids)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let role = grantable_role(&txn, actor, role).await?;
    if role.name == ADMIN_ROLE {
        if let Some(me) = actor.id.filter(|me| ids.contains(me)) {
            refuse_self(actor, me, "demote")?;
        }
        keep_an_admin(&txn, &ids, "demote").await?;
    }
    let existing = outranked_users(state, &txn, actor, &ids).await?;
    let mut result = BulkResult::default();
    for id in ids {
        if !existing.contains(&id) {
            result.not_found.push(id);
            continue;
        }
        let removed = user_roles::Entity::delete_by_id((id, role.id))
            .exec(&txn)
            .await?;
        if removed.rows_affected == 1 {
            result.updated.push(id);
        } else {
            result.unchanged.push(id);
        }
    }
    record_bulk(&txn, actor, "role.bulk_remove", &role.name, &result).await?;
    let notice = Notice::RoleRemoved(&role.name);
    let notice = notices::send(state, &txn, &result.updated, &notice, actor).await?;
    txn.commit().await?;
    for id in &result.updated {
        user_changed(state, *id).await;
    }
    notice.publish(state).await;
    Ok(result)
}

async fn record_bulk(
    txn: &DatabaseTransaction,
    actor: &Actor,
    action: &str,
    role: &str,
    result: &BulkResult,
) -> AppResult<()> {
    audit::service::record(
        txn,
        actor,
        action,
        Some(("role", role.to_owned())),
        json!({
            "updated": result.updated,
            "unchanged": result.unchanged.len(),
            "notFound": result.not_found,
        }),
    )
    .await
}

pub struct Stats {
    pub total: u64,
    pub active: u64,
    pub verified: u64,
    pub banned: u64,
    pub new_last_30_days: u64,
    pub roles: Vec<(String, u64)>,
    pub audit_last_24h: u64,
    pub organizations: u64,
    pub active_api_keys: u64,
    pub jobs: crate::infra::jobs::QueueStats,
}

/// # Errors
/// The database fails.
#[tracing::instrument(name = "admin.stats", skip_all)]
pub async fn stats(state: &AppState) -> AppResult<Stats> {
    let db = &state.db;
    let now = Utc::now();
    let count = |condition: Condition| users::Entity::find().filter(condition).count(db);
    let roles = list_roles(db).await?;
    Ok(Stats {
        total: users::Entity::find().count(db).await?,
        active: count(Condition::all().add(users::Column::IsActive.eq(true))).await?,
        verified: count(Condition::all().add(users::Column::IsVerified.eq(true))).await?,
        banned: count(banned_now(now)).await?,
        new_last_30_days: count(
            Condition::all().add(users::Column::CreatedAt.gte(now - chrono::Duration::days(30))),
        )
        .await?,
        roles: roles.into_iter().map(|r| (r.role.name, r.users)).collect(),
        audit_last_24h: audit::service::count_since(db, now - chrono::Duration::hours(24)).await?,
        organizations: organizations::service::count(db).await?,
        active_api_keys: api_keys::service::count_active(db).await?,
        jobs: state.jobs.stats().await?,
    })
}

/// Puts a dead job back in the queue, audited as `job.retry`.
///
/// # Errors
/// `NOT_FOUND` unless a dead job has this id; the database fails.
pub async fn retry_job(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
) -> AppResult<crate::entities::jobs::Model> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let job = state
        .jobs
        .retry(&txn, id)
        .await?
        .ok_or_else(|| AppError::NotFound("no dead job with this id".into()))?;
    audit::service::record(
        &txn,
        actor,
        "job.retry",
        Some(("job", id.to_string())),
        json!({ "kind": job.kind, "lastError": job.last_error }),
    )
    .await?;
    txn.commit().await?;
    Ok(job)
}
