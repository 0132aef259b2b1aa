//! The security notices identity sends the account holder (`SECURITY` notifications, in the app
//! and by email): written in the transaction of the change, published after its commit.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use crate::entities::refresh_tokens;
use crate::error::AppResult;
use crate::features::notifications::{self, Content, Delivery, NotificationKind};
use crate::identity::{Actor, ClientInfo};
use crate::state::AppState;

pub enum Notice<'a> {
    PasswordChanged,
    PasswordReset,
    TwoFactorEnabled,
    TwoFactorDisabled,
    NewSignIn(&'a ClientInfo),
}

impl Notice<'_> {
    fn content(&self) -> Content {
        let (title, body) = match self {
            Self::PasswordChanged => (
                "Your password was changed",
                "Your password was changed and your other sessions were signed out. If this was not you, reset your password now.".to_owned(),
            ),
            Self::PasswordReset => (
                "Your password was reset",
                "Your password was reset with a link sent to your email address, and every session was signed out. If this was not you, reset your password again and secure your mailbox.".to_owned(),
            ),
            Self::TwoFactorEnabled => (
                "Two-factor authentication is on",
                "Signing in now needs a code from your authenticator app. Keep your backup codes safe.".to_owned(),
            ),
            Self::TwoFactorDisabled => (
                "Two-factor authentication is off",
                "Signing in no longer needs a code from your authenticator app. If this was not you, change your password and turn it on again.".to_owned(),
            ),
            Self::NewSignIn(client) => (
                "New sign-in to your account",
                format!(
                    "Someone signed in to your account from a device not seen before ({}{}). If this was not you, change your password and sign out the session.",
                    client.user_agent.as_deref().unwrap_or("unknown browser"),
                    client
                        .ip
                        .map(|ip| format!(", {ip}"))
                        .unwrap_or_default(),
                ),
            ),
        };
        Content::new(title, body).link("/settings/security")
    }
}

/// Writes the notice on `conn` (the change's transaction); publish the delivery after the commit.
///
/// # Errors
/// The database fails.
pub async fn send(
    state: &AppState,
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    notice: &Notice<'_>,
    actor: &Actor,
) -> AppResult<Delivery> {
    notifications::notify(
        state,
        conn,
        &[user_id],
        NotificationKind::Security,
        &notice.content(),
        actor.request_id.as_deref(),
    )
    .await
}

/// Whether a sign-in comes from a device the account has not used before: the account had
/// sessions, and none from this browser (user agent). Call before the new session is stored.
///
/// # Errors
/// The database fails.
pub async fn is_new_device(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    client: &ClientInfo,
) -> AppResult<bool> {
    let earlier = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .count(conn)
        .await?;
    if earlier == 0 {
        return Ok(false);
    }
    let mut same =
        refresh_tokens::Entity::find().filter(refresh_tokens::Column::UserId.eq(user_id));
    same = match &client.user_agent {
        Some(agent) => same.filter(refresh_tokens::Column::UserAgent.eq(agent.as_str())),
        None => same.filter(refresh_tokens::Column::UserAgent.is_null()),
    };
    Ok(same.count(conn).await? == 0)
}
