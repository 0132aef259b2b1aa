//! `GET /graphql/ws`: GraphQL over WebSocket, speaking `graphql-transport-ws` (graphql-ws) and the
//! legacy `graphql-ws` (subscriptions-transport-ws) subprotocol.
//!
//! The connection must initialise first and in time (4408), once (4429); malformed messages close
//! it (4400), subscribing before the ack is refused (4401), ids are unique per connection (4409),
//! and the number of concurrent operations and the message size are bounded (1009); a broken
//! frame closes with 1002, invalid UTF-8 with 1007. On shutdown every socket closes with 1001.
//!
//! The socket follows its session: every operation is authorised with the caller's *current*
//! state (one store round trip, shared with the rate-limit count — operations count against the
//! same windows and budgets as HTTP requests), and the socket closes with 4403 when the access
//! token expires or the user is banned, deleted, deactivated, signed out, or the session is
//! revoked — on whichever instance that happened (identity changes arrive over the shared
//! pub/sub), and at the latest after `WS_REAUTH_INTERVAL`. Before that close, `sessionEvents`
//! subscriptions receive the reason ([`SocketSession`]); while the session is being checked again,
//! subscriptions hold their events, and deliver them only if it still holds.
//!
//! Bounded: `WS_MAX_CONNECTIONS_PER_USER` authenticated sockets per user and instance (4429);
//! subscriptions that fall behind close the socket (1013), and a client that does not take a
//! message within `WS_SEND_TIMEOUT` is disconnected, rather than buffered for without limit; a
//! client that sends faster than `WS_MAX_MESSAGE_RATE` is read more slowly (`pace.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::Data;
use async_graphql::parser::types::OperationType;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument as _;

use self::frames::{
    ClientMessage, Flow, error_frame, next_message, receive_failure, send, send_text,
};
use crate::error::{AppError, ErrorCode, error_response};
use crate::graphql::SocketSession;
use crate::http::HttpState;
use crate::http::caller::{self, Credential, Subject};
use crate::http::operation::{self, Params, Refusal, Transport};
use crate::http::rate_limit;
use crate::identity::events::Watch;
use crate::identity::{Authentication, Caller, SessionEnd, authenticate};
use crate::infra::rate_limit::Decision;
use crate::telemetry::{self, RequestId};

mod frames;
mod pace;
pub mod slots;

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The `graphql-ws` library's protocol.
    TransportWs,
    /// The `subscriptions-transport-ws` library's protocol.
    Legacy,
}

impl Protocol {
    fn from_offer(headers: &HeaderMap) -> Option<Self> {
        let offered: Vec<String> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .collect();
        if offered.iter().any(|p| p == TRANSPORT_WS) {
            Some(Self::TransportWs)
        } else if offered.iter().any(|p| p == LEGACY_WS) {
            Some(Self::Legacy)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::TransportWs => TRANSPORT_WS,
            Self::Legacy => LEGACY_WS,
        }
    }
}

pub async fn handler(
    State(state): State<HttpState>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = Protocol::from_offer(&headers) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "offer the graphql-transport-ws or graphql-ws subprotocol",
            None,
        );
    };
    // Upgraded sockets leave `HTTP_MAX_CONNECTIONS`: they have a cap of their own.
    let max_sockets = state.app.settings.websocket.max_connections;
    let Ok(slot) = state
        .app
        .local::<SocketCap>()
        .0
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max_sockets)))
        .clone()
        .try_acquire_owned()
    else {
        let mut refused = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            "this instance holds as many WebSockets as it may (WS_MAX_CONNECTIONS); try again later",
            None,
        );
        refused.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::error::UNAVAILABLE_RETRY_AFTER),
        );
        return refused;
    };
    // The upgrade's own credentials: used when `connection_init` carries none.
    let header_token = caller::credential(&headers)
        .token()
        .map(|token| SecretString::from(token.to_owned()));
    let max_message_size = state.app.settings.websocket.max_message_size;
    let tracker_token = state.app.tasks.token();
    // The connection outlives the request, not its span: its logs keep the request id.
    let span = tracing::Span::current();
    // Boxed, and the task built without nested `async` blocks: whatever a socket's task holds
    // it holds for as long as the socket is open, and a captured value awaited in place would
    // be kept twice.
    let connection = Box::new(Connection::new(
        state,
        protocol,
        request_id.clone(),
        caller,
        header_token,
    ));
    upgrade
        .protocols([protocol.name()])
        .max_message_size(max_message_size)
        .max_frame_size(max_message_size)
        // Small per-socket buffers (tungstenite's default is 128 KiB each way): an idle
        // subscriber then costs little; larger messages still arrive whole (the read buffer
        // grows to the frame), only in more reads.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let run = connection
                .run(socket)
                .map(move |()| drop((tracker_token, slot)));
            telemetry::in_request(request_id, run).instrument(span)
        })
}

/// This instance's socket slots (`WS_MAX_CONNECTIONS`), made on first use.
#[derive(Default)]
struct SocketCap(std::sync::OnceLock<Arc<tokio::sync::Semaphore>>);

/// What operations hand to the connection loop.
enum Outgoing {
    Text(String),
    /// The operation ended by itself; its id may be reused.
    Finished(String),
    /// The operation panicked: it answers with an internal error and ends.
    Panicked(String),
}

/// The socket's running operations, polled by its own task: a subscription costs its stream,
/// not a task and a channel of its own (what matters with thousands of idle subscribers).
type Operations = SelectAll<Abortable<BoxStream<'static, Outgoing>>>;

/// What one read of a socket takes at most (client messages are mostly far smaller).
const READ_BUFFER: usize = 1024;
/// Outgoing frames are written through once this much is buffered (each send flushes).
const WRITE_BUFFER: usize = 8 * 1024;

/// How long a closing socket waits for `sessionEvents` to hand on the reason.
const FAREWELL: std::time::Duration = std::time::Duration::from_millis(250);

struct Connection {
    state: HttpState,
    protocol: Protocol,
    request_id: RequestId,
    /// Who is calling, as of the last check.
    caller: Caller,
    /// The access token or API key the socket runs with (from `connection_init`, else the
    /// upgrade).
    token: Option<SecretString>,
    /// Changes to the caller's identity, published by any instance.
    watch: Option<Watch>,
    /// An anonymous socket's place among its network's (`WS_MAX_ANONYMOUS_PER_ADDRESS`).
    address_slot: Option<slots::AddressSlot>,
    /// What subscriptions know of the session (from `connection_init` on).
    session: Option<Arc<SocketSession>>,
    acknowledged: bool,
    connection_data: Option<Arc<Data>>,
    operations: HashMap<String, AbortHandle>,
}

impl Connection {
    fn new(
        state: HttpState,
        protocol: Protocol,
        request_id: RequestId,
        caller: Caller,
        token: Option<SecretString>,
    ) -> Self {
        Self {
            state,
            protocol,
            request_id,
            caller,
            token,
            watch: None,
            address_slot: None,
            session: None,
            acknowledged: false,
            connection_data: None,
            operations: HashMap::new(),
        }
    }

    /// When the access token stops working.
    fn expiry(&self) -> Option<Instant> {
        let expires_at = self.caller.expires_at()?;
        let left = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Some(Instant::now() + left)
    }

    async fn run(mut self: Box<Self>, socket: WebSocket) {
        let _open = self.state.app.metrics.websocket_open(self.protocol.name());
        let settings = self.state.app.settings.websocket.clone();
        let shutdown = self.state.app.shutdown.clone();
        let mut results = Operations::new();
        let (mut sink, mut stream) = socket.split();
        let init_deadline = tokio::time::sleep(settings.connection_init_timeout);
        tokio::pin!(init_deadline);
        let mut keepalive = tokio::time::interval(settings.keepalive_interval);
        keepalive.reset();
        let mut recheck = tokio::time::interval(settings.reauth_interval);
        recheck.reset();
        let far = Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600);
        let expiry = tokio::time::sleep_until(far);
        tokio::pin!(expiry);
        let mut pace = pace::Pace::new(settings.max_message_rate);

        let close = loop {
            let (paced, wait_began) = pace.next_read();
            if wait_began {
                self.state.app.metrics.count(
                    "websocket_throttled_total",
                    "protocol",
                    self.protocol.name(),
                );
            }
            let flow = tokio::select! {
                () = shutdown.cancelled() => Flow::Close(1001, "server shutting down".into()),
                () = &mut init_deadline, if !self.acknowledged => {
                    Flow::Close(4408, "Connection initialisation timeout".into())
                }
                () = &mut expiry, if self.acknowledged => {
                    Box::pin(self.farewell(SessionEnd::TokenExpired, &mut sink, &mut results)).await
                }
                () = overflowed(self.session.as_ref()) => {
                    Flow::Close(1013, "Try again later: the client fell behind".into())
                }
                hint = changed(&mut self.watch), if self.watch.is_some() => {
                    Box::pin(self.recheck(hint, &mut sink, &mut results)).await
                }
                _ = recheck.tick(), if self.acknowledged && self.token.is_some() => {
                    Box::pin(self.recheck(None, &mut sink, &mut results)).await
                }
                _ = keepalive.tick(), if self.acknowledged => {
                    let beat = match self.protocol {
                        Protocol::TransportWs => json!({ "type": "ping" }),
                        Protocol::Legacy => json!({ "type": "ka" }),
                    };
                    send(&mut sink, &beat, settings.send_timeout).await
                }
                Some(result) = results.next() => match result {
                    Outgoing::Text(text) => send_text(&mut sink, text, settings.send_timeout).await,
                    Outgoing::Finished(id) => {
                        self.operations.remove(&id);
                        Flow::Continue
                    }
                    Outgoing::Panicked(id) => {
                        self.operations.remove(&id);
                        let error = AppError::Internal(anyhow::anyhow!("a WebSocket operation panicked"));
                        error.report();
                        let refusal = Refusal::from_error(&error);
                        send(&mut sink, &self.error_message(&id, &refusal), settings.send_timeout).await
                    }
                },
                // A client in debt (`pace`) waits: nothing is read from its socket meanwhile.
                () = tokio::time::sleep_until(paced.unwrap_or(far)), if paced.is_some() => Flow::Continue,
                message = stream.next(), if paced.is_none() => match message {
                    None => break None,
                    Some(Err(error)) => receive_failure(&error),
                    Some(Ok(Message::Text(text))) => {
                        pace.charge(text.len());
                        let flow =
                            Box::pin(self.on_text(text.as_str(), &mut sink, &mut results)).await;
                        if self.acknowledged
                            && let Some(at) = self.expiry()
                        {
                            expiry.as_mut().reset(at);
                        }
                        flow
                    }
                    Some(Ok(Message::Binary(_))) => {
                        Flow::Close(4400, "binary messages are not supported".into())
                    }
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(bytes) | Message::Pong(bytes))) => {
                        pace.charge(bytes.len());
                        Flow::Continue
                    }
                },
            };
            if let Flow::Close(code, reason) = flow {
                break Some((code, reason));
            }
        };

        for (_, operation) in self.operations.drain() {
            operation.abort();
        }
        // 1006 means the peer vanished: there is nobody to send a close frame to.
        if let Some((code, reason)) = close.filter(|(code, _)| *code != 1006) {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }

    /// Checks the socket's credentials again; closes (4403) when they no longer hold, after
    /// telling `sessionEvents` why (`hint`: the reason the change that caused the check gave).
    async fn recheck<S>(
        &mut self,
        hint: Option<SessionEnd>,
        sink: &mut S,
        results: &mut Operations,
    ) -> Flow
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let Some(token) = &self.token else {
            return Flow::Continue;
        };
        let previous = self.caller.expires_at();
        if let Some(session) = &self.session {
            session.rechecking();
        }
        match authenticate::authenticate(&self.state.app, token.expose_secret()).await {
            authentication @ (Authentication::User(_) | Authentication::ApiKey(_)) => {
                self.caller.authentication = authentication;
                if let Some(session) = &self.session {
                    session.live(self.caller.expires_at());
                }
                Flow::Continue
            }
            // The stores cannot say now: keep going, the next check decides.
            Authentication::Unavailable => {
                if let Some(session) = &self.session {
                    session.live(previous);
                }
                Flow::Continue
            }
            Authentication::Invalid(_) | Authentication::Anonymous => {
                let reason = match hint {
                    Some(reason) => reason,
                    None => self.why_ended().await,
                };
                self.farewell(reason, sink, results).await
            }
        }
    }

    /// Why the socket's session ended, when no change said so.
    async fn why_ended(&self) -> SessionEnd {
        match &self.caller.authentication {
            Authentication::User(user) => authenticate::why_ended(&self.state.app, user).await,
            Authentication::ApiKey(key)
                if key.valid_until.is_some_and(|t| t <= chrono::Utc::now()) =>
            {
                SessionEnd::TokenExpired
            }
            Authentication::ApiKey(_) => SessionEnd::SessionRevoked,
            _ => SessionEnd::SessionEnded,
        }
    }

    /// Ends the session: `sessionEvents` subscriptions get the reason (their messages are sent
    /// while any is still producing, for at most [`FAREWELL`]), then the socket closes with 4403.
    async fn farewell<S>(
        &mut self,
        reason: SessionEnd,
        sink: &mut S,
        results: &mut Operations,
    ) -> Flow
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        tracing::info!(reason = reason.as_str(), "websocket session ended");
        let close = Flow::Close(4403, reason.describe().into());
        let Some(session) = self.session.clone() else {
            return close;
        };
        session.end(reason);
        let deadline = Instant::now() + FAREWELL;
        loop {
            let message = if session.listeners() == 0 {
                match results.next().now_or_never() {
                    Some(Some(message)) => message,
                    _ => break,
                }
            } else {
                match tokio::time::timeout_at(deadline, results.next()).await {
                    Ok(Some(message)) => message,
                    _ => break,
                }
            };
            if let Outgoing::Text(text) = message
                && let Flow::Close(code, reason) =
                    send_text(sink, text, self.state.app.settings.websocket.send_timeout).await
            {
                return Flow::Close(code, reason);
            }
        }
        close
    }

    async fn on_text<S>(&mut self, text: &str, sink: &mut S, results: &mut Operations) -> Flow
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(_) => return Flow::Close(4400, "Invalid message received".into()),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.acknowledged {
                    return Flow::Close(4429, "Too many initialisation requests".into());
                }
                if let Err((code, reason)) = self.connection_init(payload).await {
                    return Flow::Close(code, reason);
                }
                self.acknowledged = true;
                let flow = send(
                    sink,
                    &json!({ "type": "connection_ack" }),
                    self.send_timeout(),
                )
                .await;
                if self.protocol == Protocol::Legacy && matches!(flow, Flow::Continue) {
                    return send(sink, &json!({ "type": "ka" }), self.send_timeout()).await;
                }
                flow
            }
            ClientMessage::Ping { payload } => {
                let mut pong = json!({ "type": "pong" });
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                send(sink, &pong, self.send_timeout()).await
            }
            ClientMessage::Pong { .. } => Flow::Continue,
            ClientMessage::Subscribe { id, payload } => {
                if !self.acknowledged {
                    return Flow::Close(4401, "Unauthorized".into());
                }
                if self.operations.contains_key(&id) {
                    return Flow::Close(4409, format!("Subscriber for {id} already exists"));
                }
                let limit = self.state.app.settings.websocket.max_subscriptions;
                if self.operations.len() >= limit {
                    let error = AppError::RateLimited {
                        retry_after_secs: 1,
                    };
                    let mut refusal = Refusal::from_error(&error);
                    if let Some(first) = refusal.errors.first_mut() {
                        first.message =
                            format!("at most {limit} operations may run at once on one connection");
                    }
                    return send(
                        sink,
                        &self.error_message(&id, &refusal),
                        self.send_timeout(),
                    )
                    .await;
                }
                self.subscribe(id, payload, sink, results).await
            }
            ClientMessage::Complete { id } => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.abort();
                }
                Flow::Continue
            }
            ClientMessage::ConnectionTerminate => Flow::Close(1000, "terminated".into()),
        }
    }

    /// Authenticates the connection. The access token or API key comes from the payload
    /// (`{"authorization": "Bearer …"}`, `{"token": "…"}`, `{"accessToken": "…"}`,
    /// `{"apiKey": "mpk_…"}` or `{"x-api-key": "mpk_…"}`), else from the upgrade request's
    /// `Authorization` or `X-Api-Key` header; none means anonymous. An invalid one closes with
    /// 4403; when the credential stores cannot be reached, 1011 (try again later).
    async fn connection_init(&mut self, payload: Option<Value>) -> Result<(), (u16, String)> {
        let token = payload.as_ref().and_then(|p| {
            [
                "authorization",
                "Authorization",
                "token",
                "accessToken",
                "apiKey",
                "x-api-key",
                "X-Api-Key",
            ]
            .iter()
            .find_map(|key| p.get(*key)?.as_str())
            .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim().to_owned())
        });
        if let Some(token) = token {
            self.caller.authentication = authenticate::authenticate(&self.state.app, &token).await;
            self.token = Some(SecretString::from(token));
        }
        let mut expires_at = None;
        match &self.caller.authentication {
            Authentication::Anonymous => {
                let limit = self.state.app.settings.websocket.max_anonymous_per_address;
                if let Some(network) = self.caller.client.network {
                    match self.state.ws_addresses.take(network, limit) {
                        Some(slot) => self.address_slot = Some(slot),
                        None => {
                            return Err((
                                4429,
                                format!(
                                    "Too many connections: at most {limit} anonymous sockets per client address"
                                ),
                            ));
                        }
                    }
                }
            }
            Authentication::User(_) | Authentication::ApiKey(_) => {
                let watchers = &self.state.app.identity_watchers;
                let limit = self.state.app.settings.websocket.max_connections_per_user;
                let principal = self.caller.principal_id().unwrap_or_default();
                if watchers.watching(principal) >= limit {
                    return Err((
                        4429,
                        format!("Too many connections: at most {limit} per user or API key"),
                    ));
                }
                self.watch = Some(watchers.watch(principal));
                expires_at = self.caller.expires_at();
            }
            Authentication::Invalid(_) => return Err((4403, "Forbidden".into())),
            Authentication::Unavailable => {
                let error = authenticate::unavailable();
                error.report();
                return Err((1011, "authentication is unavailable; retry later".into()));
            }
        }
        let mut data = Data::default();
        data.insert(self.request_id.clone());
        data.insert(self.caller.client.clone());
        let session = Arc::new(SocketSession::new(expires_at));
        data.insert(session.clone());
        self.session = Some(session);
        self.connection_data = Some(Arc::new(data));
        Ok(())
    }

    fn send_timeout(&self) -> std::time::Duration {
        self.state.app.settings.websocket.send_timeout
    }

    fn error_message(&self, id: &str, refusal: &Refusal) -> Value {
        let errors = refusal.errors_json(&self.request_id);
        error_frame(self.protocol, id, errors)
    }

    /// Checks and counts the operation with the caller's current state, then starts it among
    /// the socket's running operations.
    async fn subscribe<S>(
        &mut self,
        id: String,
        payload: Params,
        sink: &mut S,
        results: &mut Operations,
    ) -> Flow
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let app = self.state.app.clone();
        let credential = match &self.token {
            Some(token) => Credential::from_token(token.expose_secret()),
            None => Credential::None,
        };
        let client = self.caller.client.clone();
        let limit = |subject: Subject<'_>| rate_limit::principal(&app, &client, subject);
        let identified = caller::identify(&app, credential, Some(&limit)).await;
        match identified.authentication {
            Authentication::Invalid(_) if self.token.is_some() => {
                let reason = self.why_ended().await;
                return self.farewell(reason, sink, results).await;
            }
            authentication => self.caller.authentication = authentication,
        }
        match identified.decision {
            Some(Decision::Limited(window)) => {
                let refusal = Refusal::from_error(&rate_limit::limited(&window));
                return send(
                    sink,
                    &self.error_message(&id, &refusal),
                    self.send_timeout(),
                )
                .await;
            }
            Some(Decision::Unavailable) => {
                let refusal = Refusal::from_error(&rate_limit::unavailable());
                return send(
                    sink,
                    &self.error_message(&id, &refusal),
                    self.send_timeout(),
                )
                .await;
            }
            _ => {}
        }
        let prepared = match operation::prepare(
            &app,
            payload,
            Transport::WebSocket,
            &self.caller,
            &self.request_id,
        )
        .await
        {
            Ok(prepared) => prepared,
            Err(refusal) => {
                return send(
                    sink,
                    &self.error_message(&id, &refusal),
                    self.send_timeout(),
                )
                .await;
            }
        };
        self.start(id, prepared, results);
        Flow::Continue
    }

    /// Adds the operation to the socket's running ones; its messages come back through
    /// `results`, in the connection's own task.
    fn start(&mut self, id: String, prepared: operation::Prepared, results: &mut Operations) {
        let app = self.state.app.clone();
        let session = self.connection_data.clone().unwrap_or_default();
        let protocol = self.protocol;
        let next_type = match protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let request_id = self.request_id.clone();
        let task_id = id.clone();
        let handle_id = id.clone();
        let (request, ticket) = prepared.into_parts(&app);
        let deadline = (ticket.info.kind != Some(OperationType::Subscription))
            .then_some(app.settings.graphql.execution_timeout);
        let running = app.metrics.websocket_operation(ticket.info.kind_label());
        // The request is handed over here, not inside the stream: a long-lived subscription
        // then holds the response stream, not the request it was made from. The ticket is only
        // needed until the first response, so it lives on the heap and is dropped after it.
        let mut responses = self
            .state
            .schemas
            .full
            .execute_stream_with_session_data(request, session);
        let mut ticket = Some(Box::new(ticket));
        // Each await other than the wait for the next response goes through a box: the stream
        // then stays small while a subscription waits (rustc keeps room for every future
        // awaited in place, in every state).
        let messages = async_stream::stream! {
            // Counted while the stream lives: ended, completed by the client, or dropped.
            let _running = running;
            let started = Instant::now();
            loop {
                let next = match deadline {
                    Some(deadline) => {
                        match Box::pin(tokio::time::timeout_at(started + deadline, responses.next()))
                            .await
                        {
                            Ok(next) => next,
                            Err(_) => {
                                let refusal = Refusal::from_error(&operation::deadline_error(&app));
                                let errors = refusal.errors_json(&request_id);
                                yield Outgoing::Text(error_frame(protocol, &task_id, errors).to_string());
                                yield Outgoing::Finished(task_id);
                                return;
                            }
                        }
                    }
                    None => responses.next().await,
                };
                let Some(response) = next else { break };
                if let Some(ticket) = ticket.take() {
                    Box::pin(operation::finish(&app, &ticket, &response, started)).await;
                    // A failure before execution is an `error` message, and ends the operation.
                    if !ticket.phase.executed() && response.is_err() {
                        let errors = serde_json::to_value(&response.errors).unwrap_or(Value::Null);
                        yield Outgoing::Text(error_frame(protocol, &task_id, errors).to_string());
                        yield Outgoing::Finished(task_id);
                        return;
                    }
                }
                yield Outgoing::Text(next_message(next_type, &task_id, &response));
            }
            yield Outgoing::Text(json!({ "type": "complete", "id": task_id }).to_string());
            yield Outgoing::Finished(task_id);
        };
        // A panic in a resolver ends this operation with an internal error, not the socket.
        let messages = std::panic::AssertUnwindSafe(messages)
            .catch_unwind()
            .map(move |message| message.unwrap_or_else(|_| Outgoing::Panicked(id.clone())));
        let (messages, handle) = futures_util::stream::abortable(messages.boxed());
        results.push(messages);
        self.operations.insert(handle_id, handle);
    }
}

/// Completes when the watched identity changed (never without a watch).
async fn changed(watch: &mut Option<Watch>) -> Option<SessionEnd> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Completes when a subscription on the socket fell behind (never without a session).
async fn overflowed(session: Option<&Arc<SocketSession>>) {
    match session {
        Some(session) => session.overflowed().await,
        None => std::future::pending().await,
    }
}
