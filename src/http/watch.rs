//! What a connection may cost while it sends nothing useful: a client gets `HTTP_HEADER_TIMEOUT`
//! to send a request's head once it has started one (or from connecting, for the first), and a
//! connection with no request in flight and no byte moving is closed after `HTTP_IDLE_TIMEOUT`;
//! one whose request is in flight but with nothing moving for `HTTP_REQUEST_TIMEOUT` plus that
//! (a client that stopped reading a streamed response) is dropped.
//!
//! hyper's own header timeout needs a timer, and it would also be the keep-alive idle timeout
//! (it starts while the connection waits for a next request), so one setting could not be both
//! short enough against clients that trickle headers and longer than a load balancer's idle
//! timeout. HTTP/2 and a connection that has not yet said which version it speaks have no such
//! timeout at all. So the accept loop watches each connection itself: its reads mark when a
//! request began to arrive, its requests mark when they start and when their response body is
//! done, and a timer per connection compares.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The bounds, from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header: Duration,
    pub idle: Duration,
    /// How long a connection with a request in flight may go without a byte read or written:
    /// longer than a request may take to answer (`HTTP_REQUEST_TIMEOUT`) plus the idle timeout,
    /// so only a client that stopped reading its responses (a slow-read attack) reaches it.
    pub stall: Duration,
}

/// What the watch decided about a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Look again at this instant.
    Until(Instant),
    /// A request's head did not arrive in time: drop the connection.
    HeaderTimedOut,
    /// Nothing in flight for the idle timeout: close it gracefully.
    Idle,
    /// A request in flight, and no byte moved either way for the stall bound: drop it.
    Stalled,
}

/// One connection's activity, shared by its reads, its requests and its watch.
pub struct Activity {
    opened: Instant,
    /// Requests being answered, until their response body is dropped.
    in_flight: AtomicUsize,
    /// When the last request ended (milliseconds after `opened`).
    idle_since: AtomicU64,
    /// When bytes of a request began to arrive with none in flight (milliseconds after
    /// `opened`, plus one; 0: nothing pending). A new connection starts pending: its first
    /// request is due.
    pending_since: AtomicU64,
    /// HTTP/2 peers send frames of their own between requests (PING, SETTINGS, WINDOW_UPDATE),
    /// so there only the idle rule applies once a request has come, and bytes moving on the
    /// socket say nothing: a peer's PINGs (and the server's answers) would keep a connection
    /// that serves nothing open for ever. There requests and their responses' bodies count.
    http2: AtomicBool,
    /// When a request last started or a response body last gave a frame (milliseconds after
    /// `opened`): what moving means on HTTP/2.
    responses_moved: AtomicU64,
    /// Successful reads and writes, counted (cheaper than a clock reading each).
    progress: AtomicU64,
    /// The watch's own memory: the count it saw last, and since when (milliseconds after
    /// `opened`) it has not changed.
    seen_progress: AtomicU64,
    seen_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            pending_since: AtomicU64::new(1),
            http2: AtomicBool::new(false),
            responses_moved: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            seen_progress: AtomicU64::new(0),
            seen_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.opened + Duration::from_millis(millis)
    }

    /// Bytes were read from the client.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.http2.load(Ordering::Relaxed)
            && self.pending_since.load(Ordering::Acquire) == 0
        {
            self.pending_since.store(self.now() + 1, Ordering::Release);
        }
    }

    /// A request's head arrived.
    pub fn head_arrived(&self, http2: bool) {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.pending_since.store(0, Ordering::Release);
    }

    /// The request whose head arrived last is in flight until the returned guard is dropped
    /// (with the response's body, or with the request when it is abandoned).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let request = InFlight(self.clone());
        request.moved();
        request
    }

    /// What to do now, given the limits.
    pub fn verdict(&self, limits: Limits) -> Verdict {
        let now = self.now();
        // Nothing tells the watch when a request ends or the next begins to arrive (a wake-up
        // per request would cost every request), so it looks again at least every half header
        // timeout: a stalled head is cut off at most that late.
        let next_look = now + millis(limits.header) / 2;
        let progress = self.progress.load(Ordering::Relaxed);
        if progress != self.seen_progress.swap(progress, Ordering::Relaxed) {
            self.seen_since.store(now, Ordering::Relaxed);
        }
        let http2 = self.http2.load(Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Requests bound themselves (`HTTP_REQUEST_TIMEOUT`) but a client that stops
            // reading its responses holds its request in flight for ever.
            let moved = if http2 {
                self.responses_moved.load(Ordering::Acquire)
            } else {
                self.seen_since.load(Ordering::Relaxed)
            };
            let stalled_at = moved + millis(limits.stall);
            if now >= stalled_at {
                return Verdict::Stalled;
            }
            return Verdict::Until(self.at(next_look.min(stalled_at)));
        }
        let pending = self.pending_since.load(Ordering::Acquire);
        if pending > 0 {
            let deadline = pending - 1 + millis(limits.header);
            if now >= deadline {
                return Verdict::HeaderTimedOut;
            }
            return Verdict::Until(self.at(deadline));
        }
        // A response handed to hyper whole may still be being written after its body was
        // dropped: on HTTP/1 bytes moving either way keep the connection from being idle. On
        // HTTP/2 they may be the peer's PINGs and their answers; there the idle clock starts
        // when the last response was handed over (the GOAWAY lets streams still being written
        // finish, up to the header timeout).
        let idle_since = self.idle_since.load(Ordering::Acquire);
        let active_since = if http2 {
            idle_since
        } else {
            idle_since.max(self.seen_since.load(Ordering::Relaxed))
        };
        let deadline = active_since + millis(limits.idle);
        if now >= deadline {
            return Verdict::Idle;
        }
        Verdict::Until(self.at(deadline.min(next_look)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// One request in flight on its connection; dropping it ends the request.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Its response's body gave a frame.
    pub fn moved(&self) {
        let activity = &self.0;
        activity
            .responses_moved
            .store(activity.now(), Ordering::Release);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket, telling its [`Activity`] when bytes arrive.
pub struct WatchedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.progress.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.progress.fetch_add(1, Ordering::Relaxed);
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        stall: Duration::from_secs(90),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let activity = Activity::new();
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::HeaderTimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_only_the_idle_timeout_counts_until_bytes_arrive() {
        let activity = Activity::new();
        activity.head_arrived(false);
        drop(activity.request_started());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        // A next request begins to arrive, and stalls.
        activity.bytes_arrived();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::HeaderTimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_and_its_end_starts_the_idle_clock() {
        let activity = Activity::new();
        activity.head_arrived(false);
        let request = activity.request_started();
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(60)).await;
            // Its response is being written.
            activity.progress.fetch_add(1, Ordering::Relaxed);
            assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        }
        drop(request);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_with_nothing_moving_for_the_stall_bound_is_dropped() {
        let activity = Activity::new();
        activity.head_arrived(false);
        let _request = activity.request_started();
        activity.progress.fetch_add(1, Ordering::Relaxed);
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(89)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_after_its_body_was_dropped_is_not_idle() {
        let activity = Activity::new();
        activity.head_arrived(false);
        // hyper took the whole body at once and dropped it; the bytes go out over minutes.
        drop(activity.request_started());
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(30)).await;
            activity.progress.fetch_add(1, Ordering::Relaxed);
            assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        }
        // The client stops reading: idle once nothing moved for the idle timeout.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::Idle);
    }

    /// `after` passes, then an HTTP/2 PING arrives and is answered.
    async fn pinged_after(activity: &Activity, after: Duration) {
        tokio::time::advance(after).await;
        activity.bytes_arrived();
        activity.progress.fetch_add(2, Ordering::Relaxed);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_pings_keep_no_connection_open() {
        let activity = Activity::new();
        activity.head_arrived(true);
        drop(activity.request_started());
        // The peer pings every few seconds, and each PING is answered.
        for _ in 0..20 {
            pinged_after(&activity, Duration::from_secs(3)).await;
            if activity.verdict(LIMITS) == Verdict::Idle {
                return;
            }
        }
        panic!(
            "still open after a minute of PINGs: {:?}",
            activity.verdict(LIMITS)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_http2_a_response_that_stopped_moving_is_stalled_whatever_the_pings() {
        let activity = Activity::new();
        activity.head_arrived(true);
        let request = activity.request_started();
        // Its body moves for a while…
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(60)).await;
            request.moved();
            assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        }
        // …then stops (the peer keeps its window shut), while PINGs come and go.
        for _ in 0..29 {
            pinged_after(&activity, Duration::from_secs(3)).await;
            assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        }
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_are_not_a_stalled_head() {
        let activity = Activity::new();
        activity.head_arrived(true);
        drop(activity.request_started());
        activity.bytes_arrived();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(activity.verdict(LIMITS), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(activity.verdict(LIMITS), Verdict::Idle);
    }
}
