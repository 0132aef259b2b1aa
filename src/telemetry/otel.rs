//! Traces with OpenTelemetry: `tracing` spans become OTel spans (`tracing-opentelemetry`),
//! exported over OTLP/HTTP in batches from a thread of their own. Off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set: then no layer is installed and
//! nothing here runs (docs/observability.md, "Traces").
//!
//! - **Propagation.** W3C `traceparent`/`tracestate` are read from every request (and WebSocket
//!   upgrade) and answered as `traceresponse`; outbound calls carry `traceparent`
//!   ([`inject`]); jobs keep the context of the request that enqueued them and link to it.
//! - **Sampling.** Parent-based ratio (`OTEL_TRACES_SAMPLER[_ARG]`), and a trace that ends in an
//!   error or a 5xx is exported regardless: every span is recorded, an unsampled trace's spans
//!   wait in [`Rescue`] until its local root ends, and are kept only if something failed.
//! - **Spans.** The request (`request`), the GraphQL operation (`graphql`), SQL statements
//!   (`db.query`, made from the connection's statement callback with their real timing, no
//!   values), jobs (`job`), and outbound HTTP (`http.client`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, Span as _, SpanContext, SpanId, SpanKind, Status,
    TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, ShouldSample, Span, SpanData, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::telemetry::{OtlpProtocol, TelemetrySettings, TraceSampling};

/// A tracer provider and the tracer the `tracing` layer and the hand-made spans use.
#[derive(Clone, Debug)]
pub struct Tracing {
    pub provider: SdkTracerProvider,
    pub tracer: SdkTracer,
}

/// Builds the exporter pipeline; `None` when tracing is off.
///
/// # Errors
/// The exporter cannot be built (a bad endpoint).
pub fn build(settings: &TelemetrySettings) -> anyhow::Result<Option<Tracing>> {
    let Some(endpoint) = &settings.endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.as_str())
        .with_protocol(match settings.protocol {
            OtlpProtocol::Json => Protocol::HttpJson,
            OtlpProtocol::Protobuf => Protocol::HttpBinary,
        })
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let mut attributes: Vec<KeyValue> = settings
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attributes.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(attributes)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Rescue::new(BatchSpanProcessor::builder(exporter).build()))
        .with_sampler(RatioOrFailure(settings.sampling))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("multipult");
    Ok(Some(Tracing { provider, tracer }))
}

// --- the tracer hand-made spans use -------------------------------------------------------

static GLOBAL: OnceLock<Tracing> = OnceLock::new();

thread_local! {
    /// Tests install a provider per test (on the test's own thread) instead of the global one.
    static LOCAL: RefCell<Option<Tracing>> = const { RefCell::new(None) };
}

/// Makes `tracing` the process's tracer (the binary, once).
pub fn install_global(tracing: Tracing) {
    let _ = GLOBAL.set(tracing);
}

/// Makes `tracing` this thread's tracer (tests), until the guard is dropped.
pub fn install_local(tracing: Tracing) -> LocalGuard {
    LOCAL.with(|local| *local.borrow_mut() = Some(tracing));
    LocalGuard
}

pub struct LocalGuard;

impl Drop for LocalGuard {
    fn drop(&mut self) {
        LOCAL.with(|local| *local.borrow_mut() = None);
    }
}

fn tracer() -> Option<SdkTracer> {
    LOCAL
        .with(|local| local.borrow().as_ref().map(|t| t.tracer.clone()))
        .or_else(|| GLOBAL.get().map(|t| t.tracer.clone()))
}

/// Whether traces are being made (on this thread).
pub fn enabled() -> bool {
    LOCAL.with(|local| local.borrow().is_some()) || GLOBAL.get().is_some()
}

/// Flushes and stops the global provider (at the end of `serve`).
pub fn shutdown() {
    if let Some(tracing) = GLOBAL.get() {
        let _ = tracing.provider.force_flush();
        let _ = tracing.provider.shutdown();
    }
}

// --- propagation --------------------------------------------------------------------------

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes the W3C trace context of an incoming request (if any) the parent of `span`.
pub fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Adds `traceparent` (and `tracestate`) for the current span to outbound `headers`.
pub fn inject(headers: &mut reqwest::header::HeaderMap) {
    if !enabled() {
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeadersMut(headers));
}

/// The current span's context as a `traceparent` value (for a job to link to later).
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| traceparent(span_context))
}

fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// `traceresponse` for the current span (W3C Trace Context Level 2).
pub fn traceresponse() -> Option<String> {
    current_traceparent()
}

/// The current trace's id (for log lines and error `extensions.traceId`).
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Links the current span to the span of a stored `traceparent` (a job to its request).
pub fn link_to(traceparent: &str) {
    if !enabled() {
        return;
    }
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(trace), Ok(span), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(span),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let linked = SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::NONE);
    tracing::Span::current().add_link(linked);
}

/// Marks the current span (and so its trace) as failed: exported whatever the sampling said.
pub fn mark_failed(message: &str) {
    if enabled() {
        tracing::Span::current().set_status(Status::error(message.to_owned()));
    }
}

/// Runs a call to the shared store, and with traces on makes it a client span of the current
/// one: `store.batch` (a request's credentials and rate limits), `store.cache_lookup` and
/// `store.cache_store` (the response cache), `store.persisted_lookup` and
/// `store.persisted_store` (automatic persisted queries), with `store.backend` (`memory` or `redis`) and
/// `attributes` (made only with traces on).
pub async fn store_call<T, E>(
    name: &'static str,
    backend: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !enabled() {
        return call.await;
    }
    let started = std::time::Instant::now();
    let result = call.await;
    let mut attributes = attributes();
    attributes.push(KeyValue::new("store.backend", backend));
    record_finished(name, started.elapsed(), attributes, result.is_err());
    result
}

/// A child span of the current one for work that already happened (its real start and end):
/// SQL statements timed by the connection, store calls, the operation, a slow resolver.
pub fn record_finished(
    name: &'static str,
    elapsed: Duration,
    attributes: Vec<KeyValue>,
    failed: bool,
) {
    let Some(tracer) = tracer() else {
        return;
    };
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let end = SystemTime::now();
    let start = end.checked_sub(elapsed).unwrap_or(end);
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    if failed {
        span.set_status(Status::error("failed"));
    }
    span.end_with_timestamp(end);
}

// --- sampling -----------------------------------------------------------------------------

/// Parent-based (or not) ratio sampling, recording what it does not sample, so that
/// [`Rescue`] can still export a trace that fails.
#[derive(Debug, Clone)]
struct RatioOrFailure(TraceSampling);

impl RatioOrFailure {
    fn by_ratio(&self, trace_id: TraceId) -> bool {
        if self.0.ratio >= 1.0 {
            return true;
        }
        if self.0.ratio <= 0.0 {
            return false;
        }
        // The spec's TraceIdRatioBased: the trace id's low 56 bits against the ratio.
        let bytes = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&bytes[9..16]);
        let value = u64::from_be_bytes(low);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let bound = (self.0.ratio * (1u64 << 56) as f64) as u64;
        value < bound
    }
}

impl ShouldSample for RatioOrFailure {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let sampled = match &parent {
            // A local parent decided for its whole trace; a remote one when parent-based.
            Some(parent) if !parent.is_remote() || self.0.parent_based => parent.is_sampled(),
            _ => self.by_ratio(trace_id),
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::RecordOnly
            },
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Most unsampled traces waiting for their root at once; beyond, the oldest are dropped.
const MAX_PENDING_TRACES: usize = 4096;
/// Most spans kept for one unsampled trace.
const MAX_PENDING_SPANS: usize = 512;
/// Most spans kept for all unsampled traces together (a few hundred bytes each): a trace whose
/// root lives long, such as a WebSocket connection's, gathers spans until it ends, and thousands
/// of them must not hold gigabytes. Beyond, the oldest traces are dropped.
const MAX_PENDING_SPANS_IN_ALL: usize = 65_536;

#[derive(Default)]
struct Pending {
    spans: Vec<SpanData>,
    failed: bool,
}

/// Exports sampled spans at once; holds an unsampled trace's spans until its local root ends,
/// then exports them (as sampled) only if one of them failed.
#[derive(Debug)]
struct Rescue<P> {
    inner: P,
    pending: Arc<Mutex<PendingTraces>>,
}

#[derive(Default)]
struct PendingTraces {
    traces: HashMap<TraceId, Pending>,
    /// Traces in the order they were first seen, oldest first. Ids of traces already finished
    /// stay until they are popped or compacted away, so that finishing one is O(1).
    order: std::collections::VecDeque<TraceId>,
    /// Spans held, all traces together.
    spans: usize,
}

impl std::fmt::Debug for PendingTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PendingTraces({} traces, {} spans)",
            self.traces.len(),
            self.spans
        )
    }
}

impl PendingTraces {
    /// Holds `span` of the unsampled `trace` (or only notes that it failed, past the bounds).
    fn hold(&mut self, trace: TraceId, span: SpanData) {
        while self.spans >= MAX_PENDING_SPANS_IN_ALL && self.drop_oldest() {}
        if !self.traces.contains_key(&trace) {
            while self.traces.len() >= MAX_PENDING_TRACES && self.drop_oldest() {}
            self.order.push_back(trace);
        }
        let entry = self.traces.entry(trace).or_default();
        entry.failed |= failed(&span);
        if entry.spans.len() < MAX_PENDING_SPANS {
            entry.spans.push(span);
            self.spans += 1;
        }
    }

    /// Drops the oldest trace still held; false when none is.
    fn drop_oldest(&mut self) -> bool {
        while let Some(oldest) = self.order.pop_front() {
            if let Some(dropped) = self.traces.remove(&oldest) {
                self.spans -= dropped.spans.len();
                return true;
            }
        }
        false
    }

    /// Takes `trace` out, its root having ended.
    fn finish(&mut self, trace: TraceId) -> Option<Pending> {
        let done = self.traces.remove(&trace)?;
        self.spans -= done.spans.len();
        // Finished ids left in `order`: compact once they outnumber the live ones.
        if self.order.len() > 2 * self.traces.len() + 64 {
            let traces = &self.traces;
            self.order.retain(|id| traces.contains_key(id));
        }
        Some(done)
    }
}

impl<P> Rescue<P> {
    fn new(inner: P) -> Self {
        Self {
            inner,
            pending: Arc::default(),
        }
    }
}

fn failed(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

impl<P: SpanProcessor> SpanProcessor for Rescue<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.inner.on_end(span);
            return;
        }
        let trace = span.span_context.trace_id();
        let root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
        let done = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.hold(trace, span);
            if root { pending.finish(trace) } else { None }
        };
        if let Some(done) = done.filter(|d| d.failed) {
            for mut span in done.spans {
                let context = &span.span_context;
                span.span_context = SpanContext::new(
                    context.trace_id(),
                    context.span_id(),
                    context.trace_flags().with_sampled(true),
                    context.is_remote(),
                    context.trace_state().clone(),
                );
                self.inner.on_end(span);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The `tracing` layer that turns spans into OTel spans.
pub fn layer<S>(tracing: &Tracing) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // Every span is recorded, sampled or not (`Rescue`), so what the layer does per span counts.
    // Off: busy/idle timings (an `Instant::now` at every enter and exit of a span that is
    // entered at each poll), the thread attributes (a span moves between a runtime's threads),
    // and activating an OpenTelemetry context on entry (nothing here reads
    // `opentelemetry::Context::current`: parents come from the `tracing` span).
    tracing_opentelemetry::layer()
        .with_tracer(tracing.tracer.clone())
        .with_error_records_to_exceptions(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts what reaches the exporter.
    #[derive(Debug, Default, Clone)]
    struct Counted(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Counted {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    /// An unsampled span of `trace` (a root when `parent` is 0).
    fn unsampled(trace: u128, span: u64, parent: u64, failed: bool) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::default(),
                false,
                TraceState::NONE,
            ),
            parent_span_id: if parent == 0 {
                SpanId::INVALID
            } else {
                SpanId::from(parent)
            },
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "span".into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: if failed {
                Status::error("failed")
            } else {
                Status::Unset
            },
            instrumentation_scope: opentelemetry::InstrumentationScope::default(),
        }
    }

    #[test]
    fn an_unsampled_trace_is_exported_whole_only_when_it_failed() {
        let exported = Counted::default();
        let rescue = Rescue::new(exported.clone());
        for (trace, failing) in [(1, false), (2, true)] {
            rescue.on_end(unsampled(trace, 11, 10, false));
            rescue.on_end(unsampled(trace, 12, 10, failing));
            rescue.on_end(unsampled(trace, 10, 0, false));
        }
        let spans = exported.0.lock().unwrap();
        assert_eq!(spans.len(), 3);
        assert!(
            spans
                .iter()
                .all(|s| s.span_context.trace_id() == TraceId::from(2)
                    && s.span_context.is_sampled())
        );
        let pending = rescue.pending.lock().unwrap();
        assert!(pending.traces.is_empty() && pending.spans == 0);
    }

    #[test]
    fn traces_whose_root_never_ends_are_held_within_bounds() {
        let rescue = Rescue::new(Counted::default());
        // Long-lived roots (WebSocket connections), each gathering spans.
        for trace in 0..(MAX_PENDING_TRACES as u128 + 100) {
            for span in 0..40 {
                rescue.on_end(unsampled(trace + 1, span + 2, 1, false));
            }
        }
        let pending = rescue.pending.lock().unwrap();
        assert!(pending.spans <= MAX_PENDING_SPANS_IN_ALL, "{pending:?}");
        assert!(pending.traces.len() <= MAX_PENDING_TRACES, "{pending:?}");
        assert_eq!(
            pending.spans,
            pending
                .traces
                .values()
                .map(|p| p.spans.len())
                .sum::<usize>()
        );
        // The newest are the ones kept.
        assert!(
            pending
                .traces
                .contains_key(&TraceId::from(MAX_PENDING_TRACES as u128 + 100))
        );
        assert!(!pending.traces.contains_key(&TraceId::from(1)));
    }

    #[test]
    fn finished_traces_leave_no_trail() {
        let rescue = Rescue::new(Counted::default());
        for trace in 1..=20_000u128 {
            rescue.on_end(unsampled(trace, 11, 10, false));
            rescue.on_end(unsampled(trace, 10, 0, false));
        }
        let pending = rescue.pending.lock().unwrap();
        assert!(pending.traces.is_empty());
        assert!(pending.order.len() <= 64, "{}", pending.order.len());
    }

    #[test]
    fn the_ratio_keeps_about_its_share_of_traces() {
        let sampler = RatioOrFailure(TraceSampling {
            parent_based: true,
            ratio: 0.25,
        });
        let kept = (0..4000u128)
            .filter(|n| {
                sampler.by_ratio(TraceId::from(
                    n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ))
            })
            .count();
        assert!((800..1200).contains(&kept), "{kept}");
        let none = RatioOrFailure(TraceSampling {
            parent_based: true,
            ratio: 0.0,
        });
        assert!(!none.by_ratio(TraceId::from(42u128)));
    }
}
