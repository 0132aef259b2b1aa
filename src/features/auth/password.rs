//! Changing a password: with the current one (`changePassword`) or with a mailed reset token
//! (`requestPasswordReset` → `resetPassword`). Either way every session ends.

use chrono::Utc;
use sea_orm::{ActiveModelTrait as _, DatabaseTransaction, Set};
use serde_json::json;

use super::email_tokens::{self, Purpose};
use super::mail::{self, AuthMail};
use super::notices::{self, Notice};
use crate::entities::users;
use crate::error::{AppError, AppResult};
use crate::features::audit::service as audit;
use crate::identity::sessions::{self, Tokens};
use crate::identity::{
    Actor, AuthUser, ClientInfo, SessionEnd, accounts, passwords, sessions_ended,
};
use crate::state::AppState;

/// Queues a reset mail for the address. The request does the same work whether or not the
/// address has an account (the job decides, and caps mails per recipient), so neither the answer
/// nor its timing tells them apart.
///
/// # Errors
/// The database fails.
#[tracing::instrument(name = "auth.request_password_reset", skip_all)]
pub async fn request_reset(
    state: &AppState,
    email: &str,
    request_id: Option<&str>,
) -> AppResult<()> {
    let email = accounts::normalize_email(email);
    if email.len() > 254 {
        return Ok(());
    }
    mail::enqueue(state, &state.db, &AuthMail::Reset { email }, request_id).await
}

/// Sets the new password on `txn` and ends every session of the user (the epoch moves on, every
/// refresh token is revoked). Call [`sessions_ended`] after the commit.
async fn replace(
    txn: &DatabaseTransaction,
    user: users::Model,
    hash: String,
) -> AppResult<users::Model> {
    let user_id = user.id;
    let mut active: users::ActiveModel = user.into();
    active.password_hash = Set(Some(hash));
    active.updated_at = Set(Utc::now());
    active.update(txn).await?;
    sessions::end_all_in(txn, user_id).await?;
    accounts::find_by_id(txn, user_id)
        .await?
        .ok_or(AppError::Unauthenticated)
}

fn check_policy(state: &AppState, password: &str, email: &str) -> AppResult<()> {
    match passwords::policy_violation(password, email, state.settings.auth.password_min_length) {
        Some(problem) => Err(AppError::invalid("newPassword", problem)),
        None => Ok(()),
    }
}

/// Sets a new password from a reset token; every session ends and every earlier token stops
/// working.
///
/// # Errors
/// `BAD_USER_INPUT` for a bad token or a password that breaks the policy.
#[tracing::instrument(name = "auth.reset_password", skip_all)]
pub async fn reset(
    state: &AppState,
    token: &str,
    new_password: &str,
    actor: &Actor,
) -> AppResult<()> {
    if new_password.chars().count() > passwords::MAX_LENGTH {
        return Err(AppError::invalid("newPassword", "is too long"));
    }
    let hash = passwords::hash(new_password).await?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let user_id = email_tokens::spend(&txn, token, Purpose::ResetPassword).await?;
    let user = accounts::find_by_id(&txn, user_id)
        .await?
        .ok_or_else(|| AppError::invalid("token", "is invalid, used or expired"))?;
    check_policy(state, new_password, &user.email)?;
    let user = replace(&txn, user, hash).await?;
    audit::record(
        &txn,
        &actor.as_user(user.id, &user.email),
        "auth.password_reset",
        Some(("user", user_id.to_string())),
        json!({}),
    )
    .await?;
    let notice = notices::send(state, &txn, user_id, &Notice::PasswordReset, actor).await?;
    txn.commit().await?;
    sessions_ended(state, user_id, SessionEnd::PasswordChanged).await;
    notice.publish(state).await;
    Ok(())
}

/// Changes the password after checking the current one. Every session ends and every access
/// token issued before stops working; the caller's session continues with the returned tokens.
///
/// # Errors
/// `BAD_USER_INPUT` for a wrong current password or a new one that breaks the policy.
#[tracing::instrument(name = "auth.change_password", skip_all, fields(user = %viewer.id))]
pub async fn change(
    state: &AppState,
    viewer: &AuthUser,
    current_password: &str,
    new_password: &str,
    client: &ClientInfo,
    actor: &Actor,
) -> AppResult<Tokens> {
    let user = accounts::find_by_id(&state.db, viewer.id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    if !passwords::verify(current_password, user.password_hash.as_deref()).await {
        return Err(AppError::invalid(
            "currentPassword",
            "is not your current password",
        ));
    }
    check_policy(state, new_password, &user.email)?;
    let hash = passwords::hash(new_password).await?;

    let txn = crate::infra::db::begin(&state.db).await?;
    let user = replace(&txn, user, hash).await?;
    let tokens = sessions::start(state, &txn, user, viewer.session_id, client).await?;
    audit::record(
        &txn,
        actor,
        "auth.password_change",
        Some(("user", viewer.id.to_string())),
        json!({}),
    )
    .await?;
    let notice = notices::send(state, &txn, viewer.id, &Notice::PasswordChanged, actor).await?;
    txn.commit().await?;
    sessions_ended(state, viewer.id, SessionEnd::PasswordChanged).await;
    notice.publish(state).await;
    Ok(tokens)
}
