//! Registration, login, sessions and request authentication.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseTransaction,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::ValidateEmail as _;

use super::emails;
use super::passwords;
use super::tokens;
use super::viewer::{AuthUser, ClientInfo};
use crate::entities::{email_tokens, refresh_tokens, users};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::audit::{Actor, service as audit};
use crate::features::users::permissions::USER_ROLE;
use crate::features::users::service as users_service;
use crate::infra::mailer::SEND_EMAIL;
use crate::state::AppState;
use serde_json::json;

/// How long a user's auth state stays cached in the shared store between changes.
const USER_STATE_TTL: Duration = Duration::from_secs(60);

/// A signed-in session: what `login` and `refreshSession` hand back.
pub struct Tokens {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub session_id: Uuid,
    pub user: users::Model,
}

pub struct NewAccount {
    pub email: String,
    pub password: String,
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// What authentication needs to know about a user, cached in the shared store.
#[derive(Serialize, Deserialize)]
struct UserState {
    email: String,
    epoch: i64,
    active: bool,
    banned: bool,
    banned_until: Option<i64>,
    roles: Vec<String>,
    permissions: Vec<String>,
}

impl UserState {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        let banned = self.banned
            && self
                .banned_until
                .is_none_or(|until| until > now.timestamp());
        self.active && !banned
    }
}

fn user_state_key(user_id: Uuid) -> String {
    format!("auth:user:{user_id}")
}

fn revoked_session_key(session_id: Uuid) -> String {
    format!("auth:revoked-session:{session_id}")
}

/// Checks the shape of account fields shared by registration and profile updates.
pub fn check_username(username: &str, errors: &mut FieldErrors) {
    let valid_chars = username
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(3..=32).contains(&username.len()) || !valid_chars {
        errors.add("username", "must be 3 to 32 characters of a-z, 0-9 and _");
    }
}

pub fn check_display_name(name: &str, errors: &mut FieldErrors) {
    let length = name.trim().chars().count();
    if length == 0 || length > 100 || name.chars().any(char::is_control) {
        errors.add("displayName", "must be 1 to 100 printable characters");
    }
}

fn check_email(email: &str, errors: &mut FieldErrors) {
    if email.len() > 254 || !email.validate_email() {
        errors.add("email", "is not a valid email address");
    }
}

/// Creates an account with the `user` role. Answers the same whether or not the email was already
/// registered (no account enumeration), and takes comparable time either way.
///
/// # Errors
/// `BAD_USER_INPUT` naming each invalid field; the database fails.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: &AppState,
    account: NewAccount,
    request_id: Option<&str>,
) -> AppResult<()> {
    let email = users_service::normalize_email(&account.email);
    let password_hash = checked_password_hash(state, &account).await?;
    let txn = state.db.begin().await?;
    // The account and its verification mail are one change.
    match create_account_in(&txn, account, password_hash, &[USER_ROLE], false).await {
        Ok(user) => {
            let token = new_email_token(&txn, user.id, Purpose::VerifyEmail).await?;
            let mail = emails::verify_email(&state.settings.http.public_url, &user.email, &token);
            state
                .jobs
                .enqueue(&txn, SEND_EMAIL, &mail, request_id)
                .await?;
            txn.commit().await?;
            Ok(())
        }
        Err(AppError::Conflict(_)) => {
            txn.rollback().await?;
            state
                .jobs
                .enqueue(
                    &state.db,
                    SEND_EMAIL,
                    &emails::already_registered(&email),
                    request_id,
                )
                .await?;
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// What an emailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    fn ttl(self) -> chrono::Duration {
        match self {
            Self::VerifyEmail => chrono::Duration::hours(24),
            Self::ResetPassword => chrono::Duration::hours(1),
        }
    }
}

/// Stores (hashed) a new single-use token for `user_id` and returns it.
async fn new_email_token(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: Purpose,
) -> AppResult<String> {
    let (token, hash) = tokens::new_refresh_token();
    let now = Utc::now();
    email_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().to_owned()),
        token_hash: Set(hash),
        expires_at: Set(now + purpose.ttl()),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await?;
    Ok(token)
}

/// Spends a token: the user it was issued to, once, while it is fresh.
async fn use_email_token(
    db: &impl ConnectionTrait,
    token: &str,
    purpose: Purpose,
) -> AppResult<Uuid> {
    let invalid = || AppError::invalid("token", "is invalid, used or expired");
    let now = Utc::now();
    let found = email_tokens::Entity::find()
        .filter(email_tokens::Column::TokenHash.eq(tokens::hash_refresh_token(token)))
        .filter(email_tokens::Column::Purpose.eq(purpose.as_str()))
        .one(db)
        .await?
        .filter(|t| t.used_at.is_none() && t.expires_at > now)
        .ok_or_else(invalid)?;
    let spent = email_tokens::Entity::update_many()
        .col_expr(email_tokens::Column::UsedAt, Expr::value(now))
        .filter(email_tokens::Column::Id.eq(found.id))
        .filter(email_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    if spent.rows_affected != 1 {
        return Err(invalid());
    }
    Ok(found.user_id)
}

/// Stores a new token for `user` and queues the mail carrying it, in one transaction.
async fn mail_token(
    state: &AppState,
    user: &users::Model,
    purpose: Purpose,
    request_id: Option<&str>,
) -> AppResult<()> {
    let txn = state.db.begin().await?;
    let token = new_email_token(&txn, user.id, purpose).await?;
    let base = &state.settings.http.public_url;
    let mail = match purpose {
        Purpose::VerifyEmail => emails::verify_email(base, &user.email, &token),
        Purpose::ResetPassword => emails::reset_password(base, &user.email, &token),
    };
    state
        .jobs
        .enqueue(&txn, SEND_EMAIL, &mail, request_id)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Sends a new verification mail to the caller (nothing when already verified).
///
/// # Errors
/// The database fails.
pub async fn request_email_verification(
    state: &AppState,
    viewer: &AuthUser,
    request_id: Option<&str>,
) -> AppResult<()> {
    let user = users_service::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    if user.is_verified {
        return Ok(());
    }
    mail_token(state, &user, Purpose::VerifyEmail, request_id).await
}

/// Marks the token's user verified.
///
/// # Errors
/// `BAD_USER_INPUT` (field `token`) for an unknown, used or expired token.
pub async fn verify_email(state: &AppState, token: &str) -> AppResult<()> {
    let txn = state.db.begin().await?;
    let user_id = use_email_token(&txn, token, Purpose::VerifyEmail).await?;
    users::Entity::update_many()
        .col_expr(users::Column::IsVerified, Expr::value(true))
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Id.eq(user_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Mails a reset link when the address has an account. Answers the same either way, and sends
/// at most a few mails per address per hour.
///
/// # Errors
/// The database fails.
pub async fn request_password_reset(
    state: &AppState,
    email: &str,
    request_id: Option<&str>,
) -> AppResult<()> {
    let email = users_service::normalize_email(email);
    let Some(user) = users_service::find_by_email(&state.db, &email).await? else {
        return Ok(());
    };
    let window = state
        .stores
        .kv
        .sliding_window(
            &format!("auth:reset:{}", user.id),
            3,
            Duration::from_secs(3600),
        )
        .await;
    if window.is_ok_and(|w| !w.allowed) {
        tracing::warn!("password reset requests throttled for an account");
        return Ok(());
    }
    mail_token(state, &user, Purpose::ResetPassword, request_id).await
}

/// Sets a new password from a reset token; every session ends and every earlier token stops
/// working.
///
/// # Errors
/// `BAD_USER_INPUT` for a bad token or a password that breaks the policy.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    new_password: &str,
    actor: &Actor,
) -> AppResult<()> {
    if new_password.chars().count() > passwords::MAX_LENGTH {
        return Err(AppError::invalid("newPassword", "is too long"));
    }
    let hash = passwords::hash(new_password).await?;
    let txn = state.db.begin().await?;
    let user_id = use_email_token(&txn, token, Purpose::ResetPassword).await?;
    let user = users_service::find_by_id(&txn, user_id)
        .await?
        .ok_or_else(|| AppError::invalid("token", "is invalid, used or expired"))?;
    if let Some(problem) = passwords::policy_violation(
        new_password,
        &user.email,
        state.settings.auth.password_min_length,
    ) {
        return Err(AppError::invalid("newPassword", problem));
    }
    let next_epoch = user.session_epoch + 1;
    let mut active: users::ActiveModel = user.into();
    active.password_hash = Set(Some(hash));
    active.session_epoch = Set(next_epoch);
    active.updated_at = Set(Utc::now());
    let user = active.update(&txn).await?;
    revoke_all_refresh_tokens(&txn, user_id, None).await?;
    audit::record(
        &txn,
        &actor.as_user(user.id, &user.email),
        "auth.password_reset",
        Some(("user", user_id.to_string())),
        json!({}),
    )
    .await?;
    txn.commit().await?;
    invalidate_user(state, user_id).await;
    Ok(())
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
    let txn = state.db.begin().await?;
    let user = create_account_in(&txn, account, password_hash, roles, verified).await?;
    txn.commit().await?;
    Ok(user)
}

/// Checks every field of a new account, then hashes its password (before any lookup, so an
/// existing and a new email cost the same).
async fn checked_password_hash(state: &AppState, account: &NewAccount) -> AppResult<String> {
    let email = users_service::normalize_email(&account.email);
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

async fn create_account_in(
    txn: &DatabaseTransaction,
    account: NewAccount,
    password_hash: String,
    roles: &[&str],
    verified: bool,
) -> AppResult<users::Model> {
    let email = users_service::normalize_email(&account.email);
    if users_service::find_by_email(txn, &email).await?.is_some() {
        return Err(AppError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    let now = Utc::now();
    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email),
        username: Set(account.username),
        display_name: Set(account.display_name.map(|n| n.trim().to_owned())),
        password_hash: Set(Some(password_hash)),
        is_active: Set(true),
        is_verified: Set(verified),
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
        users_service::assign_role(txn, user.id, role).await?;
    }
    Ok(user)
}

/// Maps a unique-constraint violation to `CONFLICT`, on PostgreSQL and SQLite alike.
pub fn conflict_on_unique(message: &'static str) -> impl Fn(sea_orm::DbErr) -> AppError {
    move |error| match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict(message.into()),
        _ => AppError::Database(error),
    }
}

/// Signs in with email and password. Unknown email and wrong password answer identically; repeated
/// failures per account and per client IP are refused with `RATE_LIMITED` for a while.
///
/// # Errors
/// `UNAUTHENTICATED` for bad credentials, `FORBIDDEN` for a disabled account, `RATE_LIMITED`.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    two_factor_code: Option<&str>,
    client: &ClientInfo,
    actor: &Actor,
) -> AppResult<Tokens> {
    let email = users_service::normalize_email(email);
    let throttles = throttle_keys(&email, client);
    check_throttles(state, &throttles).await?;

    let user = users_service::find_by_email(&state.db, &email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    if !passwords::verify(password, hash).await {
        record_failure(state, &throttles).await;
        audit_failed_login(state, actor, &email, user.as_ref(), "password").await;
        return Err(AppError::InvalidCredentials);
    }
    let Some(user) = user else {
        return Err(AppError::InvalidCredentials);
    };
    if !user.is_active {
        return Err(AppError::Forbidden("this account is disabled".into()));
    }
    if user.is_banned_at(Utc::now()) {
        return Err(AppError::AccountBanned {
            until: user.banned_until,
        });
    }
    if super::two_factor::is_enabled(&state.db, user.id).await? {
        let Some(code) = two_factor_code.filter(|c| !c.trim().is_empty()) else {
            return Err(AppError::TwoFactorRequired);
        };
        if !super::two_factor::verify_second_factor(state, &user, code).await? {
            record_failure(state, &throttles).await;
            audit_failed_login(state, actor, &email, Some(&user), "two_factor").await;
            return Err(AppError::InvalidTwoFactorCode);
        }
    }
    let _ = state.stores.kv.delete(&throttles[0].0).await;

    let now = Utc::now();
    let txn = state.db.begin().await?;
    let mut active: users::ActiveModel = user.clone().into();
    active.last_login_at = Set(Some(now));
    let user = active.update(&txn).await?;
    let tokens = start_session(state, &txn, user, Uuid::now_v7(), client).await?;
    audit::record(
        &txn,
        &actor.as_user(tokens.user.id, &tokens.user.email),
        "auth.login",
        Some(("user", tokens.user.id.to_string())),
        json!({ "method": "password", "sessionId": tokens.session_id }),
    )
    .await?;
    txn.commit().await?;
    Ok(tokens)
}

/// Failed logins are audited outside any transaction (there is no change to roll back). The
/// entry's target is the account when the email matched one.
async fn audit_failed_login(
    state: &AppState,
    actor: &Actor,
    email: &str,
    user: Option<&users::Model>,
    stage: &str,
) {
    let target = user.map(|u| ("user", u.id.to_string()));
    let result = audit::record(
        &state.db,
        actor,
        "auth.login_failed",
        target,
        json!({ "email": email, "stage": stage }),
    )
    .await;
    if let Err(error) = result {
        tracing::warn!(error = %error, "cannot audit a failed login");
    }
}

/// `(key, factor)` pairs: per account (`LOGIN_MAX_FAILURES`), and per client IP (ten times that).
fn throttle_keys(email: &str, client: &ClientInfo) -> Vec<(String, u64)> {
    let mut keys = vec![(format!("auth:fail:account:{email}"), 1)];
    if let Some(ip) = client.ip {
        keys.push((format!("auth:fail:ip:{ip}"), 10));
    }
    keys
}

async fn check_throttles(state: &AppState, keys: &[(String, u64)]) -> AppResult<()> {
    let max = state.settings.auth.login_max_failures;
    for (key, factor) in keys {
        let count = match state.stores.kv.get(key).await {
            Ok(value) => value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            // Throttling fails open: a store outage must not lock everyone out.
            Err(error) => {
                tracing::warn!(error = %error, "login throttle unavailable");
                0
            }
        };
        if count >= max.saturating_mul(*factor) {
            let retry = state
                .stores
                .kv
                .ttl(key)
                .await
                .ok()
                .flatten()
                .unwrap_or(state.settings.auth.login_failure_window);
            return Err(AppError::RateLimited {
                retry_after_secs: retry.as_secs().max(1),
            });
        }
    }
    Ok(())
}

async fn record_failure(state: &AppState, keys: &[(String, u64)]) {
    let window = state.settings.auth.login_failure_window;
    for (key, _) in keys {
        if let Err(error) = state.stores.kv.increment(key, 1, Some(window)).await {
            tracing::warn!(error = %error, "cannot record a failed login");
        }
    }
}

/// Issues the first refresh token of a session (or the next one of `family_id`) and an access
/// token.
pub(super) async fn start_session(
    state: &AppState,
    db: &impl ConnectionTrait,
    user: users::Model,
    family_id: Uuid,
    client: &ClientInfo,
) -> AppResult<Tokens> {
    let refresh = new_refresh_row(state, user.id, family_id, client)?;
    refresh.row.insert(db).await?;
    let (access_token, access_expires_at) =
        tokens::issue_access_token(&state.settings, user.id, family_id, user.session_epoch)?;
    Ok(Tokens {
        access_token,
        access_expires_at,
        refresh_token: refresh.token,
        refresh_expires_at: refresh.expires_at,
        session_id: family_id,
        user,
    })
}

/// A new refresh token (returned once, stored hashed) for a session, and its row.
struct NewRefresh {
    token: String,
    id: Uuid,
    expires_at: DateTime<Utc>,
    row: refresh_tokens::ActiveModel,
}

fn new_refresh_row(
    state: &AppState,
    user_id: Uuid,
    family_id: Uuid,
    client: &ClientInfo,
) -> AppResult<NewRefresh> {
    let (token, hash) = tokens::new_refresh_token();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(state.settings.auth.refresh_token_ttl)
        .map_err(|e| AppError::Internal(e.into()))?;
    let id = Uuid::now_v7();
    let expires_at = now + ttl;
    let row = refresh_tokens::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_hash: Set(hash),
        family_id: Set(family_id),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        replaced_by: Set(None),
        user_agent: Set(client.user_agent.as_deref().map(|ua| truncate(ua, 255))),
        ip: Set(client.ip.map(|ip| ip.to_string())),
        created_at: Set(now),
        last_used_at: Set(None),
    };
    Ok(NewRefresh {
        token,
        id,
        expires_at,
        row,
    })
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}

/// Exchanges a refresh token for a new pair. Each refresh token works once: presenting one that
/// was already used revokes its whole session (family), since it must have been stolen.
///
/// # Errors
/// `UNAUTHENTICATED` for unknown, used, revoked or expired tokens and unusable accounts.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: &AppState,
    refresh_token: &str,
    client: &ClientInfo,
) -> AppResult<Tokens> {
    let hash = tokens::hash_refresh_token(refresh_token);
    let Some(current) = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(hash))
        .one(&state.db)
        .await?
    else {
        return Err(AppError::Unauthenticated);
    };
    let now = Utc::now();
    if current.revoked_at.is_some() {
        tracing::warn!(session_id = %current.family_id, "refresh token reused; revoking the session");
        revoke_family(state, current.family_id).await?;
        return Err(AppError::Unauthenticated);
    }
    if current.expires_at <= now {
        return Err(AppError::Unauthenticated);
    }
    let user = users_service::find_by_id(&state.db, current.user_id)
        .await?
        .filter(|u| u.is_active && !u.is_banned_at(now))
        .ok_or(AppError::Unauthenticated)?;

    let refresh = new_refresh_row(state, user.id, current.family_id, client)?;
    let txn = state.db.begin().await?;
    // Only one concurrent refresh with the same token can win this update.
    let rotated = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .col_expr(refresh_tokens::Column::ReplacedBy, Expr::value(refresh.id))
        .col_expr(refresh_tokens::Column::LastUsedAt, Expr::value(now))
        .filter(refresh_tokens::Column::Id.eq(current.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if rotated.rows_affected != 1 {
        txn.rollback().await?;
        revoke_family(state, current.family_id).await?;
        return Err(AppError::Unauthenticated);
    }
    refresh.row.insert(&txn).await?;
    txn.commit().await?;

    let (access_token, access_expires_at) = tokens::issue_access_token(
        &state.settings,
        user.id,
        current.family_id,
        user.session_epoch,
    )?;
    Ok(Tokens {
        access_token,
        access_expires_at,
        refresh_token: refresh.token,
        refresh_expires_at: refresh.expires_at,
        session_id: current.family_id,
        user,
    })
}

/// Revokes every token of a session and kills its access tokens at once.
async fn revoke_family(state: &AppState, family_id: Uuid) -> AppResult<u64> {
    let result = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_tokens::Column::FamilyId.eq(family_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    mark_session_revoked(state, family_id).await;
    Ok(result.rows_affected)
}

async fn mark_session_revoked(state: &AppState, family_id: Uuid) {
    let ttl = state.settings.auth.access_token_ttl + Duration::from_secs(60);
    if let Err(error) = state
        .stores
        .kv
        .set(&revoked_session_key(family_id), b"1", Some(ttl))
        .await
    {
        tracing::warn!(error = %error, "cannot mark a session revoked in the shared store");
    }
}

/// Ends the caller's current session.
///
/// # Errors
/// The database fails.
pub async fn logout(state: &AppState, user: &AuthUser) -> AppResult<()> {
    revoke_family(state, user.session_id).await?;
    Ok(())
}

/// Ends every session of the user and invalidates every access token issued so far.
///
/// # Errors
/// The database fails.
pub async fn logout_everywhere(state: &AppState, user_id: Uuid, actor: &Actor) -> AppResult<()> {
    let txn = state.db.begin().await?;
    bump_epoch(&txn, user_id).await?;
    revoke_all_refresh_tokens(&txn, user_id, None).await?;
    audit::record(
        &txn,
        actor,
        "auth.logout_all",
        Some(("user", user_id.to_string())),
        json!({}),
    )
    .await?;
    txn.commit().await?;
    invalidate_user(state, user_id).await;
    Ok(())
}

async fn bump_epoch(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    users::Entity::update_many()
        .col_expr(
            users::Column::SessionEpoch,
            sea_orm::sea_query::ExprTrait::add(Expr::col(users::Column::SessionEpoch), 1),
        )
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes every refresh token of a user on `db` (pass the transaction of the change that needs
/// it); bump the epoch too, or their access tokens live until they expire.
///
/// # Errors
/// The database fails.
pub async fn revoke_sessions_of(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    revoke_all_refresh_tokens(db, user_id, None).await
}

async fn revoke_all_refresh_tokens(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    except_family: Option<Uuid>,
) -> AppResult<()> {
    let mut update = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null());
    if let Some(family) = except_family {
        update = update.filter(refresh_tokens::Column::FamilyId.ne(family));
    }
    update.exec(db).await?;
    Ok(())
}

/// Changes the password after checking the current one. Every other session ends and every
/// access token issued before stops working; the caller's session continues with the returned
/// tokens.
///
/// # Errors
/// `UNAUTHENTICATED` for a wrong current password, `BAD_USER_INPUT` for a new one that breaks the
/// policy.
pub async fn change_password(
    state: &AppState,
    viewer: &AuthUser,
    current_password: &str,
    new_password: &str,
    client: &ClientInfo,
    actor: &Actor,
) -> AppResult<Tokens> {
    let user = users_service::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    if !passwords::verify(current_password, user.password_hash.as_deref()).await {
        return Err(AppError::invalid(
            "currentPassword",
            "is not your current password",
        ));
    }
    if let Some(problem) = passwords::policy_violation(
        new_password,
        &user.email,
        state.settings.auth.password_min_length,
    ) {
        return Err(AppError::invalid("newPassword", problem));
    }
    let hash = passwords::hash(new_password).await?;

    let txn = state.db.begin().await?;
    let next_epoch = user.session_epoch + 1;
    let mut active: users::ActiveModel = user.into();
    active.password_hash = Set(Some(hash));
    active.session_epoch = Set(next_epoch);
    active.updated_at = Set(Utc::now());
    let user = active.update(&txn).await?;
    revoke_all_refresh_tokens(&txn, user.id, None).await?;
    let tokens = start_session(state, &txn, user, viewer.session_id, client).await?;
    audit::record(
        &txn,
        actor,
        "auth.password_change",
        Some(("user", viewer.id.to_string())),
        json!({}),
    )
    .await?;
    txn.commit().await?;
    invalidate_user(state, viewer.id).await;
    Ok(tokens)
}

/// A session of the caller: the live refresh token of a family.
pub struct SessionInfo {
    pub id: Uuid,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub current: bool,
}

/// # Errors
/// The database fails.
pub async fn sessions(state: &AppState, viewer: &AuthUser) -> AppResult<Vec<SessionInfo>> {
    let live = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(viewer.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(refresh_tokens::Column::CreatedAt)
        .all(&state.db)
        .await?;
    Ok(live
        .into_iter()
        .map(|t| SessionInfo {
            id: t.family_id,
            user_agent: t.user_agent,
            ip: t.ip,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            current: t.family_id == viewer.session_id,
        })
        .collect())
}

/// Ends one of the caller's sessions; `NOT_FOUND` when it is not theirs or already ended.
///
/// # Errors
/// `NOT_FOUND`; the database fails.
pub async fn revoke_session(
    state: &AppState,
    viewer: &AuthUser,
    session_id: Uuid,
) -> AppResult<()> {
    let owned = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::FamilyId.eq(session_id))
        .filter(refresh_tokens::Column::UserId.eq(viewer.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .one(&state.db)
        .await?;
    if owned.is_none() {
        return Err(AppError::NotFound("no such active session".into()));
    }
    revoke_family(state, session_id).await?;
    Ok(())
}

/// Turns an access token into the caller, checking the user's current state: a token of a
/// deactivated or banned user, of an ended session, or issued before the user's latest
/// "log out everywhere" or password change fails. The state comes from the shared store when
/// cached there, so most requests make no database round trip.
///
/// # Errors
/// `UNAUTHENTICATED`.
pub async fn authenticate(state: &AppState, token: &str) -> AppResult<AuthUser> {
    let claims = tokens::verify_access_token(&state.settings, token)?;
    let user_state = user_state(state, claims.sub)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    if !user_state.usable(Utc::now()) || user_state.epoch != claims.epoch {
        return Err(AppError::Unauthenticated);
    }
    match state.stores.kv.get(&revoked_session_key(claims.sid)).await {
        Ok(Some(_)) => return Err(AppError::Unauthenticated),
        Ok(None) => {}
        Err(error) => tracing::warn!(error = %error, "cannot check session revocation"),
    }
    Ok(AuthUser {
        id: claims.sub,
        email: user_state.email,
        session_id: claims.sid,
        roles: user_state.roles.into_iter().collect(),
        permissions: user_state.permissions.into_iter().collect(),
    })
}

async fn user_state(state: &AppState, user_id: Uuid) -> AppResult<Option<UserState>> {
    let key = user_state_key(user_id);
    match state.stores.kv.get(&key).await {
        Ok(Some(bytes)) => {
            if let Ok(cached) = serde_json::from_slice::<UserState>(&bytes) {
                return Ok(Some(cached));
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(error = %error, "user state cache unavailable"),
    }
    let Some(user) = users_service::find_by_id(&state.db, user_id).await? else {
        return Ok(None);
    };
    let access = users_service::load_access(&state.db, user_id).await?;
    let fresh = UserState {
        email: user.email.clone(),
        epoch: user.session_epoch,
        active: user.is_active,
        banned: user.banned_at.is_some(),
        banned_until: user.banned_until.map(|t| t.timestamp()),
        roles: access.roles.into_iter().collect(),
        permissions: access.permissions.into_iter().collect(),
    };
    if let Ok(bytes) = serde_json::to_vec(&fresh) {
        let _ = state
            .stores
            .kv
            .set(&key, &bytes, Some(USER_STATE_TTL))
            .await;
    }
    Ok(Some(fresh))
}

/// Drops the cached auth state of a user; call after any change to their status, epoch or roles.
pub async fn invalidate_user(state: &AppState, user_id: Uuid) {
    if let Err(error) = state.stores.kv.delete(&user_state_key(user_id)).await {
        tracing::warn!(error = %error, "cannot invalidate cached user state");
    }
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
    invalidate_user(state, user_id).await;
    Ok(())
}
