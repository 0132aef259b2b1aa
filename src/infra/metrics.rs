//! Prometheus metrics owned by each application instance (no global recorder, so several
//! instances in one process — tests — keep separate counts).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
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
    operation_names: RwLock<HashSet<String, FastHash>>,
    /// The per-request series, registered once.
    series: Series,
    /// Counters with one fixed label, registered once (`Metrics::count`).
    counters:
        RwLock<HashMap<(&'static str, &'static str, &'static str), metrics::Counter, FastHash>>,
}

/// Handles of the series every request updates (a counter and a histogram per label set), by
/// their label values: a request hashes its three values once and takes a read lock, instead of
/// building, hashing and looking up two label sets in the registry. The label sets are bounded
/// where they are made (routes, operation names); past [`Series::MAX`] sets, or on a hash
/// collision, the registry is asked directly.
#[derive(Default)]
struct Series(RwLock<HashMap<u64, Registered, FastHash>>);

/// The maps a request reads hash short keys: chosen by the code, already hashed, or (operation
/// names) at most [`MAX_OPERATION_LABELS`] of them, so a client choosing colliding keys gains
/// little. SipHash's resistance to chosen keys showed in the profile of every request.
type FastHash = foldhash::fast::RandomState;

/// A label set and its handles.
struct Registered {
    family: Family,
    values: [Box<str>; 3],
    counter: metrics::Counter,
    histogram: metrics::Histogram,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Http,
    Graphql,
}

impl Family {
    /// The counter's name, the histogram's, and the three label names.
    fn names(self) -> (&'static str, &'static str, [&'static str; 3]) {
        match self {
            Self::Http => (
                "http_requests_total",
                "http_request_duration_seconds",
                ["method", "route", "status"],
            ),
            Self::Graphql => (
                "graphql_operations_total",
                "graphql_operation_duration_seconds",
                ["operation", "type", "outcome"],
            ),
        }
    }
}

impl Series {
    const MAX: usize = 10_000;

    /// Runs `record` with the handles of `family{values}`, registering them (`register`) the first
    /// time. A known series is used under the read lock, not cloned: a clone and its drop are two
    /// more atomic operations on cache lines every worker thread shares.
    fn with(
        &self,
        family: Family,
        values: [&str; 3],
        register: impl FnOnce() -> (metrics::Counter, metrics::Histogram),
        record: impl FnOnce(&metrics::Counter, &metrics::Histogram),
    ) {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[family as u8]);
        for value in values {
            hasher.update(value.as_bytes());
            hasher.update(&[0]);
        }
        let key = hasher.digest();
        let same = |entry: &Registered| {
            entry.family == family && entry.values.iter().zip(values).all(|(a, b)| **a == *b)
        };
        {
            let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
            match map.get(&key) {
                Some(entry) if same(entry) => {
                    record(&entry.counter, &entry.histogram);
                    return;
                }
                // A collision, or too many series: not cached.
                Some(_) => {
                    drop(map);
                    let (counter, histogram) = register();
                    record(&counter, &histogram);
                    return;
                }
                None if map.len() >= Self::MAX => {
                    drop(map);
                    let (counter, histogram) = register();
                    record(&counter, &histogram);
                    return;
                }
                None => {}
            }
        }
        let (counter, histogram) = register();
        record(&counter, &histogram);
        let values = values.map(Box::<str>::from);
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| Registered {
                family,
                values,
                counter,
                histogram,
            });
    }
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
            operation_names: RwLock::default(),
            series: Series::default(),
            counters: RwLock::default(),
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

    /// Adds one to the counter `name{label="value"}`, for the counters a hot path updates with
    /// every request (cache results): the handle is registered once, not looked up each time.
    pub fn count(&self, name: &'static str, label: &'static str, value: &'static str) {
        let key = (name, label, value);
        // Counted under the read lock, not cloned out of it (a clone and its drop are two more
        // atomic operations on a shared cache line).
        if let Some(counter) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            counter.increment(1);
            return;
        }
        let counter = self.record(|| metrics::counter!(name, label => value));
        counter.increment(1);
        self.counters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(counter);
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut code = [0u8; 5];
        let status = status_text(status, &mut code);
        self.observe(Family::Http, [method, route, status], elapsed);
    }

    /// One GraphQL operation; `outcome` is `ok`, `field_error` or `request_error`.
    pub fn graphql_operation(
        &self,
        name: Option<&str>,
        kind: &str,
        outcome: &str,
        elapsed: Duration,
    ) {
        let operation = self.operation_label(name);
        self.observe(Family::Graphql, [operation, kind, outcome], elapsed);
    }

    /// One count and one duration of a per-request series (the duration without the last label).
    fn observe(&self, family: Family, values: [&str; 3], elapsed: Duration) {
        let register = || {
            let (total, duration, keys) = family.names();
            let labels: Vec<(&'static str, String)> = keys
                .into_iter()
                .zip(values)
                .map(|(key, value)| (key, value.to_owned()))
                .collect();
            self.record(|| {
                (
                    metrics::counter!(total, &labels[..]),
                    metrics::histogram!(duration, &labels[..2]),
                )
            })
        };
        self.series
            .with(family, values, register, |counter, histogram| {
                counter.increment(1);
                histogram.record(elapsed.as_secs_f64());
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

    fn operation_label<'a>(&self, name: Option<&'a str>) -> &'a str {
        let Some(name) = name
            .filter(|n| n.len() <= 100 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            return if name.is_some() { "other" } else { "anonymous" };
        };
        // A known name (every request but a name's first) under the read lock: requests on
        // several threads do not queue for it.
        if self
            .operation_names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
        {
            return name;
        }
        let mut names = self
            .operation_names
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if names.contains(name) {
            name
        } else if names.len() < MAX_OPERATION_LABELS {
            names.insert(name.to_owned());
            name
        } else {
            "other"
        }
    }
}

/// `status` as decimal text in `buffer` (a status code has three digits; anything else still
/// fits five).
fn status_text(status: u16, buffer: &mut [u8; 5]) -> &str {
    let mut n = status;
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).unwrap_or("0")
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
