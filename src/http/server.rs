//! The accept loop, with a shutdown that drops no request a client already sent.
//!
//! On the signal: stop accepting; every response from then on carries `Connection: close`, so
//! clients on keep-alive connections finish their current request and reconnect elsewhere; idle
//! connections get [`LINGER`] to send the request that may already be on its way (closing one at
//! the instant a client reuses it is how keep-alive requests get lost); then the remaining idle
//! connections are closed, in-flight requests finish, and whatever still runs after
//! `SHUTDOWN_TIMEOUT` is cut off.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::state::AppState;

/// How long idle keep-alive connections may still send a request once shutdown began.
pub const LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `signal` completes, then shuts down as described above.
///
/// # Errors
/// Never in practice: accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let close_idle = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            // Reap finished connections as they go, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Responses and socket messages are written whole: Nagle's algorithm would
                    // only hold a small write back until the peer's delayed ACK.
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(connection(stream, peer, router.clone(), close_idle.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
    state.shutdown.cancel();
    drop(listener);
    let grace = state.settings.http.shutdown_timeout;
    let finished = tokio::time::timeout(grace, async {
        let linger = tokio::time::sleep(LINGER.min(grace));
        tokio::pin!(linger);
        loop {
            tokio::select! {
                joined = connections.join_next() => if joined.is_none() { break },
                () = &mut linger, if !close_idle.is_cancelled() => close_idle.cancel(),
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            timeout = %humantime::format_duration(grace),
            "in-flight requests did not finish in time; closing them"
        );
        connections.abort_all();
    }
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    close_idle: CancellationToken,
) {
    let service = router
        .layer(axum::Extension(ConnectInfo(peer)))
        .map_request(|request: Request<Incoming>| request.map(axum::body::Body::new));
    let service = TowerToHyperService::new(service);
    let builder = Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
        () = close_idle.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Once shutdown began, HTTP/1 responses close their connection after being sent.
pub async fn close_when_draining(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let http1 = request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && app.shutdown.is_cancelled() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
