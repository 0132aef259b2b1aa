//! What administrators' actions tell their subjects: `SECURITY` notifications (in the app and
//! by email), written in the action's transaction and published after its commit.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::error::AppResult;
use crate::features::notifications::{self, Content, Delivery, NotificationKind};
use crate::identity::Actor;
use crate::state::AppState;

pub enum Notice<'a> {
    Banned {
        reason: &'a str,
        until: Option<DateTime<Utc>>,
    },
    Unbanned,
    RoleGranted(&'a str),
    RoleRemoved(&'a str),
}

impl Notice<'_> {
    fn content(&self) -> Content {
        match self {
            Self::Banned { reason, until } => Content::new(
                "Your account was suspended",
                match until {
                    Some(until) => format!(
                        "An administrator suspended your account until {} UTC. Reason: {reason}",
                        until.format("%Y-%m-%d %H:%M")
                    ),
                    None => format!("An administrator suspended your account. Reason: {reason}"),
                },
            ),
            Self::Unbanned => Content::new(
                "Your account is active again",
                "An administrator lifted the suspension of your account. You can sign in again.",
            ),
            Self::RoleGranted(role) => Content::new(
                "You have a new role",
                format!("An administrator gave you the role \"{role}\"."),
            )
            .data("role", serde_json::json!(role)),
            Self::RoleRemoved(role) => Content::new(
                "A role was removed from your account",
                format!("An administrator removed the role \"{role}\" from your account."),
            )
            .data("role", serde_json::json!(role)),
        }
        .link("/settings/security")
    }
}

/// Writes the notice for `users` on `conn`; publish the delivery after the commit.
///
/// # Errors
/// The database fails.
pub async fn send(
    state: &AppState,
    conn: &impl ConnectionTrait,
    users: &[Uuid],
    notice: &Notice<'_>,
    actor: &Actor,
) -> AppResult<Delivery> {
    notifications::notify(
        state,
        conn,
        users,
        NotificationKind::Security,
        &notice.content(),
        actor.request_id.as_deref(),
    )
    .await
}
