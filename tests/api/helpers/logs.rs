//! Server logs in tests: captured for assertions, or shown with `TEST_LOG=1`.

use serde_json::Value;

/// Log lines written while a [`LogCapture`] lives, as JSON objects (with the current span's
/// fields under `span`). Tests run on one thread, so the server's tasks log here too.
pub struct LogCapture {
    buffer: Buffer,
    /// Gives the thread its previous sink back.
    _sink: SinkScope,
    /// Only with traces: a subscriber of the test's own, with the OpenTelemetry layer.
    _guard: Option<tracing::subscriber::DefaultGuard>,
}

type Buffer = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

thread_local! {
    /// Where this thread's log lines go while a [`LogCapture`] lives.
    static SINK: std::cell::RefCell<Option<Buffer>> = const { std::cell::RefCell::new(None) };
}

fn capturing() -> bool {
    SINK.with(|sink| sink.borrow().is_some())
}

struct SinkScope(Option<Buffer>);

impl Drop for SinkScope {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = self.0.take());
    }
}

/// Writes into this thread's sink (nothing when there is none).
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(buffer) = sink.borrow().as_ref() {
                buffer.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadSink {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        Self
    }
}

pub fn capture_logs() -> LogCapture {
    capture(None)
}

/// [`capture_logs`], with the OpenTelemetry layer of `traces` beside it (as the binary installs
/// it when `OTEL_*` says so).
pub fn capture_logs_and_traces(traces: &multipult::telemetry::otel::Tracing) -> LogCapture {
    capture(Some(traces))
}

/// The same JSON lines as the binary writes, with the current span's fields.
fn json_lines<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
}

fn capture(traces: Option<&multipult::telemetry::otel::Tracing>) -> LogCapture {
    use tracing_subscriber::layer::SubscriberExt as _;
    // The process-wide subscriber first: see `init_test_logs`.
    init_test_logs();
    let buffer: Buffer = std::sync::Arc::default();
    let previous = SINK.with(|sink| sink.borrow_mut().replace(buffer.clone()));
    let guard = traces.map(|traces| {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with(multipult::telemetry::otel::layer(traces))
            .with(json_lines(ThreadSink));
        tracing::subscriber::set_default(subscriber)
    });
    LogCapture {
        buffer,
        _sink: SinkScope(previous),
        _guard: guard,
    }
}

impl LogCapture {
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.buffer.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// The test binary's process-wide subscriber, installed once: JSON lines into the sink of
/// whichever thread has a [`LogCapture`] (nothing is formatted elsewhere) and, with
/// `TEST_LOG=1`, the servers' logs in the test output (shown for failing tests, or all with
/// `--nocapture`).
///
/// Captures used to install a subscriber of their own per test thread, with no global one. Then
/// a callsite's interest (and tracing's maximum level) is worked out from whichever subscribers
/// are alive at that moment: with tests starting and ending in parallel, a request span could be
/// switched off for a while, and a line came without its `span` now and then. With one global
/// subscriber that is always interested, and the choice made per event, that cannot happen.
pub fn init_test_logs() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let captured = json_lines(ThreadSink).with_filter(
            tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
                *metadata.level() <= tracing::Level::DEBUG && capturing()
            })
            .with_max_level_hint(tracing::Level::DEBUG),
        );
        let shown = std::env::var("TEST_LOG").is_ok_and(|v| v == "1").then(|| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
        });
        let _ = tracing_subscriber::registry()
            .with(captured)
            .with(shown)
            .try_init();
    });
}
