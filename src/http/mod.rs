//! The HTTP surface: routes and every tower layer, assembled in one place.

pub mod caching;
pub mod caller;
pub mod compression;
pub mod csrf;
pub mod errors;
pub mod graphiql;
pub mod graphql;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod operation;
pub mod persisted;
pub mod prefetch;
pub mod rate_limit;
pub mod request_id;
pub mod response_cache;
pub mod server;
pub mod shared;
pub mod watch;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header,
};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::CompressionSettings;
use crate::schema::{self, Schemas};
use crate::state::AppState;
use shared::SharedLayer;

pub use request_id::X_REQUEST_ID;

/// What handlers share: the application state and the schema built from it.
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schemas: Schemas,
    /// Anonymous WebSockets open per client network.
    pub ws_addresses: std::sync::Arc<ws::slots::AddressSlots>,
    /// GraphQL bodies kept compressed.
    pub compression: std::sync::Arc<compression::CompressionMemo>,
}

/// The whole router, outermost layer first:
/// request id and RED metrics → panic guard → trace span/log line → JSON error shape → CORS →
/// CSRF check → caller (authentication + rate limit, one store round trip) → timeout → body
/// limit → routes (compression on every route but `/graphql`, which compresses its own bodies:
/// `compression.rs`). Only the first and the caller are `from_fn` layers (a boxed
/// future and a copy of the services beneath per request); the error shape maps the response,
/// the CSRF check is a [`guard::Guard`].
pub fn router(app: AppState) -> Router {
    let settings = &app.settings;
    let state = HttpState {
        schemas: Schemas::build(&app),
        app: app.clone(),
        ws_addresses: std::sync::Arc::default(),
        compression: std::sync::Arc::new(compression::CompressionMemo::new(
            settings.http.compression,
        )),
    };

    // `/graphql` compresses its bodies itself, each distinct body once (`compression.rs`): the
    // compression layer is on the other routes only.
    let graphql = Router::new()
        .route(
            "/graphql",
            get(graphql::get_handler).post(graphql::post_handler),
        )
        .with_state(state.clone());
    let mut routes = Router::new()
        .route("/graphql/ws", get(ws::handler))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::handler))
        .with_state(state)
        .merge(schema::routes(&app));
    if settings.graphql.graphiql {
        routes = routes.route(
            &format!("{}{{version}}/{{name}}", graphiql::ASSET_PREFIX),
            get(graphiql::asset),
        );
    }
    let routes = routes
        .fallback(errors::not_found)
        .layer(compression(settings.http.compression))
        .merge(graphql);

    // `SharedLayer` under each `from_fn` layer: those clone what is beneath them on every
    // request, and this way a clone stops at the next layer (`shared.rs`).
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(app.clone(), outermost))
        .layer(SharedLayer)
        .layer(CatchPanicLayer::custom(errors::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_id::make_span)
                .on_request(())
                .on_response(request_id::on_response)
                .on_failure(()),
        )
        // Only with traces on: no extra layer otherwise.
        .option_layer(crate::telemetry::otel::enabled().then(|| {
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(request_id::trace_response))
                .layer(SharedLayer)
        }))
        .map_response(errors::json_error_shape)
        .option_layer(cors(&settings.http.cors_origins))
        .layer(guard::GuardLayer::new({
            let app = app.clone();
            move |request: &axum::extract::Request| csrf::refusal(&app, request)
        }))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            caller::layer,
        ))
        .layer(SharedLayer)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.http.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(settings.http.body_limit));

    routes.layer(layers)
}

/// The outermost layer: the request id, and the RED metrics of everything beneath it.
async fn outermost(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let observed = metrics::Observed::start(&request);
    let response = request_id::layer(request, next).await;
    observed.finish(&app, &response);
    response
}

/// gzip and brotli for bodies of the configured size and more (never for gRPC, images or event
/// streams, as tower-http's default predicate), at the configured level; nothing when it is off.
fn compression(settings: Option<CompressionSettings>) -> CompressionLayer<impl Predicate> {
    let on = settings.is_some();
    let (min_size, level) = settings.map_or((u64::MAX, 4), |s| {
        (u64::try_from(s.min_size).unwrap_or(u64::MAX), s.level)
    });
    CompressionLayer::new()
        .quality(CompressionLevel::Precise(i32::from(level)))
        .compress_when(
            SizeAbove::new(min_size)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE)
                .and(move |_: StatusCode, _: Version, _: &HeaderMap, _: &Extensions| on),
        )
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(caller::API_KEY_HEADER),
                header::ACCEPT,
                X_REQUEST_ID,
                HeaderName::from_static("apollo-require-preflight"),
                HeaderName::from_static("x-apollo-operation-name"),
            ])
            .expose_headers([
                X_REQUEST_ID,
                header::RETRY_AFTER,
                header::ETAG,
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                HeaderName::from_static("traceresponse"),
            ])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}
