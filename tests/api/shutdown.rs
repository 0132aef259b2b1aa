//! Graceful shutdown: in-flight requests finish, new connections are refused, sockets get 1001.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::TestApp;
use crate::ws;

#[tokio::test]
async fn an_in_flight_request_finishes_when_shutdown_is_requested() {
    let mut app = TestApp::spawn().await;
    let body = br#"{"query":"{ apiInfo { version } }"}"#;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The request is in flight (its body half sent) when shutdown starts.
    let server = app.begin_shutdown().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.is_finished(),
        "the server waits for the in-flight request"
    );
    stream.write_all(&body[10..]).await.unwrap();

    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(env!("CARGO_PKG_VERSION")), "{response}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Stopped: nobody accepts new connections.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn websockets_are_closed_with_1001_on_shutdown() {
    let mut app = TestApp::spawn().await;
    let mut socket = ws::connect(&app, "graphql-transport-ws").await.unwrap();
    ws::init(&mut socket).await;
    let server = app.begin_shutdown().unwrap();
    assert_eq!(ws::close_code(&mut socket).await, 1001);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
