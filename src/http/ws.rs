//! `GET /graphql/ws`: GraphQL over WebSocket, speaking `graphql-transport-ws` (graphql-ws) and the
//! legacy `graphql-ws` (subscriptions-transport-ws) subprotocol.
//!
//! The connection must initialise first and in time (4408), once (4429); malformed messages close
//! it (4400), subscribing before the ack is refused (4401), ids are unique per connection (4409),
//! and the number of concurrent operations and the message size are bounded. On shutdown every
//! socket is closed with 1001.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::Data;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::HttpState;
use super::errors::error_response_with_status;
use super::graphql::Params;
use super::persisted;
use crate::error::ErrorCode;
use crate::features::auth::{Authentication, Caller, Viewer};
use crate::features::users::loaders::Loaders;
use crate::graphql::{RequestId, RequestPhase};

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
        return error_response_with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "offer the graphql-transport-ws or graphql-ws subprotocol",
            Some(&request_id),
        );
    };
    let max_message_size = state.app.settings.websocket.max_message_size;
    let tracker_token = state.app.tasks.token();
    upgrade
        .protocols([protocol.name()])
        .max_message_size(max_message_size)
        .max_frame_size(max_message_size)
        .on_upgrade(move |socket| async move {
            Connection::new(state, protocol, request_id, caller)
                .run(socket)
                .await;
            drop(tracker_token);
        })
}

/// Messages from clients of either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    #[serde(alias = "start")]
    Subscribe {
        id: String,
        payload: Params,
    },
    #[serde(alias = "stop")]
    Complete {
        id: String,
    },
    ConnectionTerminate,
}

/// What operation tasks send back to the connection loop.
enum Outgoing {
    Text(String),
    /// The operation ended by itself; its id may be reused.
    Finished(String),
}

enum Flow {
    Continue,
    Close(u16, String),
}

struct Connection {
    state: HttpState,
    protocol: Protocol,
    request_id: RequestId,
    /// Credentials of the upgrade request (used when `connection_init` carries none).
    caller: Caller,
    acknowledged: bool,
    connection_data: Option<Arc<Data>>,
    operations: HashMap<String, AbortHandle>,
    outgoing: mpsc::Sender<Outgoing>,
    incoming: Option<mpsc::Receiver<Outgoing>>,
}

impl Connection {
    fn new(state: HttpState, protocol: Protocol, request_id: RequestId, caller: Caller) -> Self {
        let (outgoing, incoming) = mpsc::channel(64);
        Self {
            state,
            protocol,
            request_id,
            caller,
            acknowledged: false,
            connection_data: None,
            operations: HashMap::new(),
            outgoing,
            incoming: Some(incoming),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let settings = self.state.app.settings.websocket.clone();
        let shutdown = self.state.app.shutdown.clone();
        let Some(mut results) = self.incoming.take() else {
            return;
        };
        let (mut sink, mut stream) = socket.split();
        let init_deadline = tokio::time::sleep(settings.connection_init_timeout);
        tokio::pin!(init_deadline);
        let mut keepalive = tokio::time::interval(settings.keepalive_interval);
        keepalive.reset();

        let close = loop {
            let flow = tokio::select! {
                () = shutdown.cancelled() => Flow::Close(1001, "server shutting down".into()),
                () = &mut init_deadline, if !self.acknowledged => {
                    Flow::Close(4408, "Connection initialisation timeout".into())
                }
                _ = keepalive.tick(), if self.acknowledged => {
                    let beat = match self.protocol {
                        Protocol::TransportWs => json!({ "type": "ping" }),
                        Protocol::Legacy => json!({ "type": "ka" }),
                    };
                    send(&mut sink, &beat).await
                }
                Some(result) = results.recv() => match result {
                    Outgoing::Text(text) => send_text(&mut sink, text).await,
                    Outgoing::Finished(id) => {
                        self.operations.remove(&id);
                        Flow::Continue
                    }
                },
                message = stream.next() => match message {
                    None => break None,
                    Some(Err(error)) => {
                        tracing::debug!(error = %error, "websocket receive failed");
                        Flow::Close(1009, "message too big or malformed frame".into())
                    }
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str(), &mut sink).await,
                    Some(Ok(Message::Binary(_))) => {
                        Flow::Close(4400, "binary messages are not supported".into())
                    }
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
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

    async fn on_text<S>(&mut self, text: &str, sink: &mut S) -> Flow
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
                match self.connection_init(payload).await {
                    Ok(data) => {
                        self.connection_data = Some(Arc::new(data));
                        self.acknowledged = true;
                        let flow = send(sink, &json!({ "type": "connection_ack" })).await;
                        if self.protocol == Protocol::Legacy && matches!(flow, Flow::Continue) {
                            return send(sink, &json!({ "type": "ka" })).await;
                        }
                        flow
                    }
                    Err((code, reason)) => Flow::Close(code, reason),
                }
            }
            ClientMessage::Ping { payload } => {
                let mut pong = json!({ "type": "pong" });
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                send(sink, &pong).await
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
                    let error = json!([{
                        "message": format!("at most {limit} operations may run at once on one connection"),
                        "extensions": { "code": ErrorCode::RateLimited.as_str(), "requestId": self.request_id.0 },
                    }]);
                    return send(sink, &self.error_message(&id, error)).await;
                }
                self.start(id, payload);
                Flow::Continue
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

    /// Authenticates the connection and builds the data every operation on it sees. The token
    /// comes from the payload (`{"authorization": "Bearer …"}`, `{"token": "…"}` or
    /// `{"accessToken": "…"}`), else from the upgrade request's `Authorization` header; none means
    /// anonymous, and an invalid one closes with 4403.
    async fn connection_init(&self, payload: Option<Value>) -> Result<Data, (u16, String)> {
        let token = payload.as_ref().and_then(|p| {
            ["authorization", "Authorization", "token", "accessToken"]
                .iter()
                .find_map(|key| p.get(*key)?.as_str())
                .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim().to_owned())
        });
        let authentication = match token {
            Some(token) => crate::http::auth::authenticate_token(&self.state.app, &token).await,
            None => self.caller.authentication.clone(),
        };
        let viewer = match authentication {
            Authentication::Anonymous => Viewer::Anonymous,
            Authentication::User(user) => Viewer::User(user),
            Authentication::Invalid(_) => return Err((4403, "Forbidden".into())),
        };
        let mut data = Data::default();
        data.insert(self.request_id.clone());
        data.insert(viewer);
        data.insert(self.caller.client.clone());
        Ok(data)
    }

    fn error_message(&self, id: &str, errors: Value) -> Value {
        match self.protocol {
            Protocol::TransportWs => json!({ "type": "error", "id": id, "payload": errors }),
            // The legacy protocol's `error` payload is a single error object.
            Protocol::Legacy => json!({
                "type": "error",
                "id": id,
                "payload": errors.get(0).cloned().unwrap_or(Value::Null),
            }),
        }
    }

    /// Runs one operation in its own task; its results come back through the channel.
    fn start(&mut self, id: String, mut payload: Params) {
        let phase = Arc::new(RequestPhase::default());
        let request_id = self.request_id.clone();
        let app = self.state.app.clone();
        let schema = self.state.schema.clone();
        let session = self.connection_data.clone().unwrap_or_default();
        let outgoing = self.outgoing.clone();
        let protocol = self.protocol;
        let next_type = match protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let error_template = self.error_message(&id, Value::Null);
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            // Persisted queries (and the safelist) apply on sockets too.
            let resolved =
                persisted::resolve(&app, payload.query.take(), payload.extensions.as_ref()).await;
            let document = match resolved {
                Ok(document) => document,
                Err(refusal) => {
                    let errors = json!([{
                        "message": refusal.message,
                        "extensions": { "code": refusal.code.as_str(), "requestId": request_id.0 },
                    }]);
                    let mut message = error_template.clone();
                    message["payload"] = match protocol {
                        Protocol::TransportWs => errors,
                        Protocol::Legacy => errors.get(0).cloned().unwrap_or(Value::Null),
                    };
                    let _ = outgoing.send(Outgoing::Text(message.to_string())).await;
                    let _ = outgoing.send(Outgoing::Finished(task_id)).await;
                    return;
                }
            };
            let request = payload
                .into_request(document)
                .data(request_id)
                .data(phase.clone())
                .data(Loaders::new(&app.db));
            let mut responses = schema.execute_stream_with_session_data(request, session);
            let mut first = true;
            while let Some(response) = responses.next().await {
                // A failure before execution is an `error` message, and ends the operation.
                if first && !phase.executed() && response.is_err() {
                    let errors = serde_json::to_value(&response.errors).unwrap_or(Value::Null);
                    let mut message = error_template.clone();
                    message["payload"] = match protocol {
                        Protocol::TransportWs => errors,
                        Protocol::Legacy => errors.get(0).cloned().unwrap_or(Value::Null),
                    };
                    let _ = outgoing.send(Outgoing::Text(message.to_string())).await;
                    let _ = outgoing.send(Outgoing::Finished(task_id)).await;
                    return;
                }
                first = false;
                let message = json!({
                    "type": next_type,
                    "id": task_id,
                    "payload": response_payload(&response),
                });
                if outgoing
                    .send(Outgoing::Text(message.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let complete = json!({ "type": "complete", "id": task_id });
            let _ = outgoing.send(Outgoing::Text(complete.to_string())).await;
            let _ = outgoing.send(Outgoing::Finished(task_id)).await;
        });
        self.operations.insert(id, task.abort_handle());
    }
}

fn response_payload(response: &async_graphql::Response) -> Value {
    let mut payload = json!({ "data": response.data });
    if !response.errors.is_empty() {
        payload["errors"] = serde_json::to_value(&response.errors).unwrap_or(Value::Null);
    }
    if !response.extensions.is_empty() {
        payload["extensions"] = serde_json::to_value(&response.extensions).unwrap_or(Value::Null);
    }
    payload
}

async fn send<S>(sink: &mut S, message: &Value) -> Flow
where
    S: futures_util::Sink<Message> + Unpin,
{
    send_text(sink, message.to_string()).await
}

async fn send_text<S>(sink: &mut S, text: String) -> Flow
where
    S: futures_util::Sink<Message> + Unpin,
{
    match sink.send(Message::Text(Utf8Bytes::from(text))).await {
        Ok(()) => Flow::Continue,
        // The peer is gone; nothing left to close politely.
        Err(_) => Flow::Close(1006, String::new()),
    }
}
