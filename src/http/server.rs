//! The accept loop, with a shutdown that drops no request a client already sent.
//!
//! On the signal: stop accepting; every response from then on carries `Connection: close`, so
//! clients on keep-alive connections finish their current request and reconnect elsewhere; idle
//! connections get [`LINGER`] to send the request that may already be on its way (closing one at
//! the instant a client reuses it is how keep-alive requests get lost); then the remaining idle
//! connections are closed, in-flight requests finish, and whatever still runs after
//! `SHUTDOWN_TIMEOUT` is cut off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Version, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::watch::{Activity, Limits, Verdict, WatchedIo};
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
    let http = &state.settings.http;
    let limits = Limits {
        header: http.header_timeout,
        idle: http.idle_timeout,
        stall: http.request_timeout + http.idle_timeout,
    };
    // Beyond `HTTP_MAX_CONNECTIONS`, clients wait in the listen backlog for a slot.
    let cap = connection_cap(http.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let mut protocols = Builder::new(TokioExecutor::new());
    // One bound on a request's head for both versions (hyper's defaults: about 400 KiB for
    // HTTP/1, which every stalled connection could hold, and 16 KiB for HTTP/2).
    protocols.http1().max_buf_size(http.max_header_size);
    protocols
        .http2()
        .max_header_list_size(u32::try_from(http.max_header_size).unwrap_or(u32::MAX));
    // At the cap a slot frees and is taken again with every connection: warn once a minute.
    let mut warned: Option<Instant> = None;
    tokio::pin!(signal);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max = cap,
                        "every connection slot is taken (HTTP_MAX_CONNECTIONS); new clients wait"
                    );
                }
                tokio::select! {
                    () = &mut signal => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                }
            }
        };
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
                    let served = connection(
                        stream,
                        peer,
                        protocols.clone(),
                        router.clone(),
                        close_idle.clone(),
                        limits,
                        state.clone(),
                    );
                    connections.spawn(async move {
                        served.await;
                        drop(slot);
                    });
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

/// Files kept for everything but client connections: the database pool, Redis, upgraded
/// WebSockets, log and data files.
const RESERVED_FILES: u64 = 256;

/// How many connections to serve at once: `HTTP_MAX_CONNECTIONS`, or fewer when the process may
/// not open that many files (a connection past the limit would fail to be accepted, over and
/// over, instead of waiting in the backlog). The soft limit on open files is raised to the hard
/// one first, as Go's runtime does: systemd starts services with a soft limit of 1024.
fn connection_cap(configured: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let mut soft = limit.current;
        if let Some(current) = limit.current {
            // No hard limit: as many as the kernel gives one process (macOS refuses more).
            let target = limit.maximum.unwrap_or(1 << 20);
            let raised = Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            if target > current && setrlimit(Resource::Nofile, raised).is_ok() {
                soft = Some(target);
            }
        }
        if let Some(soft) = soft {
            let allowed =
                usize::try_from(soft.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
            if allowed < configured {
                tracing::warn!(
                    configured,
                    open_file_limit = soft,
                    serving = allowed,
                    "HTTP_MAX_CONNECTIONS is above what the open-file limit allows; serving fewer connections at once"
                );
                return allowed;
            }
        }
    }
    configured
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    protocols: Builder<TokioExecutor>,
    router: Router,
    close_idle: CancellationToken,
    limits: Limits,
    state: AppState,
) {
    let metrics = &state.metrics;
    let activity = Activity::new();
    let (heads, requests) = (activity.clone(), activity.clone());
    let draining = state.shutdown.clone();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        heads.head_arrived(request.version() == Version::HTTP_2);
        let http1 = request.version() < Version::HTTP_2;
        // In flight until the response's body is dropped (sent, or the client gone), or until
        // the request is abandoned before it has a response.
        let in_flight = requests.request_started();
        // The peer, as axum's `ConnectInfo` (put on the request here rather than by a layer on
        // the router: a router layer is one more boxed service on every request's path).
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().oneshot(request);
        let draining = draining.clone();
        async move {
            let mut response: Response = answer.await?;
            // Once shutdown began, an HTTP/1 response closes its connection after being sent.
            if http1 && draining.is_cancelled() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    in_flight.moved();
                    frame
                })
            }))
        }
    });
    let service = TowerToHyperService::new(service);
    let io = TokioIo::new(WatchedIo::new(stream, activity.clone()));
    let connection = protocols.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    // Once an idle connection is being closed: when to stop waiting for it.
    let mut cut_off = None;
    loop {
        let check = match (cut_off, activity.verdict(limits)) {
            (Some(at), _) if Instant::now() >= at => return,
            (Some(at), _) | (None, Verdict::Until(at)) => at,
            (None, Verdict::HeaderTimedOut) => {
                // Dropping the connection closes the socket.
                metrics.count("http_connections_timed_out_total", "reason", "header");
                tracing::debug!(peer = %peer, "no request head within HTTP_HEADER_TIMEOUT; closing");
                return;
            }
            (None, Verdict::Stalled) => {
                metrics.count("http_connections_timed_out_total", "reason", "stalled");
                tracing::debug!(peer = %peer, "a response not read for too long; closing");
                return;
            }
            (None, Verdict::Idle) => {
                metrics.count("http_connections_timed_out_total", "reason", "idle");
                connection.as_mut().graceful_shutdown();
                let at = Instant::now() + limits.header;
                cut_off = Some(at);
                at
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                return;
            }
            () = close_idle.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
            () = tokio::time::sleep_until(check) => {}
        }
    }
}
