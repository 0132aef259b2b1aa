//! Liveness (the process serves) and readiness (its dependencies answer in time).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::HttpState;
use crate::state::AppState;

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn live() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// The readiness checks: every required dependency within `HEALTH_CHECK_TIMEOUT`, at once, and
/// whether the server is shutting down. (`/metrics` reads them too: `dependency_up`, `app_ready`.)
///
/// The dependencies are asked at most once per `HEALTH_CHECK_MAX_AGE`, and probes that arrive
/// while they are asked wait for that answer: `/health/ready` is open and never rate-limited, so
/// its cost must not grow with the rate at which anyone calls it. Shutting down shows at once.
pub async fn checks(app: &AppState) -> Checks {
    let probes = app.local::<Probes>();
    let mut checks = probes
        .dependencies
        .get(app.settings.http.health_check_max_age, || dependencies(app))
        .await;
    // Shutting down: tell the load balancer to send no more.
    if app.shutdown.is_cancelled() {
        checks.list.push(Check {
            name: "shutdown",
            ok: false,
            latency_ms: 0,
            error: Some("the server is shutting down".to_owned()),
        });
    }
    checks
}

/// The dependencies' answers, and when they were asked.
#[derive(Clone)]
pub struct Checks {
    pub checked_at: std::time::SystemTime,
    pub list: Vec<Check>,
}

impl Checks {
    pub fn ok(&self) -> bool {
        self.list.iter().all(|c| c.ok)
    }
}

async fn dependencies(app: &AppState) -> Checks {
    let checked_at = std::time::SystemTime::now();
    let limit = app.settings.http.health_check_timeout;
    let database = timed("database", limit, async {
        app.db.ping().await.map_err(|_| "query failed".to_owned())
    });
    let redis = async {
        app.settings.redis.as_ref()?;
        Some(
            timed("redis", limit, async {
                app.stores
                    .kv
                    .ping()
                    .await
                    .map_err(|_| "unreachable".to_owned())
            })
            .await,
        )
    };
    let (database, redis) = tokio::join!(database, redis);
    Checks {
        checked_at,
        list: std::iter::once(database).chain(redis).collect(),
    }
}

/// This instance's shared answers to probes: the dependency checks, and when `/metrics` last
/// read its scrape-time gauges.
#[derive(Default)]
pub(super) struct Probes {
    dependencies: Coalesced<Checks>,
    pub(super) gauges: Coalesced<()>,
}

/// One computation at a time, its result shared with every caller that asked while it ran and
/// with those that ask within `max_age` of it: a probe's cost is bounded whatever its rate.
pub(super) struct Coalesced<T> {
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Coalesced<T> {
    pub(super) async fn get<F: Future<Output = T>>(
        &self,
        max_age: Duration,
        compute: impl FnOnce() -> F,
    ) -> T {
        let asked = Instant::now();
        // Held while computing: callers that come meanwhile queue here, then find the answer.
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref()
            && (*at >= asked || at.elapsed() < max_age)
        {
            return value.clone();
        }
        let value = compute().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

/// 200 when every required dependency answers within `HEALTH_CHECK_TIMEOUT`, else 503.
/// Errors say what failed without internal detail (hosts, credentials).
pub async fn ready(State(state): State<HttpState>) -> Response {
    let checks = checks(&state.app).await;
    let ok = checks.ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "checkedAt": humantime::format_rfc3339_micros(checks.checked_at).to_string(),
        "checks": checks.list,
    });
    (status, [("cache-control", "no-store")], Json(body)).into_response()
}

async fn timed(
    name: &'static str,
    limit: Duration,
    check: impl Future<Output = Result<(), String>>,
) -> Check {
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, check).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(limit)
        )),
    };
    Check {
        name,
        ok: result.is_ok(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error: result.err(),
    }
}
