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

#[derive(Serialize)]
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
pub async fn checks(app: &AppState) -> Vec<Check> {
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
    let mut checks: Vec<Check> = std::iter::once(database).chain(redis).collect();
    // Shutting down: tell the load balancer to send no more.
    if app.shutdown.is_cancelled() {
        checks.push(Check {
            name: "shutdown",
            ok: false,
            latency_ms: 0,
            error: Some("the server is shutting down".to_owned()),
        });
    }
    checks
}

/// 200 when every required dependency answers within `HEALTH_CHECK_TIMEOUT`, else 503.
/// Errors say what failed without internal detail (hosts, credentials).
pub async fn ready(State(state): State<HttpState>) -> Response {
    let checks = checks(&state.app).await;
    let ok = checks.iter().all(|c| c.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ok { "ok" } else { "unavailable" }, "checks": checks });
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
