//! "Something about this user changed": published on the shared pub/sub by [`user_changed`]
//! (`super::authenticate::user_changed`), received once per instance, and handed to whatever on
//! this instance watches the user — open WebSockets, which then re-check their caller and close
//! when the session no longer holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::state::AppState;

pub const CHANNEL: &str = "identity:changed";

/// This instance's watchers, by user.
#[derive(Default)]
pub struct Watchers {
    by_user: Mutex<HashMap<Uuid, broadcast::Sender<()>>>,
}

/// Receives a message each time the user changes (a burst may arrive as one).
pub struct Watch {
    receiver: broadcast::Receiver<()>,
    user_id: Uuid,
    watchers: Arc<Watchers>,
}

impl Watch {
    /// Completes when the user changed since the last call.
    pub async fn changed(&mut self) {
        loop {
            match self.receiver.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => return,
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

    fn notify(&self, user_id: Uuid) {
        let by_user = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = by_user.get(&user_id) {
            let _ = sender.send(());
        }
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

/// Tells every instance that `user_id` changed. When the pub/sub is unreachable, at least this
/// instance's watchers hear it (others re-check on their next operation and periodically).
pub async fn publish(state: &AppState, user_id: Uuid) {
    let payload = Bytes::from(user_id.to_string());
    if let Err(error) = state.stores.pubsub.publish(CHANNEL, payload).await {
        error.log("cannot publish an identity change");
        state.identity_watchers.notify(user_id);
    }
}

/// Feeds this instance's watchers from the shared channel until shutdown, re-subscribing while
/// the pub/sub is unreachable.
pub async fn listen(state: AppState) {
    let mut delay = Duration::from_millis(100);
    loop {
        let subscription = tokio::select! {
            () = state.shutdown.cancelled() => return,
            subscription = state.stores.pubsub.subscribe(CHANNEL) => subscription,
        };
        let mut messages = match subscription {
            Ok(messages) => messages,
            Err(error) => {
                error.log("cannot subscribe to identity changes; retrying");
                tokio::select! {
                    () = state.shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                message = messages.next() => match message {
                    Some(payload) => {
                        if let Some(user_id) = std::str::from_utf8(&payload)
                            .ok()
                            .and_then(|text| Uuid::parse_str(text).ok())
                        {
                            state.identity_watchers.notify(user_id);
                        }
                    }
                    None => break,
                },
            }
        }
    }
}
