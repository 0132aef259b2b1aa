//! The wire side of a socket: what clients send, the messages the server writes, and how a
//! failed receive or a slow send ends the connection.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::SinkExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Protocol;
use crate::http::operation::Params;

/// Messages from clients of either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientMessage {
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

/// What the connection loop does next.
pub(super) enum Flow {
    Continue,
    Close(u16, String),
}

/// The close code for a frame the server could not receive: too big (1009), not valid UTF-8
/// (1007), or otherwise against the WebSocket protocol (1002).
pub(super) fn receive_failure(error: &axum::Error) -> Flow {
    use tungstenite::error::{CapacityError, Error as WsError};
    tracing::debug!(error = %error, "websocket receive failed");
    let inner = std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<WsError>())
        .or_else(|| (error as &dyn std::error::Error).downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. }))
        | Some(WsError::Capacity(_)) => Flow::Close(1009, "message too big".into()),
        Some(WsError::Utf8(_)) => Flow::Close(1007, "invalid UTF-8".into()),
        Some(WsError::Protocol(_)) => Flow::Close(1002, "protocol error".into()),
        // The connection broke: nobody to tell.
        Some(WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed) => {
            Flow::Close(1006, String::new())
        }
        _ => Flow::Close(1002, "protocol error".into()),
    }
}

pub(super) fn error_frame(protocol: Protocol, id: &str, errors: Value) -> Value {
    match protocol {
        Protocol::TransportWs => json!({ "type": "error", "id": id, "payload": errors }),
        // The legacy protocol's `error` payload is a single error object.
        Protocol::Legacy => json!({
            "type": "error",
            "id": id,
            "payload": errors.get(0).cloned().unwrap_or(Value::Null),
        }),
    }
}

/// A `next` (`data` in the legacy protocol) message, written straight from the response: no
/// intermediate JSON tree for what every subscriber of an event is sent.
#[derive(serde::Serialize)]
struct NextMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    payload: Payload<'a>,
}

#[derive(serde::Serialize)]
struct Payload<'a> {
    data: &'a async_graphql::Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, async_graphql::Value>,
}

pub(super) fn next_message(
    kind: &'static str,
    id: &str,
    response: &async_graphql::Response,
) -> String {
    let message = NextMessage {
        kind,
        id,
        payload: Payload {
            data: &response.data,
            errors: &response.errors,
            extensions: &response.extensions,
        },
    };
    serde_json::to_string(&message).unwrap_or_else(|error| {
        tracing::error!(error = %error, "cannot encode a subscription event");
        json!({
            "type": kind,
            "id": id,
            "payload": { "data": null, "errors": [{ "message": "internal server error" }] },
        })
        .to_string()
    })
}

pub(super) async fn send<S>(sink: &mut S, message: &Value, timeout: std::time::Duration) -> Flow
where
    S: futures_util::Sink<Message> + Unpin,
{
    send_text(sink, message.to_string(), timeout).await
}

/// Sends one message; a client that does not take it within `timeout` is dropped.
pub(super) async fn send_text<S>(sink: &mut S, text: String, timeout: std::time::Duration) -> Flow
where
    S: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(timeout, sink.send(Message::Text(Utf8Bytes::from(text)))).await {
        Ok(Ok(())) => Flow::Continue,
        // The peer is gone; nothing left to close politely.
        Ok(Err(_)) => Flow::Close(1006, String::new()),
        // Its receive buffer stays full: a close frame would not get through either.
        Err(_) => {
            tracing::info!("websocket client does not take its messages; dropped");
            Flow::Close(1006, String::new())
        }
    }
}
