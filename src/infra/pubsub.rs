//! Publish/subscribe for fan-out across instances (subscriptions, cache invalidation).
//!
//! Both implementations deliver through a local hub of broadcast channels; the Redis one feeds the
//! hub from a single multiplexed Redis subscriber connection per instance (not one per client),
//! re-subscribing after a reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use redis::AsyncCommands as _;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::kv::{StoreError, StoreResult};
use super::redis::{RedisClient, map_redis_error};

/// Messages of one channel, in publication order. A subscriber that falls more than
/// [`CHANNEL_CAPACITY`] messages behind skips the oldest ones.
pub type Subscription = BoxStream<'static, Bytes>;

const CHANNEL_CAPACITY: usize = 256;

#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()>;

    /// Messages published after this call returns are delivered.
    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription>;
}

/// Local registry of channels with at least one subscriber in this process.
#[derive(Default)]
struct LocalHub {
    channels: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl LocalHub {
    /// A receiver, plus `true` when the channel is new here.
    fn join(&self, channel: &str) -> (broadcast::Receiver<Bytes>, bool) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(channel) {
            return (sender.subscribe(), false);
        }
        let (sender, receiver) = broadcast::channel(CHANNEL_CAPACITY);
        channels.insert(channel.to_owned(), sender);
        (receiver, true)
    }

    fn dispatch(&self, channel: &str, payload: Bytes) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(channel) {
            let _ = sender.send(payload);
        }
    }

    /// Forgets a channel nobody listens to any more; `true` when it was removed.
    fn prune(&self, channel: &str) -> bool {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels
            .get(channel)
            .is_some_and(|s| s.receiver_count() == 0)
        {
            channels.remove(channel);
            return true;
        }
        false
    }

    fn names(&self) -> Vec<String> {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.keys().cloned().collect()
    }
}

/// Runs `on_drop` when the subscriber's stream is dropped.
struct DropGuard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for DropGuard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn receiver_stream(
    receiver: broadcast::Receiver<Bytes>,
    on_drop: impl FnOnce() + Send + 'static,
) -> Subscription {
    let guard = DropGuard(Some(on_drop));
    futures_util::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
        loop {
            match receiver.recv().await {
                Ok(message) => return Some((message, (receiver, guard))),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "slow subscriber skipped messages");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

/// In-process fan-out: one instance only.
#[derive(Default)]
pub struct MemoryPubSub {
    hub: Arc<LocalHub>,
}

impl MemoryPubSub {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        self.hub.dispatch(channel, payload);
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        let (receiver, _) = self.hub.join(channel);
        let hub = Arc::downgrade(&self.hub);
        let channel = channel.to_owned();
        Ok(receiver_stream(receiver, move || {
            if let Some(hub) = hub.upgrade() {
                hub.prune(&channel);
            }
        }))
    }
}

enum Command {
    Subscribe(String, oneshot::Sender<StoreResult<()>>),
    /// A subscriber went away; unsubscribe when it was the channel's last.
    Release(String),
}

/// Redis-backed fan-out shared by every instance.
pub struct RedisPubSub {
    client: RedisClient,
    hub: Arc<LocalHub>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisPubSub {
    /// Starts the subscriber task lazily: it connects on the first subscription.
    pub fn new(client: RedisClient) -> Self {
        let hub = Arc::new(LocalHub::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(subscriber_task(client.clone(), hub.clone(), receiver));
        Self {
            client,
            hub,
            commands,
        }
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        let channel = self.client.key(channel);
        self.client
            .run(|mut conn| async move {
                let _: i64 = conn.publish(channel, payload.to_vec()).await?;
                Ok(())
            })
            .await
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        let full = self.client.key(channel);
        let (receiver, is_new) = self.hub.join(&full);
        let release = {
            let commands = self.commands.clone();
            let full = full.clone();
            move || {
                let _ = commands.send(Command::Release(full));
            }
        };
        let stream = receiver_stream(receiver, release);
        if is_new {
            let (ack, confirmed) = oneshot::channel();
            self.commands
                .send(Command::Subscribe(full, ack))
                .map_err(|_| StoreError::Unavailable("subscriber task stopped".into()))?;
            match tokio::time::timeout(self.client.timeout, confirmed).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => {
                    return Err(StoreError::Unavailable("subscriber task stopped".into()));
                }
                Err(_) => return Err(StoreError::Timeout),
            }
        }
        Ok(stream)
    }
}

/// Owns the one subscriber connection: applies (un)subscriptions in order, dispatches messages,
/// and reconnects with backoff, re-subscribing every channel that still has listeners.
async fn subscriber_task(
    client: RedisClient,
    hub: Arc<LocalHub>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Stay idle (no connection) until something needs one.
        let pending = if hub.names().is_empty() {
            match commands.recv().await {
                Some(Command::Subscribe(channel, ack)) => Some((channel, ack)),
                Some(Command::Release(channel)) => {
                    hub.prune(&channel);
                    continue;
                }
                None => return,
            }
        } else {
            None
        };

        let connection =
            tokio::time::timeout(client.timeout, client.client.get_async_pubsub()).await;
        let pubsub = match connection {
            Ok(Ok(pubsub)) => pubsub,
            failure => {
                let message = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                tracing::warn!(error = %message, "redis subscriber cannot connect; retrying");
                if let Some((_, ack)) = pending {
                    let _ = ack.send(Err(StoreError::Unavailable(message)));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut failed = false;
        for channel in hub.names() {
            if let Err(e) = sink.subscribe(&channel).await {
                tracing::warn!(error = %e, "redis re-subscribe failed");
                failed = true;
            }
        }
        if let Some((channel, ack)) = pending {
            let result = sink.subscribe(&channel).await.map_err(map_redis_error);
            failed |= result.is_err();
            let _ = ack.send(result);
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);

        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Subscribe(channel, ack)) => {
                        let _ = ack.send(sink.subscribe(&channel).await.map_err(map_redis_error));
                    }
                    Some(Command::Release(channel)) => {
                        if hub.prune(&channel) {
                            let _ = sink.unsubscribe(&channel).await;
                        }
                    }
                    None => return,
                },
                message = stream.next() => match message {
                    Some(message) => {
                        let payload: Vec<u8> = message.get_payload().unwrap_or_default();
                        hub.dispatch(message.get_channel_name(), Bytes::from(payload));
                    }
                    None => {
                        tracing::warn!("redis subscriber connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// Hands every message of `channel` to `on_message` until `shutdown`, subscribing again (with
/// backoff) whenever the pub/sub is unreachable or the subscription ends: what a per-instance
/// listener task runs.
pub async fn follow(
    pubsub: Arc<dyn PubSub>,
    shutdown: tokio_util::sync::CancellationToken,
    channel: &str,
    mut on_message: impl FnMut(Bytes),
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let subscription = tokio::select! {
            () = shutdown.cancelled() => return,
            subscription = pubsub.subscribe(channel) => subscription,
        };
        let mut messages = match subscription {
            Ok(messages) => messages,
            Err(error) => {
                error.log("cannot subscribe to a pub/sub channel; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = messages.next() => match message {
                    Some(payload) => on_message(payload),
                    None => break,
                },
            }
        }
    }
}
