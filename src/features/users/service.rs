//! Users, roles and permissions in the database.

use std::collections::BTreeSet;

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use super::permissions::{ADMIN_ROLE, Permission, SYSTEM_ROLES};
use crate::entities::{permissions, role_permissions, roles, user_roles, users};
use crate::error::{AppError, AppResult};

/// Mirrors the permission catalogue and the system roles into the database, in one transaction:
/// missing permissions are added, retired ones removed (with their grants), missing system roles
/// created with their default grants, and `admin` topped up to every permission.
///
/// # Errors
/// The database fails.
pub async fn sync_catalogue(db: &DatabaseConnection) -> AppResult<()> {
    let txn = db.begin().await?;
    let wanted: Vec<permissions::ActiveModel> = Permission::ALL
        .iter()
        .map(|p| permissions::ActiveModel {
            name: Set(p.as_str().to_owned()),
            description: Set(Some(p.description().to_owned())),
        })
        .collect();
    permissions::Entity::insert_many(wanted)
        .on_conflict(
            OnConflict::column(permissions::Column::Name)
                .update_column(permissions::Column::Description)
                .to_owned(),
        )
        .exec(&txn)
        .await?;
    permissions::Entity::delete_many()
        .filter(permissions::Column::Name.is_not_in(Permission::ALL.map(Permission::as_str)))
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
                grant(&txn, role.id, system.permissions).await?;
                role
            }
        };
        if system.name == ADMIN_ROLE {
            grant(&txn, role.id, &Permission::ALL).await?;
        }
    }
    txn.commit().await?;
    Ok(())
}

async fn grant(db: &impl ConnectionTrait, role_id: Uuid, grants: &[Permission]) -> AppResult<()> {
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

/// A user's role names and the union of their permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    pub roles: BTreeSet<String>,
    pub permissions: BTreeSet<String>,
}

/// # Errors
/// The database fails.
pub async fn load_access(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Access> {
    let links = user_roles::Entity::find()
        .filter(user_roles::Column::UserId.eq(user_id))
        .find_also_related(roles::Entity)
        .all(db)
        .await?;
    let role_rows: Vec<roles::Model> = links.into_iter().filter_map(|(_, role)| role).collect();
    let role_ids: Vec<Uuid> = role_rows.iter().map(|r| r.id).collect();
    let grants = if role_ids.is_empty() {
        vec![]
    } else {
        role_permissions::Entity::find()
            .filter(role_permissions::Column::RoleId.is_in(role_ids))
            .all(db)
            .await?
    };
    Ok(Access {
        roles: role_rows.into_iter().map(|r| r.name).collect(),
        permissions: grants.into_iter().map(|g| g.permission).collect(),
    })
}

/// Gives `user_id` the role named `role`; `false` when they already had it.
///
/// # Errors
/// `NOT_FOUND` for an unknown role; the database fails.
pub async fn assign_role(db: &impl ConnectionTrait, user_id: Uuid, role: &str) -> AppResult<bool> {
    let role = roles::Entity::find()
        .filter(roles::Column::Name.eq(role))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no role named {role:?}")))?;
    let inserted = user_roles::Entity::insert(user_roles::ActiveModel {
        user_id: Set(user_id),
        role_id: Set(role.id),
        created_at: Set(Utc::now()),
    })
    .on_conflict_do_nothing_on([user_roles::Column::UserId, user_roles::Column::RoleId])
    .exec(db)
    .await?;
    Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(_)))
}

/// # Errors
/// The database fails.
pub async fn find_by_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> AppResult<Option<users::Model>> {
    Ok(users::Entity::find()
        .filter(users::Column::Email.eq(normalize_email(email)))
        .one(db)
        .await?)
}

/// # Errors
/// The database fails.
pub async fn find_by_id(db: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<users::Model>> {
    Ok(users::Entity::find_by_id(id).one(db).await?)
}

/// Emails are compared and stored trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The roles of a user, by name.
///
/// # Errors
/// The database fails.
pub async fn roles_of(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Vec<roles::Model>> {
    use sea_orm::QueryOrder as _;
    let links = user_roles::Entity::find()
        .filter(user_roles::Column::UserId.eq(user_id))
        .find_also_related(roles::Entity)
        .order_by_asc(user_roles::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(links.into_iter().filter_map(|(_, role)| role).collect())
}

/// # Errors
/// `BAD_USER_INPUT` for invalid fields, `CONFLICT` for a taken username.
pub async fn update_profile(
    state: &crate::state::AppState,
    user_id: Uuid,
    display_name: Option<String>,
    username: Option<String>,
) -> AppResult<users::Model> {
    use crate::features::auth::service::{check_display_name, check_username, conflict_on_unique};
    let mut errors = crate::error::FieldErrors::default();
    if let Some(name) = &display_name {
        check_display_name(name, &mut errors);
    }
    if let Some(name) = &username {
        check_username(name, &mut errors);
    }
    errors.into_result()?;
    let user = find_by_id(&state.db, user_id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let mut active: users::ActiveModel = user.into();
    if let Some(name) = display_name {
        active.display_name = Set(Some(name.trim().to_owned()));
    }
    if let Some(name) = username {
        active.username = Set(Some(name));
    }
    active.updated_at = Set(Utc::now());
    active
        .update(&state.db)
        .await
        .map_err(conflict_on_unique("this username is taken"))
}

/// Live sessions (unrevoked, unexpired refresh tokens).
///
/// # Errors
/// The database fails.
pub async fn active_sessions(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<u64> {
    use crate::entities::refresh_tokens;
    use sea_orm::PaginatorTrait as _;
    Ok(refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(Utc::now()))
        .count(db)
        .await?)
}

/// # Errors
/// The database fails.
pub async fn linked_providers(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Vec<String>> {
    use crate::entities::linked_accounts;
    let links = linked_accounts::Entity::find()
        .filter(linked_accounts::Column::UserId.eq(user_id))
        .all(db)
        .await?;
    let mut providers: Vec<String> = links.into_iter().map(|l| l.provider).collect();
    providers.sort();
    providers.dedup();
    Ok(providers)
}
