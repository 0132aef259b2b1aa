//! `GET /metrics` (Prometheus text) and the RED metrics of each request that feed it.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use super::HttpState;
use crate::error::{ErrorCode, error_response};
use crate::state::AppState;

/// What the RED metrics take of a request before it runs: every request is counted and timed by
/// method, matched route and status (`super::outermost`, around every other layer, so a panic's
/// 500 and a refusal of any layer are counted too).
pub struct Observed {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
}

impl Observed {
    pub fn start(request: &Request) -> Self {
        Self {
            started: Instant::now(),
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
        }
    }

    pub fn finish(self, app: &AppState, response: &Response) {
        app.metrics.http_request(
            self.method.as_str(),
            self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            response.status().as_u16(),
            self.started.elapsed(),
        );
    }
}

/// Open when `METRICS_TOKEN` is unset; otherwise it requires `Authorization: Bearer <token>`.
pub async fn handler(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.app.settings.http.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), token.expose_secret().as_bytes()) {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "a valid metrics token is required",
                None,
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&state.app).await,
    )
        .into_response()
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The exposition text, with gauges read at scrape time: the readiness checks, the circuit
/// breaker, and (one grouped query each, bounded by `HEALTH_CHECK_TIMEOUT`) the job queue by state
/// and the active sessions.
async fn render(app: &AppState) -> String {
    let bound = app.settings.http.health_check_timeout;
    let checks = super::health::checks(app).await;
    app.metrics.record(|| {
        for check in checks.list.iter().filter(|c| c.name != "shutdown") {
            metrics::gauge!("dependency_up", "dependency" => check.name).set(if check.ok {
                1.0
            } else {
                0.0
            });
        }
        let ready = checks.ok();
        metrics::gauge!("app_ready").set(if ready { 1.0 } else { 0.0 });
    });
    // Queries, at most once per `HEALTH_CHECK_MAX_AGE` whatever the scrape rate (as the checks).
    app.local::<super::health::Probes>()
        .gauges
        .get(app.settings.http.health_check_max_age, || {
            database_gauges(app, bound)
        })
        .await;
    if let Some(breaker) = &app.stores.breaker {
        app.metrics.record(|| {
            metrics::gauge!("store_circuit_open").set(if breaker.is_open() { 1.0 } else { 0.0 });
            metrics::counter!("store_circuit_opened_total").absolute(breaker.opened());
            metrics::counter!("store_circuit_rejected_total").absolute(breaker.rejected());
        });
    }
    if let Some(joins) = &app.stores.joins {
        app.metrics.record(|| {
            metrics::counter!("store_batches_total").absolute(joins.batches());
            metrics::counter!("store_batch_calls_total").absolute(joins.calls());
        });
    }
    app.metrics.render()
}

/// The gauges read from the database: every feature's, the job queue by state, active sessions.
async fn database_gauges(app: &AppState, bound: std::time::Duration) {
    for scrape in crate::schema::scrapers() {
        let _ = tokio::time::timeout(bound, scrape(app)).await;
    }
    if let Ok(Ok(stats)) = tokio::time::timeout(bound, app.jobs.stats()).await {
        app.metrics.record(|| {
            for (state, n) in [
                ("pending", stats.pending),
                ("running", stats.running),
                ("dead", stats.dead),
            ] {
                metrics::gauge!("job_queue_depth", "state" => state).set(n as f64);
            }
        });
    }
    if let Ok(Ok(sessions)) =
        tokio::time::timeout(bound, crate::identity::sessions::count_active(&app.db)).await
    {
        app.metrics
            .record(|| metrics::gauge!("auth_active_sessions").set(sessions as f64));
    }
}
