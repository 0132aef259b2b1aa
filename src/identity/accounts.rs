//! Accounts: the users table, its field rules, roles held, and the permissions they add up to.

use std::collections::BTreeSet;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseTransaction,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, Set,
};
use uuid::Uuid;
use validator::ValidateEmail as _;

use super::passwords;
use crate::entities::{role_permissions, roles, user_roles, user_totp, users};
use crate::error::{AppError, AppResult, FieldErrors, conflict_on_unique};
use crate::state::AppState;

/// Emails are compared and stored trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether `email` is an address mail can be delivered to: the HTML form's syntax, a domain name
/// (not an IP literal such as `a@[127.0.0.1]`), no control characters, and one the mailer accepts.
pub fn is_deliverable_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !email.chars().any(char::is_control)
        && email.validate_email()
        && !domain.starts_with('[')
        && domain.parse::<std::net::IpAddr>().is_err()
        && domain.contains('.')
        && email.parse::<lettre::Address>().is_ok()
}

pub fn check_email(email: &str, errors: &mut FieldErrors) {
    if !is_deliverable_email(email) {
        errors.add("email", "is not a valid email address");
    }
}

/// Checks the shape of a username (registration and profile updates).
pub fn check_username(username: &str, errors: &mut FieldErrors) {
    let valid_chars = username
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(3..=32).contains(&username.len()) || !valid_chars {
        errors.add("username", "must be 3 to 32 characters of a-z, 0-9 and _");
    }
}

/// What a display name may be: one line of 1 to 100 characters, without control, invisible or
/// text-direction characters (`crate::text`).
pub const DISPLAY_NAME: crate::text::Rules = crate::text::Rules::line(100);

/// Checks a display name; the normalised name (NFC, trimmed), or `None` with the error added.
pub fn check_display_name(name: &str, errors: &mut FieldErrors) -> Option<String> {
    errors.text("displayName", name, DISPLAY_NAME)
}

/// A display name as stored: normalised when it is valid (checked before), else trimmed.
fn stored_display_name(name: &str) -> String {
    crate::text::plain(name, DISPLAY_NAME).unwrap_or_else(|_| name.trim().to_owned())
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

/// What a new account is made of.
pub struct NewAccount {
    pub email: String,
    pub password: String,
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// Validates and inserts an account with the given roles, in one transaction.
///
/// # Errors
/// `BAD_USER_INPUT`, `CONFLICT` when the email or username is taken, `NOT_FOUND` for an unknown
/// role; the database fails.
pub async fn create_account(
    state: &AppState,
    account: NewAccount,
    roles: &[&str],
    verified: bool,
) -> AppResult<users::Model> {
    let password_hash = checked_password_hash(state, &account).await?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let user = create_account_in(&txn, account, password_hash, roles, verified).await?;
    txn.commit().await?;
    super::authenticate::user_created(state).await;
    Ok(user)
}

/// Checks every field of a new account, then hashes its password (before any lookup, so an
/// existing and a new email cost the same).
///
/// # Errors
/// `BAD_USER_INPUT` naming each invalid field.
pub async fn checked_password_hash(state: &AppState, account: &NewAccount) -> AppResult<String> {
    let email = normalize_email(&account.email);
    let mut errors = FieldErrors::default();
    check_email(&email, &mut errors);
    if let Some(problem) = passwords::policy_violation(
        &account.password,
        &email,
        state.settings.auth.password_min_length,
    ) {
        errors.add("password", problem);
    }
    if let Some(username) = &account.username {
        check_username(username, &mut errors);
    }
    if let Some(name) = &account.display_name {
        check_display_name(name, &mut errors);
    }
    errors.into_result()?;
    passwords::hash(&account.password).await
}

/// Inserts a checked account (see [`checked_password_hash`]) on `txn`.
///
/// # Errors
/// `CONFLICT` when the email or username is taken, `NOT_FOUND` for an unknown role.
pub async fn create_account_in(
    txn: &DatabaseTransaction,
    account: NewAccount,
    password_hash: String,
    roles: &[&str],
    verified: bool,
) -> AppResult<users::Model> {
    let email = normalize_email(&account.email);
    if find_by_email(txn, &email).await?.is_some() {
        return Err(AppError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    insert(
        txn,
        Profile {
            email,
            username: account.username,
            display_name: account.display_name.as_deref().map(stored_display_name),
            password_hash: Some(password_hash),
            verified,
        },
        roles,
    )
    .await
}

/// The fields of a new account row.
pub struct Profile {
    pub email: String,
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// `None` for accounts that sign in only through a provider.
    pub password_hash: Option<String>,
    pub verified: bool,
}

/// Inserts an account row with its roles on `txn` (the one place a user row is created).
///
/// # Errors
/// `CONFLICT` when the email or username is taken, `NOT_FOUND` for an unknown role.
pub async fn insert(
    txn: &DatabaseTransaction,
    profile: Profile,
    roles: &[&str],
) -> AppResult<users::Model> {
    let now = Utc::now();
    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(profile.email),
        username: Set(profile.username),
        display_name: Set(profile.display_name),
        password_hash: Set(profile.password_hash),
        is_active: Set(true),
        is_verified: Set(profile.verified),
        banned_at: Set(None),
        ban_reason: Set(None),
        banned_until: Set(None),
        session_epoch: Set(0),
        last_login_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(txn)
    .await
    .map_err(conflict_on_unique(
        "an account with this email or username exists",
    ))?;
    for role in roles {
        assign_role(txn, user.id, role).await?;
    }
    Ok(user)
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

/// A user's role names and the union of their permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    pub roles: BTreeSet<String>,
    pub permissions: BTreeSet<String>,
}

/// # Errors
/// The database fails.
pub async fn load_access(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Access> {
    let roles = roles_of(db, user_id).await?;
    let permissions = permissions_of(db, &[user_id])
        .await?
        .remove(&user_id)
        .unwrap_or_default();
    Ok(Access {
        roles: roles.into_iter().map(|r| r.name).collect(),
        permissions,
    })
}

/// The permissions each of `user_ids` holds (two statements, whatever the number of users).
///
/// # Errors
/// The database fails.
pub async fn permissions_of(
    db: &impl ConnectionTrait,
    user_ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, BTreeSet<String>>> {
    let links = user_roles::Entity::find()
        .filter(user_roles::Column::UserId.is_in(user_ids.iter().copied()))
        .all(db)
        .await?;
    let role_ids: BTreeSet<Uuid> = links.iter().map(|l| l.role_id).collect();
    let grants = if role_ids.is_empty() {
        vec![]
    } else {
        role_permissions::Entity::find()
            .filter(role_permissions::Column::RoleId.is_in(role_ids))
            .all(db)
            .await?
    };
    let mut by_role: std::collections::HashMap<Uuid, Vec<String>> = Default::default();
    for grant in grants {
        by_role
            .entry(grant.role_id)
            .or_default()
            .push(grant.permission);
    }
    let mut out: std::collections::HashMap<Uuid, BTreeSet<String>> =
        user_ids.iter().map(|id| (*id, BTreeSet::new())).collect();
    for link in links {
        if let Some(granted) = by_role.get(&link.role_id) {
            out.entry(link.user_id)
                .or_default()
                .extend(granted.iter().cloned());
        }
    }
    Ok(out)
}

/// The roles of a user, oldest grant first.
///
/// # Errors
/// The database fails.
pub async fn roles_of(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Vec<roles::Model>> {
    let links = user_roles::Entity::find()
        .filter(user_roles::Column::UserId.eq(user_id))
        .find_also_related(roles::Entity)
        .order_by_asc(user_roles::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(links.into_iter().filter_map(|(_, role)| role).collect())
}

/// Whether signing in needs a second factor.
///
/// # Errors
/// The database fails.
pub async fn two_factor_enabled(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<bool> {
    Ok(user_totp::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .is_some_and(|t| t.confirmed_at.is_some()))
}

/// Deactivates (or reactivates) an account; its tokens stop working on the next request.
///
/// # Errors
/// `NOT_FOUND`; the database fails.
pub async fn set_active(state: &AppState, user_id: Uuid, active: bool) -> AppResult<()> {
    let result = users::Entity::update_many()
        .col_expr(users::Column::IsActive, Expr::value(active))
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Id.eq(user_id))
        .exec(&state.db)
        .await?;
    if result.rows_affected == 0 {
        return Err(AppError::NotFound("no such user".into()));
    }
    if active {
        super::authenticate::user_changed(state, user_id).await;
    } else {
        super::authenticate::sessions_ended(state, user_id, super::SessionEnd::Deactivated).await;
    }
    Ok(())
}
