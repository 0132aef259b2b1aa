//! Single-use tokens sent by mail (email verification, password reset): random, stored only as a
//! SHA-256 hash, expiring, spent at most once.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set,
};
use uuid::Uuid;

use crate::entities::email_tokens;
use crate::error::{AppError, AppResult};
use crate::identity::tokens;

/// What an emailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
///
/// # Errors
/// The database fails.
pub async fn issue(
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
///
/// # Errors
/// `BAD_USER_INPUT` (field `token`) for an unknown, used or expired token.
pub async fn spend(db: &impl ConnectionTrait, token: &str, purpose: Purpose) -> AppResult<Uuid> {
    let invalid = || AppError::invalid("token", "is invalid, used or expired");
    // Anything that is not a token we issue is refused before it reaches the database.
    if !tokens::is_token_shaped(token) {
        return Err(invalid());
    }
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
