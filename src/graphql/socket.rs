//! What a subscription knows about the WebSocket it runs on: whether the socket's session still
//! holds (so a stream never delivers an event its viewer may no longer see — checked in memory,
//! without a query per event), why it ended (`sessionEvents`), and a way to drop a consumer that
//! cannot keep up. The transport (`http::ws`) keeps it current; resolvers read it from the
//! context with [`SocketSession::of`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{Context, ErrorExtensions as _};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use crate::error::AppError;
use crate::identity::SessionEnd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The caller as of the last check; `expires_at` is the access token's expiry (none for an
    /// anonymous socket).
    Live {
        expires_at: Option<DateTime<Utc>>,
    },
    /// The user changed and the socket is checking the session again: deliveries wait.
    Rechecking,
    Ended(SessionEnd),
}

pub struct SocketSession {
    state: watch::Sender<SessionState>,
    /// Open `sessionEvents` streams, which the socket lets finish before it closes.
    listeners: AtomicUsize,
    overflow: Notify,
}

impl SocketSession {
    pub fn new(expires_at: Option<DateTime<Utc>>) -> Self {
        Self {
            state: watch::Sender::new(SessionState::Live { expires_at }),
            listeners: AtomicUsize::new(0),
            overflow: Notify::new(),
        }
    }

    /// The socket of the operation being resolved.
    ///
    /// # Errors
    /// `BAD_REQUEST` when the operation does not run on a WebSocket.
    pub fn of(ctx: &Context<'_>) -> async_graphql::Result<Arc<Self>> {
        ctx.data_opt::<Arc<Self>>().cloned().ok_or_else(|| {
            AppError::BadRequest("subscriptions run over WebSocket (GET /graphql/ws)".into())
                .extend()
        })
    }

    // --- for subscriptions ---

    /// Waits while the session is being checked again, then says whether an event may be
    /// delivered: the session holds and the access token has not expired.
    pub async fn deliverable(&self) -> bool {
        let mut receiver = self.state.subscribe();
        let state = match receiver
            .wait_for(|s| !matches!(s, SessionState::Rechecking))
            .await
        {
            Ok(state) => *state,
            Err(_) => return false,
        };
        match state {
            SessionState::Live { expires_at } => expires_at.is_none_or(|at| at > Utc::now()),
            SessionState::Rechecking | SessionState::Ended(_) => false,
        }
    }

    /// A listener for the end of the session. While it lives, the socket waits for it (briefly)
    /// before it closes: keep it until the event it produced has been handed on, so the reason
    /// reaches the client before the close frame.
    pub fn listen(self: &Arc<Self>) -> EndListener {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        EndListener(self.clone())
    }

    /// Asks the socket to close because this consumer fell behind (close 1013).
    pub fn drop_slow_consumer(&self) {
        self.overflow.notify_one();
    }

    // --- for the transport ---

    pub fn rechecking(&self) {
        self.state.send_replace(SessionState::Rechecking);
    }

    pub fn live(&self, expires_at: Option<DateTime<Utc>>) {
        self.state.send_replace(SessionState::Live { expires_at });
    }

    pub fn end(&self, reason: SessionEnd) {
        self.state.send_replace(SessionState::Ended(reason));
    }

    /// `sessionEvents` streams that have not delivered the end yet.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::SeqCst)
    }

    /// Completes when a subscription asked to drop the connection.
    pub async fn overflowed(&self) {
        self.overflow.notified().await;
    }
}

/// Counts one waiting `sessionEvents` stream: see [`SocketSession::listen`].
pub struct EndListener(Arc<SocketSession>);

impl EndListener {
    /// Completes with the reason once the session ended.
    pub async fn ended(&self) -> SessionEnd {
        let mut receiver = self.0.state.subscribe();
        let ended = receiver
            .wait_for(|s| matches!(s, SessionState::Ended(_)))
            .await
            .map(|state| *state);
        match ended {
            Ok(SessionState::Ended(reason)) => reason,
            _ => SessionEnd::SessionEnded,
        }
    }
}

impl Drop for EndListener {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}
