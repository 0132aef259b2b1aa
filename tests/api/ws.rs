//! GraphQL over WebSocket: both subprotocols, and the protocol's rules.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::TestApp;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(app: &TestApp, protocol: &str) -> Result<Socket, WsError> {
    let mut request = format!("ws://127.0.0.1:{}/graphql/ws", app.port).into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    Ok(socket)
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next JSON message, skipping keep-alives; panics after 5 s.
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("no error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "ka" || value["type"] == "ping" {
                continue;
            }
            return value;
        }
    }
}

/// The close code the server ends the connection with.
pub async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => return u16::from(CloseCode::Status),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

/// A socket initialised with `session`'s access token in `connection_init`.
pub async fn signed_in(app: &TestApp, session: &crate::helpers::Session, protocol: &str) -> Socket {
    let mut socket = connect(app, protocol).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", session.access) } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

pub async fn init(socket: &mut Socket) {
    send(socket, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next_json(socket).await["type"], "connection_ack");
}

#[tokio::test]
async fn both_subprotocols_acknowledge_and_run_a_query() {
    let app = TestApp::spawn().await;
    for (protocol, subscribe, next) in [
        ("graphql-transport-ws", "subscribe", "next"),
        ("graphql-ws", "start", "data"),
    ] {
        let mut socket = connect(&app, protocol).await.unwrap();
        init(&mut socket).await;
        send(&mut socket, json!({ "type": subscribe, "id": "1", "payload": { "query": "{ apiInfo { version } }" } })).await;
        let result = next_json(&mut socket).await;
        assert_eq!(result["type"], next, "{protocol}: {result}");
        assert_eq!(result["id"], "1");
        assert_eq!(
            result["payload"]["data"]["apiInfo"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            next_json(&mut socket).await,
            json!({ "type": "complete", "id": "1" })
        );
    }
}

#[tokio::test]
async fn a_subscription_streams_events_then_completes() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "hb", "payload": {
        "query": "subscription { heartbeat(intervalMs: 100, count: 3) { sequence at } }" } }),
    )
    .await;
    for expected in 1..=3 {
        let event = next_json(&mut socket).await;
        assert_eq!(event["type"], "next");
        assert_eq!(event["payload"]["data"]["heartbeat"]["sequence"], expected);
    }
    assert_eq!(
        next_json(&mut socket).await,
        json!({ "type": "complete", "id": "hb" })
    );
}

#[tokio::test]
async fn complete_from_the_client_stops_the_subscription() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "a", "payload": {
        "query": "subscription { heartbeat(intervalMs: 100) { sequence } }" } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
    send(&mut socket, json!({ "type": "complete", "id": "a" })).await;
    // The id is free again once stopped; reusing it is not a duplicate.
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "a", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    let mut saw_typename = false;
    for _ in 0..5 {
        let message = next_json(&mut socket).await;
        if message["payload"]["data"]["__typename"] == "QueryRoot" {
            saw_typename = true;
            break;
        }
    }
    assert!(saw_typename);
}

#[tokio::test]
async fn errors_on_subscribe_arrive_as_error_messages() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "bad", "payload": { "query": "{ nope }" } }),
    )
    .await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "bad");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert!(message["payload"][0]["extensions"]["requestId"].is_string());
}

#[tokio::test]
async fn no_init_within_the_timeout_closes_with_4408() {
    let app =
        TestApp::spawn_with(|s| s.websocket.connection_init_timeout = Duration::from_millis(200))
            .await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    assert_eq!(close_code(&mut socket).await, 4408);
}

#[tokio::test]
async fn anonymous_sockets_per_client_address_are_bounded() {
    let app = TestApp::spawn_with(|s| s.websocket.max_anonymous_per_address = 2).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
        init(&mut socket).await;
        open.push(socket);
    }
    let mut third = connect(&app, "graphql-transport-ws").await.unwrap();
    send(&mut third, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut third).await, 4429);
    // The legacy protocol counts against the same places.
    let mut legacy = connect(&app, "graphql-ws").await.unwrap();
    send(&mut legacy, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut legacy).await, 4429);
    // A signed-in socket from the same address is counted per user instead.
    let user = app.user_with_roles("ws-anonymous@example.com", &[]).await;
    let _signed = signed_in(&app, &user, "graphql-transport-ws").await;
    // A closed socket gives its place back.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
        send(&mut socket, json!({ "type": "connection_init" })).await;
        // The server may not have seen the close yet: then this one is refused, and we retry.
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), socket.next()).await
            && text.contains("connection_ack")
        {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the place was given back");
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let app = TestApp::spawn().await;

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut socket).await, 4429);

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(&mut socket, json!({ "type": "nonsense" })).await;
    assert_eq!(close_code(&mut socket).await, 4400);

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, 4401);

    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    let long = json!({ "type": "subscribe", "id": "x", "payload": { "query": "subscription { heartbeat(intervalMs: 60000) { sequence } }" } });
    send(&mut socket, long.clone()).await;
    send(&mut socket, long).await;
    assert_eq!(close_code(&mut socket).await, 4409);
}

#[tokio::test]
async fn pings_are_answered_with_pongs() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    send(
        &mut socket,
        json!({ "type": "ping", "payload": { "n": 1 } }),
    )
    .await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({ "type": "pong", "payload": { "n": 1 } })
    );
}

#[tokio::test]
async fn an_unknown_subprotocol_is_refused_at_the_upgrade() {
    let app = TestApp::spawn().await;
    let mut request = format!("ws://127.0.0.1:{}/graphql/ws", app.port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!(
            "expected a refused upgrade, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

#[tokio::test]
async fn concurrent_operations_per_connection_are_bounded() {
    let app = TestApp::spawn_with(|s| s.websocket.max_subscriptions = 2).await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    for id in ["1", "2", "3"] {
        send(
            &mut socket,
            json!({ "type": "subscribe", "id": id, "payload": {
            "query": "subscription { heartbeat(intervalMs: 60000) { sequence } }" } }),
        )
        .await;
    }
    let mut refused = None;
    for _ in 0..4 {
        let message = next_json(&mut socket).await;
        if message["type"] == "error" {
            refused = Some(message);
            break;
        }
    }
    let refused = refused.expect("the third operation is refused");
    assert_eq!(refused["id"], "3");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_the_socket_with_1009() {
    let app = TestApp::spawn_with(|s| s.websocket.max_message_size = 1024).await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    let query = format!("{{ __typename }} # {}", "x".repeat(4096));
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "big", "payload": { "query": query } }),
    )
    .await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn the_server_sends_keep_alives_on_both_subprotocols() {
    let app =
        TestApp::spawn_with(|s| s.websocket.keepalive_interval = Duration::from_millis(100)).await;
    for (protocol, beat) in [("graphql-transport-ws", "ping"), ("graphql-ws", "ka")] {
        let mut socket = connect(&app, protocol).await.unwrap();
        init(&mut socket).await;
        let mut beats = 0;
        while beats < 2 {
            let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("a keep-alive within 5 s")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["type"], beat, "{protocol}: {value}");
                beats += 1;
            }
        }
        // A client answering pings keeps the connection open and usable.
        if protocol == "graphql-transport-ws" {
            send(&mut socket, json!({ "type": "pong" })).await;
        }
        let subscribe = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        send(
            &mut socket,
            json!({ "type": subscribe, "id": "q", "payload": { "query": "{ __typename }" } }),
        )
        .await;
        assert_eq!(
            next_json(&mut socket).await["payload"]["data"]["__typename"],
            "QueryRoot"
        );
    }
}

/// Opens `/graphql/ws` by hand, sends `frame` as raw bytes after the handshake and returns the
/// close code the server answers with.
async fn close_code_for_raw_frame(app: &TestApp, frame: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let request = "GET /graphql/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(frame).await.unwrap();
    // The server's close frame: 0x88, a length, then the code.
    let mut reply = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .ok()?
        .ok()?;
    (reply[0] == 0x88).then(|| u16::from_be_bytes([reply[2], reply[3]]))
}

/// A masked client frame (the mask is all zeros, so the payload goes as is).
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte, 0x80 | u8::try_from(payload.len()).unwrap()];
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn broken_frames_close_with_the_protocol_codes() {
    let app = TestApp::spawn().await;
    // A text frame that is not UTF-8: 1007.
    let not_utf8 = client_frame(0x81, &[0xff, 0xfe, 0xfd]);
    assert_eq!(close_code_for_raw_frame(&app, &not_utf8).await, Some(1007));
    // Reserved bits set without an extension: 1002.
    let reserved = client_frame(0x81 | 0x40, b"{}");
    assert_eq!(close_code_for_raw_frame(&app, &reserved).await, Some(1002));
    // An unknown opcode: 1002.
    let opcode = client_frame(0x83, b"{}");
    assert_eq!(close_code_for_raw_frame(&app, &opcode).await, Some(1002));
}

#[tokio::test]
async fn a_client_flooding_its_socket_is_read_at_the_message_rate_not_closed() {
    let app = TestApp::spawn_with(|s| s.websocket.max_message_rate = 20).await;
    let mut socket = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut socket).await;
    // 100 pings at once: the bucket holds 40 (one went on connection_init), then 20 a second.
    let started = std::time::Instant::now();
    for _ in 0..100 {
        send(&mut socket, json!({ "type": "ping" })).await;
    }
    for _ in 0..100 {
        assert_eq!(next_json(&mut socket).await["type"], "pong");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "100 messages read in {took:?}"
    );
    // Throttled, not refused: the socket still runs operations.
    send(&mut socket, json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ apiInfo { version } }" } })).await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("websocket_throttled_total{protocol=\"graphql-transport-ws\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn beyond_the_socket_cap_upgrades_are_refused_with_503_until_one_closes() {
    let app = TestApp::spawn_with(|s| s.websocket.max_connections = 2).await;
    let mut first = connect(&app, "graphql-transport-ws").await.unwrap();
    init(&mut first).await;
    let mut second = connect(&app, "graphql-ws").await.unwrap();
    init(&mut second).await;
    match connect(&app, "graphql-transport-ws").await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "5");
        }
        other => panic!("a third socket: {:?}", other.map(|_| ())),
    }
    // One closes: its slot is free again once the server has seen it go.
    first.close(None).await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(socket) = connect(&app, "graphql-transport-ws").await {
                return socket;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(third.is_ok(), "a slot freed once a socket closed");
    // The open one still works.
    send(
        &mut second,
        json!({ "type": "start", "id": "1", "payload": { "query": "{ apiInfo { version } }" } }),
    )
    .await;
    assert_eq!(next_json(&mut second).await["type"], "data");
}
