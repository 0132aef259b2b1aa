//! Fan-out of notification events: one message on the shared pub/sub per change (Redis in
//! production, so an event created on instance A reaches a subscriber on instance B), one
//! subscription to it per instance (the `notifications-fanout` task), and a local hub that hands
//! each user's events to that user's open subscriptions on this instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::kinds::NotificationKind;
use crate::state::AppState;

pub const CHANNEL: &str = "notifications:events";

/// Events one user's subscriptions may hold before they count as fallen behind.
const USER_CAPACITY: usize = 64;

/// A notification as subscriptions deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: Uuid,
    pub recipient_id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub payload: serde_json::Value,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What several recipients' rows share (one message for a whole batch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One message on [`CHANNEL`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    /// New rows: what they share, and `(recipient, id)` of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<(Shared, Vec<(Uuid, Uuid)>)>,
    /// Unread counts after the change, by recipient.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<(Uuid, u64)>,
}

impl Event {
    pub fn is_empty(&self) -> bool {
        self.added.is_none() && self.counts.is_empty()
    }
}

/// What one user's subscriptions receive.
#[derive(Debug, Clone)]
pub enum UserEvent {
    Added(Arc<Record>),
    UnreadCount(u64),
}

/// This instance's subscribers, by user (`state.local::<Hub>()`).
#[derive(Default)]
pub struct Hub {
    by_user: Mutex<HashMap<Uuid, broadcast::Sender<UserEvent>>>,
}

/// One subscription's receiver; leaves the hub when the last of its user's is dropped.
pub struct Receiver {
    pub events: broadcast::Receiver<UserEvent>,
    user_id: Uuid,
    hub: Arc<Hub>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut by_user = self
            .hub
            .by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if by_user
            .get(&self.user_id)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            by_user.remove(&self.user_id);
        }
    }
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, user_id: Uuid) -> Receiver {
        let mut by_user = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        let events = by_user
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(USER_CAPACITY).0)
            .subscribe();
        Receiver {
            events,
            user_id,
            hub: self.clone(),
        }
    }

    /// Hands an event to the subscriptions of its recipients on this instance.
    pub fn dispatch(&self, event: &Event) {
        let by_user = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        if by_user.is_empty() {
            return;
        }
        if let Some((shared, items)) = &event.added {
            for (recipient, id) in items {
                if let Some(sender) = by_user.get(recipient) {
                    let record = Record {
                        id: *id,
                        recipient_id: *recipient,
                        kind: shared.kind,
                        title: shared.title.clone(),
                        body: shared.body.clone(),
                        payload: shared.payload.clone(),
                        read_at: None,
                        created_at: shared.created_at,
                    };
                    let _ = sender.send(UserEvent::Added(Arc::new(record)));
                }
            }
        }
        for (recipient, count) in &event.counts {
            if let Some(sender) = by_user.get(recipient) {
                let _ = sender.send(UserEvent::UnreadCount(*count));
            }
        }
    }
}

/// Sends an event to every instance. When the pub/sub is unreachable, this instance's
/// subscribers still get it (others' replay it from the database when they reconnect).
pub async fn publish(state: &AppState, event: &Event) {
    if event.is_empty() {
        return;
    }
    let published = match serde_json::to_vec(event) {
        Ok(bytes) => {
            state
                .stores
                .pubsub
                .publish(CHANNEL, Bytes::from(bytes))
                .await
        }
        Err(error) => {
            tracing::error!(error = %error, "cannot encode a notification event");
            return;
        }
    };
    if let Err(error) = published {
        error.log("cannot publish a notification event");
        state.local::<Hub>().dispatch(event);
    }
}

/// The `notifications-fanout` task: feeds this instance's hub from the shared channel until
/// shutdown, subscribing again while the pub/sub is unreachable.
pub fn listen_task(state: AppState) -> BoxFuture<'static, ()> {
    Box::pin(listen(state))
}

async fn listen(state: AppState) {
    let hub = state.local::<Hub>();
    crate::infra::pubsub::follow(
        state.stores.pubsub.clone(),
        state.shutdown.clone(),
        CHANNEL,
        |payload| match serde_json::from_slice::<Event>(&payload) {
            Ok(event) => hub.dispatch(&event),
            Err(error) => tracing::warn!(error = %error, "unreadable notification event"),
        },
    )
    .await;
}
