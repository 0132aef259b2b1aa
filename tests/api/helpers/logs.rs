//! Server logs in tests: captured for assertions, or shown with `TEST_LOG=1`.

use serde_json::Value;

/// Log lines written while a [`LogCapture`] lives, as JSON objects (with the current span's
/// fields under `span`). Tests run on one thread, so the server's tasks log here too.
pub struct LogCapture {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CaptureWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
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

fn capture(traces: Option<&multipult::telemetry::otel::Tracing>) -> LogCapture {
    use tracing_subscriber::layer::SubscriberExt as _;
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(traces.map(multipult::telemetry::otel::layer))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(CaptureWriter(buffer.clone())),
        );
    // Every new subscriber makes tracing recompute each callsite's interest from a snapshot of
    // the live subscribers. Two of those at once (tests start in parallel) interleave per
    // callsite, and one taken before this subscriber existed could switch some of its callsites
    // off (a span missing from a line, now and then): one at a time.
    static REBUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let rebuilding = REBUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let guard = tracing::subscriber::set_default(subscriber);
    // Callsites first hit by other tests' threads (no subscriber there) may have cached "no
    // interest": ask every callsite again now that this thread listens.
    tracing::callsite::rebuild_interest_cache();
    drop(rebuilding);
    LogCapture {
        buffer,
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

/// With `TEST_LOG=1`, the servers' logs go to the test output (shown for failing tests, or all
/// with `--nocapture`).
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_test_writer()
                .try_init();
        }
    });
}
