//! What a connection may cost while it sends nothing useful: the header timeout, the idle
//! timeout, and the cap on connections served at once (docs/security.md).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

const HEADER: Duration = Duration::from_millis(400);
const IDLE: Duration = Duration::from_secs(3);

async fn app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.http.header_timeout = HEADER;
        s.http.idle_timeout = IDLE;
    })
    .await
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads until the server closes the connection (or `within` passes): what it sent, and when.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| (received, started.elapsed()))
}

/// Reads until what arrived ends with `end`: a whole answer whose body ends so.
async fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(end) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(answer).unwrap()
}

/// Sends one request and reads its whole answer (`/health/live` is small and fixed).
async fn live(stream: &mut TcpStream) -> String {
    stream.write_all(LIVE).await.unwrap();
    read_until(stream, b"{\"status\":\"ok\"}").await
}

/// `http_connections_timed_out_total{reason}` from `/metrics`.
async fn timed_out(app: &TestApp, reason: &str) -> f64 {
    let series = format!("http_connections_timed_out_total{{reason=\"{reason}\"}} ");
    app.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_client_that_trickles_or_never_sends_its_head_is_cut_off_at_the_header_timeout() {
    let app = app().await;
    let address = format!("127.0.0.1:{}", app.port);

    // Connects and says nothing.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    // Starts a head and never finishes it, sending a byte now and then.
    let mut trickling = TcpStream::connect(&address).await.unwrap();
    trickling
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickling.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let (silent_closed, ()) = tokio::join!(until_closed(&mut silent, IDLE * 2), trickle);
    let (sent, after) = silent_closed.expect("the silent connection is closed");
    assert!(sent.is_empty());
    assert!(
        after < IDLE,
        "closed by the header timeout, not the idle one: {after:?}"
    );
    let (_, after) = until_closed(&mut trickling, IDLE * 2)
        .await
        .expect("the trickling connection is closed");
    assert!(after < IDLE, "{after:?}");

    let header_timeouts = timed_out(&app, "header").await;
    assert!(header_timeouts >= 2.0, "{header_timeouts}");
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_between_requests_not_the_header_one() {
    let app = app().await;
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", app.port))
        .await
        .unwrap();
    assert!(live(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Well past the header timeout, still open, and the next request is answered.
    tokio::time::sleep(HEADER * 3).await;
    assert!(live(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Then, with nothing more, it is closed after the idle timeout.
    let (sent, after) = until_closed(&mut stream, IDLE * 3)
        .await
        .expect("the idle connection is closed");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(after >= IDLE - Duration::from_millis(100), "{after:?}");
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_either_timeout() {
    let app = app().await;
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", app.port))
        .await
        .unwrap();
    // The head arrives at once; the body takes longer than both timeouts.
    let body = br#"{"query":"{ __typename }"}"#;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(4) {
        tokio::time::sleep(IDLE / 4).await;
        stream.write_all(chunk).await.unwrap();
    }
    let answer = read_until(&mut stream, b"}}").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""__typename":"QueryRoot""#), "{answer}");
}

#[tokio::test]
async fn http2_connections_serve_requests_and_close_when_idle() {
    let app = app().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..2 {
        let response = client.get(app.url("/health/live")).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        // Between requests longer than the header timeout: HTTP/2 has only the idle one.
        tokio::time::sleep(HEADER * 2).await;
    }
    // Past the idle timeout the server sends GOAWAY; the client opens a new connection.
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    let response = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(timed_out(&app, "idle").await >= 1.0);
}

/// A peer's PINGs (and the server's answers) are not activity: an HTTP/2 connection that serves
/// nothing is closed at the idle timeout however often its client pings, as Go's server does.
/// Otherwise a client could hold every connection slot with one PING a minute each.
#[tokio::test]
async fn http2_pings_do_not_keep_an_idle_connection_open() {
    let app = TestApp::spawn_with(|s| {
        s.http.header_timeout = HEADER;
        s.http.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_keep_alive_interval(Duration::from_millis(100))
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap();
    let response = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        timed_out(&app, "idle").await >= 1.0,
        "a pinging client kept its idle connection"
    );
    // The client opens a new connection for its next request.
    let response = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn beyond_the_connection_cap_clients_wait_until_a_slot_frees() {
    let app = TestApp::spawn_with(|s| {
        s.http.max_connections = 2;
        s.http.header_timeout = Duration::from_secs(30);
        s.http.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let address = format!("127.0.0.1:{}", app.port);
    let mut first = TcpStream::connect(&address).await.unwrap();
    let mut second = TcpStream::connect(&address).await.unwrap();
    assert!(live(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(live(&mut second).await.starts_with("HTTP/1.1 200"));

    // The kernel completes the third handshake, but the server does not take it up.
    let mut third = TcpStream::connect(&address).await.unwrap();
    third.write_all(LIVE).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(700), third.read(&mut [0u8; 64])).await;
    assert!(waited.is_err(), "answered beyond the cap");

    // A slot frees: the waiting client is served.
    drop(first);
    let answer = read_until(&mut third, b"{\"status\":\"ok\"}").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(live(&mut second).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_431_on_both_versions() {
    let app = TestApp::spawn_with(|s| s.http.max_header_size = 16 * 1024).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for client in [&app.client, &h2] {
        let within = client
            .get(app.url("/health/live"))
            .header("x-padding", "a".repeat(8 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(within.status(), 200);
        let over = client
            .get(app.url("/health/live"))
            .header("x-padding", "a".repeat(20 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(over.status(), 431, "{:?}", over.version());
    }
}

/// A large response: GraphiQL's script (about 1 MB, asked uncompressed), its path and size.
async fn large_response(app: &TestApp) -> (String, usize) {
    let page = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let end = page.find("graphiql.min.js\"").unwrap() + "graphiql.min.js".len();
    let start = page[..end].rfind('"').unwrap() + 1;
    let path = format!("/{}", &page[start..end]);
    let size = app
        .client
        .get(app.url(&path))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    assert!(size > 500_000, "{size}");
    (path, size)
}

/// A connection that holds little unread (a 4 KiB receive buffer), with `count` requests for
/// `path` sent at once (pipelined).
async fn pipelined(app: &TestApp, path: &str, count: usize) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n\r\n");
    stream
        .write_all(request.repeat(count).as_bytes())
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_client_that_stops_reading_its_responses_is_dropped() {
    // Nothing moving for HTTP_IDLE_TIMEOUT (1 s) with no request in flight, or for
    // HTTP_REQUEST_TIMEOUT + HTTP_IDLE_TIMEOUT (2 s) with one.
    let app = TestApp::spawn_with(|s| {
        s.http.header_timeout = HEADER;
        s.http.idle_timeout = Duration::from_secs(1);
        s.http.request_timeout = Duration::from_secs(1);
    })
    .await;
    let (path, size) = large_response(&app).await;

    // Sixteen of them, far more than the socket buffers hold, and nothing read for a while.
    let mut stream = pipelined(&app, &path, 16).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The server gave up on this client: what it had written, then the end.
    let (received, _) = until_closed(&mut stream, Duration::from_secs(20))
        .await
        .expect("the connection is closed");
    assert!(
        received.len() < 16 * size,
        "{} of {} bytes: every response was sent",
        received.len(),
        16 * size
    );
    // Its responses were handed to the connection whole, so it was idle (nothing in flight,
    // no byte moving) rather than stalled in the middle of a streamed body.
    assert!(timed_out(&app, "idle").await >= 1.0);
}
