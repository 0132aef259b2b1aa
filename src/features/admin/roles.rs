//! Role management: listing roles with their grants and holders, creating roles, changing their
//! permissions and deleting them — within the rank rules, audited, and effective for every holder
//! on their next request.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseTransaction,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::service::{grants_of, role_by_name};
use crate::entities::{role_permissions, roles, user_roles};
use crate::error::{AppError, AppResult, FieldErrors, conflict_on_unique};
use crate::features::audit;
use crate::identity::permissions::ADMIN_ROLE;
use crate::identity::{Actor, Permission, rank, user_changed};
use crate::state::AppState;

/// A role with its permissions and how many users hold it.
pub struct RoleDetails {
    pub role: roles::Model,
    pub permissions: Vec<String>,
    pub users: u64,
}

/// # Errors
/// The database fails.
pub async fn list_roles(db: &impl ConnectionTrait) -> AppResult<Vec<RoleDetails>> {
    let all = roles::Entity::find()
        .order_by_asc(roles::Column::Name)
        .all(db)
        .await?;
    let grants = role_permissions::Entity::find().all(db).await?;
    let counts: Vec<(Uuid, i64)> = user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::RoleId)
        .column_as(user_roles::Column::UserId.count(), "n")
        .group_by(user_roles::Column::RoleId)
        .into_tuple()
        .all(db)
        .await?;
    let counts: BTreeMap<Uuid, i64> = counts.into_iter().collect();
    Ok(all
        .into_iter()
        .map(|role| {
            let mut permissions: Vec<String> = grants
                .iter()
                .filter(|g| g.role_id == role.id)
                .map(|g| g.permission.clone())
                .collect();
            permissions.sort();
            let users = u64::try_from(counts.get(&role.id).copied().unwrap_or(0)).unwrap_or(0);
            RoleDetails {
                role,
                permissions,
                users,
            }
        })
        .collect())
}

/// The named permissions, which must exist and which the actor must hold.
fn check_permissions(
    state: &AppState,
    actor: &Actor,
    role: &str,
    names: &[String],
) -> AppResult<Vec<Permission>> {
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| state.catalogue.parse(n).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(AppError::invalid(
            "permissions",
            format!("unknown: {}", unknown.join(", ")),
        ));
    }
    let set: BTreeSet<Permission> = names
        .iter()
        .filter_map(|n| state.catalogue.parse(n))
        .collect();
    rank::require_grantable(actor, role, set.iter().map(|p| p.as_str()))?;
    Ok(set.into_iter().collect())
}

async fn replace_grants(
    txn: &DatabaseTransaction,
    role_id: Uuid,
    permissions: &[Permission],
) -> AppResult<()> {
    role_permissions::Entity::delete_many()
        .filter(role_permissions::Column::RoleId.eq(role_id))
        .exec(txn)
        .await?;
    if !permissions.is_empty() {
        role_permissions::Entity::insert_many(permissions.iter().map(|p| {
            role_permissions::ActiveModel {
                role_id: Set(role_id),
                permission: Set(p.as_str().to_owned()),
            }
        }))
        .exec(txn)
        .await?;
    }
    Ok(())
}

/// # Errors
/// `BAD_USER_INPUT` (name, unknown permissions), `CONFLICT` for a taken name.
#[tracing::instrument(name = "admin.create_role", skip_all, fields(role = name))]
pub async fn create_role(
    state: &AppState,
    actor: &Actor,
    name: &str,
    description: Option<String>,
    permissions: &[String],
) -> AppResult<roles::Model> {
    let valid_name = (2..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid_name {
        return Err(AppError::invalid(
            "name",
            "must be 2 to 64 characters of a-z, 0-9, _ and -, starting with a letter",
        ));
    }
    let mut errors = FieldErrors::default();
    let description = description
        .map(|d| errors.text("description", &d, crate::text::Rules::lines(500)))
        .map(Option::unwrap_or_default);
    errors.into_result()?;
    let grants = check_permissions(state, actor, name, permissions)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let role = roles::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        description: Set(description),
        is_system: Set(false),
        created_at: Set(Utc::now()),
    }
    .insert(&txn)
    .await
    .map_err(conflict_on_unique("a role with this name exists"))?;
    replace_grants(&txn, role.id, &grants).await?;
    audit::service::record(
        &txn,
        actor,
        "role.create",
        Some(("role", role.name.clone())),
        json!({ "permissions": grants.iter().map(|p| p.as_str()).collect::<Vec<_>>() }),
    )
    .await?;
    txn.commit().await?;
    Ok(role)
}

/// Replaces a role's permissions (`admin` always keeps every permission).
///
/// # Errors
/// `NOT_FOUND`, `BAD_USER_INPUT`, `FORBIDDEN` for `admin`.
#[tracing::instrument(name = "admin.update_role_permissions", skip_all, fields(role = name))]
pub async fn update_role_permissions(
    state: &AppState,
    actor: &Actor,
    name: &str,
    permissions: &[String],
) -> AppResult<roles::Model> {
    let grants = check_permissions(state, actor, name, permissions)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let role = role_by_name(&txn, name).await?;
    if role.name == ADMIN_ROLE {
        return Err(AppError::Refused {
            reason: "ADMIN_ROLE",
            message: "the admin role always has every permission".into(),
        });
    }
    let before = grants_of(&txn, role.id).await?;
    // Taking a permission away from a role acts on its holders as much as giving one.
    rank::require_grantable(actor, &role.name, before.iter().map(String::as_str))?;
    replace_grants(&txn, role.id, &grants).await?;
    let holders = holders_of(&txn, role.id).await?;
    audit::service::record(
        &txn,
        actor,
        "role.update_permissions",
        Some(("role", role.name.clone())),
        json!({ "before": before, "after": grants.iter().map(|p| p.as_str()).collect::<Vec<_>>() }),
    )
    .await?;
    txn.commit().await?;
    for holder in holders {
        user_changed(state, holder).await;
    }
    Ok(role)
}

async fn holders_of(db: &impl ConnectionTrait, role_id: Uuid) -> AppResult<Vec<Uuid>> {
    Ok(user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::UserId)
        .filter(user_roles::Column::RoleId.eq(role_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// # Errors
/// `NOT_FOUND`, `FORBIDDEN` for system roles.
#[tracing::instrument(name = "admin.delete_role", skip_all, fields(role = name))]
pub async fn delete_role(state: &AppState, actor: &Actor, name: &str) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let role = role_by_name(&txn, name).await?;
    if role.is_system {
        return Err(AppError::Refused {
            reason: "SYSTEM_ROLE",
            message: format!("the {name} role is built in and cannot be deleted"),
        });
    }
    let grants = grants_of(&txn, role.id).await?;
    rank::require_grantable(actor, &role.name, grants.iter().map(String::as_str))?;
    let holders = holders_of(&txn, role.id).await?;
    audit::service::record(
        &txn,
        actor,
        "role.delete",
        Some(("role", role.name.clone())),
        json!({ "holders": holders.len() }),
    )
    .await?;
    roles::Entity::delete_by_id(role.id).exec(&txn).await?;
    txn.commit().await?;
    for holder in holders {
        user_changed(state, holder).await;
    }
    Ok(())
}
