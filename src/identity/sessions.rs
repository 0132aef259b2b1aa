//! Sessions: a family of rotating refresh tokens plus the short-lived access tokens issued from
//! it. Starting, rotating, listing and ending them.
//!
//! Ending a session is durable: the refresh tokens are revoked in the database and a
//! `revoked_sessions` row (kept until the last access token of the session has expired) makes
//! authentication refuse its access tokens, on every instance, across restarts and store outages.
//! Ending every session of a user bumps the user's session epoch instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set,
};
use uuid::Uuid;

use super::accounts;
use super::authenticate::sessions_ended;
use super::events::SessionEnd;
use super::tokens;
use super::viewer::{AuthUser, ClientInfo};
use crate::entities::{refresh_tokens, revoked_sessions, users};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// A signed-in session: what `login` and `refreshSession` hand back.
pub struct Tokens {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub session_id: Uuid,
    pub user: users::Model,
}

/// Issues the first refresh token of a session (or the next one of `family_id`) and an access
/// token, on `db` (the transaction of the sign-in).
///
/// # Errors
/// The database fails.
pub async fn start(
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
        user_agent: Set(client
            .user_agent
            .as_deref()
            .map(|ua| ua.chars().take(255).collect())),
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

/// Exchanges a refresh token for a new pair. Each refresh token works once: presenting one that
/// was already used ends its whole session (family), since it must have been stolen.
///
/// # Errors
/// `UNAUTHENTICATED` for unknown, used, revoked or expired tokens and unusable accounts.
#[tracing::instrument(name = "sessions.refresh", skip_all)]
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
        tracing::warn!(session_id = %current.family_id, "refresh token reused; ending the session");
        end(state, current.user_id, current.family_id).await?;
        return Err(AppError::Unauthenticated);
    }
    if current.expires_at <= now {
        return Err(AppError::Unauthenticated);
    }
    let user = accounts::find_by_id(&state.db, current.user_id)
        .await?
        .filter(|u| u.is_active && !u.is_banned_at(now))
        .ok_or(AppError::Unauthenticated)?;

    let refresh = new_refresh_row(state, user.id, current.family_id, client)?;
    let txn = crate::infra::db::begin(&state.db).await?;
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
        end(state, current.user_id, current.family_id).await?;
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

/// How long a revocation record must live: until the last access token it covers has expired.
fn revocation_lifetime(state: &AppState) -> chrono::Duration {
    chrono::Duration::from_std(state.settings.auth.access_token_ttl + Duration::from_secs(60))
        .unwrap_or(chrono::Duration::MAX)
}

/// Ends one session for good: its refresh tokens are revoked and its access tokens refused from
/// the next request on, on every instance (and sockets using it close).
///
/// # Errors
/// The database fails.
#[tracing::instrument(name = "sessions.end", skip_all, fields(user = %user_id, session = %session_id))]
pub async fn end(state: &AppState, user_id: Uuid, session_id: Uuid) -> AppResult<()> {
    let now = Utc::now();
    let txn = crate::infra::db::begin(&state.db).await?;
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::FamilyId.eq(session_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    revoked_sessions::Entity::insert(revoked_sessions::ActiveModel {
        session_id: Set(session_id),
        user_id: Set(user_id),
        revoked_at: Set(now),
        expires_at: Set(now + revocation_lifetime(state)),
    })
    .on_conflict(
        OnConflict::column(revoked_sessions::Column::SessionId)
            .update_columns([
                revoked_sessions::Column::RevokedAt,
                revoked_sessions::Column::ExpiresAt,
            ])
            .to_owned(),
    )
    .exec(&txn)
    .await?;
    txn.commit().await?;
    sessions_ended(state, user_id, SessionEnd::SessionRevoked).await;
    Ok(())
}

/// Ends every session of a user on `db` (pass the transaction of the change that needs it): the
/// session epoch moves on, so every access token issued so far stops working, and every refresh
/// token is revoked. Call [`super::user_changed`] (or [`sessions_ended`]) after the commit.
///
/// # Errors
/// The database fails.
pub async fn end_all_in(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    users::Entity::update_many()
        .col_expr(
            users::Column::SessionEpoch,
            Expr::col(users::Column::SessionEpoch).add(1),
        )
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revocation records whose access tokens have all expired; the number removed.
///
/// # Errors
/// The database fails.
pub async fn purge_expired_revocations(db: &impl ConnectionTrait) -> AppResult<u64> {
    Ok(revoked_sessions::Entity::delete_many()
        .filter(revoked_sessions::Column::ExpiresAt.lt(Utc::now()))
        .exec(db)
        .await?
        .rows_affected)
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

/// The caller's live sessions, newest first.
///
/// # Errors
/// The database fails.
#[tracing::instrument(name = "sessions.list", skip_all, fields(user = %viewer.id))]
pub async fn list(state: &AppState, viewer: &AuthUser) -> AppResult<Vec<SessionInfo>> {
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
pub async fn end_own(state: &AppState, viewer: &AuthUser, session_id: Uuid) -> AppResult<()> {
    let owned = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::FamilyId.eq(session_id))
        .filter(refresh_tokens::Column::UserId.eq(viewer.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .one(&state.db)
        .await?;
    if owned.is_none() {
        return Err(AppError::NotFound("no such active session".into()));
    }
    end(state, viewer.id, session_id).await
}

/// Live sessions (unrevoked, unexpired refresh tokens) of a user.
///
/// # Errors
/// The database fails.
pub async fn count_live(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<u64> {
    use sea_orm::PaginatorTrait as _;
    Ok(refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(Utc::now()))
        .count(db)
        .await?)
}

/// Sessions that can still be refreshed: refresh tokens neither revoked, replaced nor expired
/// (one per live session), for the `auth_active_sessions` gauge.
///
/// # Errors
/// The database fails.
pub async fn count_active(db: &sea_orm::DatabaseConnection) -> AppResult<u64> {
    use sea_orm::PaginatorTrait as _;
    Ok(refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ReplacedBy.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(Utc::now()))
        .count(db)
        .await?)
}
