//! TOTP two-factor authentication (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step of skew) with
//! ten single-use backup codes. Secrets are encrypted at rest; each code is accepted once.

use chrono::Utc;
use rand::RngCore as _;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use sha2::{Digest as _, Sha256};
use totp_rs::{Builder, Secret, Totp};
use uuid::Uuid;

use super::notices::{self, Notice};
use crate::entities::{totp_backup_codes, user_totp, users};
use crate::error::{AppError, AppResult};
use crate::features::audit::service as audit;
use crate::identity::accounts::{self as users_service, two_factor_enabled as is_enabled};
use crate::identity::{Actor, AuthUser, passwords};
use crate::state::AppState;
use serde_json::json;

pub const BACKUP_CODES: usize = 10;
const ISSUER: &str = "multipult";

pub struct Setup {
    /// Base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…`, for QR codes.
    pub otpauth_uri: String,
}

fn totp(secret: Secret, account: &str) -> AppResult<Totp> {
    Builder::new()
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| AppError::Internal(anyhow::anyhow!("totp: {e}")))
}

fn hash_code(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    hex::encode(Sha256::digest(normalized.as_bytes()))
}

fn new_backup_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// Starts enrolment: a new secret, stored encrypted and unconfirmed (replacing an unconfirmed one).
///
/// # Errors
/// `CONFLICT` when two-factor is already on.
#[tracing::instrument(name = "auth.two_factor.enable", skip_all, fields(user = %viewer.id))]
pub async fn enable(state: &AppState, viewer: &AuthUser) -> AppResult<Setup> {
    let user = users_service::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let existing = user_totp::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?;
    if existing.as_ref().is_some_and(|t| t.confirmed_at.is_some()) {
        return Err(AppError::Conflict(
            "two-factor authentication is already on".into(),
        ));
    }
    let secret = Secret::generate();
    let base32 = secret.to_base32();
    let otpauth_uri = totp(secret, &user.email)?
        .to_url()
        .map_err(|e| AppError::Internal(anyhow::anyhow!("totp url: {e}")))?;
    let row = user_totp::ActiveModel {
        user_id: Set(user.id),
        secret_encrypted: Set(state.secret_box.encrypt(base32.as_bytes())?),
        confirmed_at: Set(None),
        last_used_step: Set(None),
        created_at: Set(Utc::now()),
    };
    let txn = crate::infra::db::begin(&state.db).await?;
    user_totp::Entity::delete_by_id(user.id).exec(&txn).await?;
    row.insert(&txn).await?;
    txn.commit().await?;
    Ok(Setup {
        secret: base32,
        otpauth_uri,
    })
}

/// Completes enrolment with a first valid code; returns the backup codes (shown once).
///
/// # Errors
/// `NOT_FOUND` without a pending enrolment, `BAD_USER_INPUT` for a wrong code.
#[tracing::instrument(name = "auth.two_factor.confirm", skip_all, fields(user = %viewer.id))]
pub async fn confirm(
    state: &AppState,
    viewer: &AuthUser,
    code: &str,
    actor: &Actor,
) -> AppResult<Vec<String>> {
    let user = users_service::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let pending = user_totp::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?
        .filter(|t| t.confirmed_at.is_none())
        .ok_or_else(|| {
            AppError::NotFound("no two-factor enrolment to confirm; call enableTwoFactor".into())
        })?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let step = accept_totp(state, &user, &pending, code)
        .await?
        .ok_or_else(|| {
            AppError::invalid("code", "is not the current code of your authenticator")
        })?;
    let now = Utc::now();
    user_totp::Entity::update_many()
        .col_expr(user_totp::Column::ConfirmedAt, Expr::value(now))
        .col_expr(user_totp::Column::LastUsedStep, Expr::value(step))
        .filter(user_totp::Column::UserId.eq(user.id))
        .exec(&txn)
        .await?;
    totp_backup_codes::Entity::delete_many()
        .filter(totp_backup_codes::Column::UserId.eq(user.id))
        .exec(&txn)
        .await?;
    let codes: Vec<String> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
    totp_backup_codes::Entity::insert_many(codes.iter().map(|code| {
        totp_backup_codes::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            code_hash: Set(hash_code(code)),
            used_at: Set(None),
            created_at: Set(now),
        }
    }))
    .exec(&txn)
    .await?;
    audit::record(
        &txn,
        actor,
        "auth.two_factor_enabled",
        Some(("user", user.id.to_string())),
        json!({}),
    )
    .await?;
    let notice = notices::send(state, &txn, user.id, &Notice::TwoFactorEnabled, actor).await?;
    txn.commit().await?;
    notice.publish(state).await;
    Ok(codes)
}

/// The time step a code matches, if it matches one not used before (the step is not yet stored).
async fn accept_totp(
    state: &AppState,
    user: &users::Model,
    row: &user_totp::Model,
    code: &str,
) -> AppResult<Option<i64>> {
    let plain = state.secret_box.decrypt(&row.secret_encrypted)?;
    let base32 = String::from_utf8(plain).map_err(|e| AppError::Internal(e.into()))?;
    let secret = Secret::try_from_base32(base32)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("totp secret: {e:?}")))?;
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let step = totp(secret, &user.email)?
        .check(code.trim(), now)
        .and_then(|s| i64::try_from(s).ok());
    Ok(step.filter(|s| row.last_used_step.is_none_or(|last| *s > last)))
}

/// Checks a TOTP code (each step once) or an unused backup code (spent now).
///
/// # Errors
/// The database fails; `false` is a wrong code.
pub async fn verify_second_factor(
    state: &AppState,
    user: &users::Model,
    code: &str,
) -> AppResult<bool> {
    let Some(row) = user_totp::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?
        .filter(|t| t.confirmed_at.is_some())
    else {
        return Ok(false);
    };
    if let Some(step) = accept_totp(state, user, &row, code).await? {
        // Only one request can move the step forward: a replayed code loses.
        let moved = user_totp::Entity::update_many()
            .col_expr(user_totp::Column::LastUsedStep, Expr::value(step))
            .filter(user_totp::Column::UserId.eq(user.id))
            .filter(
                sea_orm::Condition::any()
                    .add(user_totp::Column::LastUsedStep.is_null())
                    .add(user_totp::Column::LastUsedStep.lt(step)),
            )
            .exec(&state.db)
            .await?;
        return Ok(moved.rows_affected == 1);
    }
    let spent = totp_backup_codes::Entity::update_many()
        .col_expr(totp_backup_codes::Column::UsedAt, Expr::value(Utc::now()))
        .filter(totp_backup_codes::Column::UserId.eq(user.id))
        .filter(totp_backup_codes::Column::CodeHash.eq(hash_code(code)))
        .filter(totp_backup_codes::Column::UsedAt.is_null())
        .exec(&state.db)
        .await?;
    Ok(spent.rows_affected >= 1)
}

/// Turns two-factor off after checking the password and a current (or backup) code.
///
/// # Errors
/// `BAD_USER_INPUT` for a wrong password or code, `NOT_FOUND` when it is off.
#[tracing::instrument(name = "auth.two_factor.disable", skip_all, fields(user = %viewer.id))]
pub async fn disable(
    state: &AppState,
    viewer: &AuthUser,
    password: &str,
    code: &str,
    actor: &Actor,
) -> AppResult<()> {
    let user = users_service::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    if !is_enabled(&state.db, user.id).await? {
        return Err(AppError::NotFound(
            "two-factor authentication is off".into(),
        ));
    }
    if !passwords::verify(password, user.password_hash.as_deref()).await {
        return Err(AppError::invalid("password", "is not your password"));
    }
    if !verify_second_factor(state, &user, code).await? {
        return Err(AppError::invalid("code", "is not a current or backup code"));
    }
    let txn = crate::infra::db::begin(&state.db).await?;
    totp_backup_codes::Entity::delete_many()
        .filter(totp_backup_codes::Column::UserId.eq(user.id))
        .exec(&txn)
        .await?;
    user_totp::Entity::delete_by_id(user.id).exec(&txn).await?;
    audit::record(
        &txn,
        actor,
        "auth.two_factor_disabled",
        Some(("user", user.id.to_string())),
        json!({}),
    )
    .await?;
    let notice = notices::send(state, &txn, user.id, &Notice::TwoFactorDisabled, actor).await?;
    txn.commit().await?;
    notice.publish(state).await;
    Ok(())
}

/// Re-seals every stored TOTP secret that is not sealed with the current `SECRETS_KEY`
/// (`multipult secrets rotate`), one row at a time (each its own statement, so a crash leaves
/// every row readable).
pub fn reseal(state: AppState) -> futures_util::future::BoxFuture<'static, AppResult<(u64, u64)>> {
    Box::pin(async move {
        let rows = user_totp::Entity::find().all(&state.db).await?;
        let total = rows.len() as u64;
        let mut resealed = 0;
        for row in rows {
            if !state.secret_box.is_stale(&row.secret_encrypted) {
                continue;
            }
            let sealed = state.secret_box.reseal(&row.secret_encrypted)?;
            user_totp::Entity::update_many()
                .col_expr(user_totp::Column::SecretEncrypted, Expr::value(sealed))
                .filter(user_totp::Column::UserId.eq(row.user_id))
                .filter(user_totp::Column::SecretEncrypted.eq(row.secret_encrypted))
                .exec(&state.db)
                .await?;
            resealed += 1;
        }
        Ok((resealed, total))
    })
}
