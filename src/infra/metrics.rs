//! Prometheus metrics owned by each application instance (no global recorder, so several
//! instances in one process — tests — keep separate counts).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Distinct GraphQL operation names kept as labels; later ones are counted as `other`, so a
/// client sending random names cannot blow up the time series count.
const MAX_OPERATION_LABELS: usize = 500;

const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    operation_names: Mutex<HashSet<String>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let metrics = Arc::new(Self {
            recorder,
            handle,
            operation_names: Mutex::new(HashSet::new()),
        });
        // Histograms buffer samples until drained; drain them even when nobody scrapes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&metrics);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(m) => m.handle.run_upkeep(),
                        None => return,
                    }
                }
            });
        }
        metrics
    }

    /// Runs `f` with this instance's recorder, so `metrics::counter!` and friends land here.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.record(|| {
            metrics::counter!("http_requests_total", &labels).increment(1);
            metrics::histogram!("http_request_duration_seconds", &labels[..2])
                .record(elapsed.as_secs_f64());
        });
    }

    /// One GraphQL operation; `outcome` is `ok`, `field_error` or `request_error`.
    pub fn graphql_operation(
        &self,
        name: Option<&str>,
        kind: &str,
        outcome: &str,
        elapsed: Duration,
    ) {
        let labels = [
            ("operation", self.operation_label(name)),
            ("type", kind.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        self.record(|| {
            metrics::counter!("graphql_operations_total", &labels).increment(1);
            metrics::histogram!("graphql_operation_duration_seconds", &labels[..2])
                .record(elapsed.as_secs_f64());
        });
    }

    /// Counts an open WebSocket (`protocol`: its subprotocol) until the guard is dropped.
    pub fn websocket_open(self: &Arc<Self>, protocol: &'static str) -> GaugeGuard {
        self.gauge_guard("websocket_connections", ("protocol", protocol))
    }

    /// Counts an operation running on a WebSocket (`kind`: `subscription`, `query`, `mutation`,
    /// `unknown`) until the guard is dropped.
    pub fn websocket_operation(self: &Arc<Self>, kind: &'static str) -> GaugeGuard {
        self.gauge_guard("websocket_operations", ("type", kind))
    }

    fn gauge_guard(
        self: &Arc<Self>,
        name: &'static str,
        label: (&'static str, &'static str),
    ) -> GaugeGuard {
        self.record(|| metrics::gauge!(name, label.0 => label.1).increment(1.0));
        GaugeGuard {
            metrics: self.clone(),
            name,
            label,
        }
    }

    fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name
            .filter(|n| n.len() <= 100 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            return if name.is_some() { "other" } else { "anonymous" }.to_owned();
        };
        let mut names = self
            .operation_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if names.contains(name) || names.len() < MAX_OPERATION_LABELS {
            names.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// One unit of a gauge, given back when dropped (however the holder ends: closed, aborted,
/// panicked).
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    name: &'static str,
    label: (&'static str, &'static str),
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let (name, (key, value)) = (self.name, self.label);
        self.metrics
            .record(|| metrics::gauge!(name, key => value).decrement(1.0));
    }
}
