//! Registration and email verification.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use super::email_tokens::{self, Purpose};
use super::mail::{self, AuthMail};
use crate::entities::users;
use crate::error::{AppError, AppResult};
use crate::identity::accounts::{self, NewAccount};
use crate::identity::permissions::USER_ROLE;
use crate::identity::{AuthUser, user_changed, user_created};
use crate::state::AppState;

/// Creates an account with the `user` role and queues its verification mail. Answers the same
/// whether or not the email was already registered (no account enumeration): the owner of an
/// existing address gets a notice instead, within the per-recipient mail cap.
///
/// # Errors
/// `BAD_USER_INPUT` naming each invalid field; the database fails.
#[tracing::instrument(name = "auth.register", skip_all)]
pub async fn register(
    state: &AppState,
    account: NewAccount,
    request_id: Option<&str>,
) -> AppResult<()> {
    let email = accounts::normalize_email(&account.email);
    let password_hash = accounts::checked_password_hash(state, &account).await?;
    let txn = crate::infra::db::begin(&state.db).await?;
    // The account and its verification mail are one change.
    match accounts::create_account_in(&txn, account, password_hash, &[USER_ROLE], false).await {
        Ok(user) => {
            mail::enqueue(
                state,
                &txn,
                &AuthMail::Verify { user_id: user.id },
                request_id,
            )
            .await?;
            txn.commit().await?;
            user_created(state).await;
            state.metrics.record(|| {
                metrics::counter!("auth_signups_total", "method" => "password").increment(1);
            });
            Ok(())
        }
        Err(AppError::Conflict(_)) => {
            txn.rollback().await?;
            mail::enqueue(
                state,
                &state.db,
                &AuthMail::AlreadyRegistered { email },
                request_id,
            )
            .await?;
            // The same work as a new account (no timing difference tells them apart).
            user_created(state).await;
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// Sends a new verification mail to the caller (nothing when already verified).
///
/// # Errors
/// The database fails.
#[tracing::instrument(name = "auth.request_email_verification", skip_all, fields(user = %viewer.id))]
pub async fn request_email_verification(
    state: &AppState,
    viewer: &AuthUser,
    request_id: Option<&str>,
) -> AppResult<()> {
    mail::enqueue(
        state,
        &state.db,
        &AuthMail::Verify { user_id: viewer.id },
        request_id,
    )
    .await
}

/// Marks the token's user verified.
///
/// # Errors
/// `BAD_USER_INPUT` (field `token`) for an unknown, used or expired token.
#[tracing::instrument(name = "auth.verify_email", skip_all)]
pub async fn verify_email(state: &AppState, token: &str) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let user_id = email_tokens::spend(&txn, token, Purpose::VerifyEmail).await?;
    users::Entity::update_many()
        .col_expr(users::Column::IsVerified, Expr::value(true))
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Id.eq(user_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    user_changed(state, user_id).await;
    Ok(())
}
