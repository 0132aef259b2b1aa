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

#[tokio::test]
async fn no_keep_alive_request_is_dropped_by_a_shutdown() {
    let mut app = TestApp::spawn().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = app.url("/graphql");
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let stop = stop.clone();
            let url = url.clone();
            tokio::spawn(async move {
                // One keep-alive connection per client, reused for every request.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let (mut answered, mut dropped) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = client
                        .post(&url)
                        .json(&serde_json::json!({ "query": "{ __typename }" }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => answered += 1,
                        Ok(response) => dropped.push(format!("status {}", response.status())),
                        // After the listener closed: refused at connect, which is clean.
                        Err(error) if error.is_connect() => break,
                        Err(error) => dropped.push(format!("{error:?}")),
                    }
                }
                (answered, dropped)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = app.begin_shutdown().unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (answered, dropped) = client.await.unwrap();
        assert!(dropped.is_empty(), "dropped requests: {dropped:?}");
        total += answered;
    }
    assert!(total >= 32, "the clients were busy: {total}");
}

#[tokio::test]
async fn a_keep_alive_response_during_shutdown_closes_its_connection() {
    let mut app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    // Reads one response head (the probe's body is small and comes in the same read).
    async fn head(stream: &mut tokio::net::TcpStream) -> String {
        let mut buffer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buffer[..read]).to_ascii_lowercase()
    }

    stream.write_all(request).await.unwrap();
    let before = head(&mut stream).await;
    assert!(before.starts_with("http/1.1 200"), "{before}");
    assert!(!before.contains("connection: close"), "{before}");

    // The same keep-alive connection, once draining (within the linger for idle connections):
    // answered, and told to close.
    let server = app.begin_shutdown().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(request).await.unwrap();
    let during = head(&mut stream).await;
    assert!(during.starts_with("http/1.1 200"), "{during}");
    assert!(during.contains("connection: close"), "{during}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
