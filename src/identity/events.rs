//! "Something about this user changed": published on the shared pub/sub by [`user_changed`](super::authenticate::user_changed)
//! (`super::authenticate::user_changed`), received once per instance, and handed to whatever on
//! this instance watches the user — open WebSockets, which then re-check their caller and close
//! when the session no longer holds. A change that ends sessions says why ([`SessionEnd`]), so a
//! socket can tell its client before it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::state::AppState;

pub const CHANNEL: &str = "identity:changed";

/// Why a session stopped working, as a client is told (`sessionEvents`) before its socket closes.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The access token expired: refresh it and connect again.
    TokenExpired,
    /// This session was signed out or revoked (from this or another device).
    SessionRevoked,
    /// Every session of the account was ended (sign-out everywhere).
    SignedOutEverywhere,
    /// The password changed; every other session ended.
    PasswordChanged,
    Banned,
    Deactivated,
    Deleted,
    /// The session no longer holds for another reason.
    SessionEnded,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::SessionRevoked => "SESSION_REVOKED",
            Self::SignedOutEverywhere => "SIGNED_OUT_EVERYWHERE",
            Self::PasswordChanged => "PASSWORD_CHANGED",
            Self::Banned => "BANNED",
            Self::Deactivated => "DEACTIVATED",
            Self::Deleted => "DELETED",
            Self::SessionEnded => "SESSION_ENDED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::TokenExpired,
            Self::SessionRevoked,
            Self::SignedOutEverywhere,
            Self::PasswordChanged,
            Self::Banned,
            Self::Deactivated,
            Self::Deleted,
            Self::SessionEnded,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    /// What the message of a close frame says.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TokenExpired => "Forbidden: the access token expired",
            Self::SessionRevoked => "Forbidden: the session was revoked",
            Self::SignedOutEverywhere => "Forbidden: every session was signed out",
            Self::PasswordChanged => "Forbidden: the password changed",
            Self::Banned => "Forbidden: the account is banned",
            Self::Deactivated => "Forbidden: the account is deactivated",
            Self::Deleted => "Forbidden: the account was deleted",
            Self::SessionEnded => "Forbidden: the session ended",
        }
    }
}

/// This instance's watchers, by user.
#[derive(Default)]
pub struct Watchers {
    by_user: Mutex<HashMap<Uuid, broadcast::Sender<Option<SessionEnd>>>>,
}

/// Receives a message each time the user changes (a burst may arrive as one).
pub struct Watch {
    receiver: broadcast::Receiver<Option<SessionEnd>>,
    user_id: Uuid,
    watchers: Arc<Watchers>,
}

impl Watch {
    /// Completes when the user changed since the last call, with the reason when the change
    /// ended sessions and said why (a burst may arrive as one: then the reason is unknown).
    pub async fn changed(&mut self) -> Option<SessionEnd> {
        loop {
            match self.receiver.recv().await {
                Ok(reason) => return reason,
                Err(broadcast::error::RecvError::Lagged(_)) => return None,
                // Never: the sender lives while this watch does.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut by_user = self
            .watchers
            .by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This watch's receiver is still counted while it drops.
        if by_user
            .get(&self.user_id)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            by_user.remove(&self.user_id);
        }
    }
}

impl Watchers {
    pub fn watch(self: &Arc<Self>, user_id: Uuid) -> Watch {
        let mut by_user = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = by_user
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(1).0)
            .subscribe();
        Watch {
            receiver,
            user_id,
            watchers: self.clone(),
        }
    }

    fn notify(&self, user_id: Uuid, reason: Option<SessionEnd>) {
        let by_user = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = by_user.get(&user_id) {
            let _ = sender.send(reason);
        }
    }

    /// How many watches (open sockets) this instance holds for the user.
    pub fn watching(&self, user_id: Uuid) -> usize {
        self.by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Users watched on this instance (for tests and metrics).
    pub fn len(&self) -> usize {
        self.by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tells every instance that `user_id` changed (and why, when the change ends sessions). When
/// the pub/sub is unreachable, at least this instance's watchers hear it (others re-check on
/// their next operation and periodically).
pub async fn publish(state: &AppState, user_id: Uuid, reason: Option<SessionEnd>) {
    let payload = match reason {
        Some(reason) => format!("{user_id} {}", reason.as_str()),
        None => user_id.to_string(),
    };
    if let Err(error) = state
        .stores
        .pubsub
        .publish(CHANNEL, Bytes::from(payload))
        .await
    {
        error.log("cannot publish an identity change");
        state.identity_watchers.notify(user_id, reason);
    }
}

fn parse(payload: &[u8]) -> Option<(Uuid, Option<SessionEnd>)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, reason) = match text.split_once(' ') {
        Some((id, reason)) => (id, SessionEnd::parse(reason)),
        None => (text, None),
    };
    Some((Uuid::parse_str(id).ok()?, reason))
}

/// Feeds this instance's watchers from the shared channel until shutdown, re-subscribing while
/// the pub/sub is unreachable.
pub async fn listen(state: AppState) {
    let watchers = state.identity_watchers.clone();
    crate::infra::pubsub::follow(
        state.stores.pubsub.clone(),
        state.shutdown.clone(),
        CHANNEL,
        |payload| {
            if let Some((user_id, reason)) = parse(&payload) {
                watchers.notify(user_id, reason);
            }
        },
    )
    .await;
}
