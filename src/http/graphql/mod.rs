//! `GET|POST /graphql` following the GraphQL-over-HTTP specification: content negotiation
//! (`application/graphql-response+json` and `application/json`), 4xx for malformed requests,
//! no mutations over GET, and request errors told apart from field errors.
//!
//! `negotiation` picks the media type, `params` reads the request's parameters, the operation
//! runs through the shared pipeline (`super::operation`), and `response` shapes the outcome.

mod negotiation;
mod params;
mod response;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use negotiation::APPLICATION_JSON;
pub use negotiation::{MediaType, negotiate};
use params::{params_from_json, params_from_query_string, wants_html};
use response::{
    Outcome, no_acceptable_coding, not_acceptable, request_error, respond_array, respond_outcome,
};

use super::HttpState;
use super::caching::Cacheable;
use super::operation::{self, Params, Refusal, Transport};
use super::prefetch::Speculation;
use super::response_cache;
use crate::error::ErrorCode;
use crate::identity::Caller;
use crate::telemetry::RequestId;

/// What the layers above attach to a request, taken from it whole: axum's `Extension` and
/// `HeaderMap` extractors would clone each (the header map with every value in it).
struct Attached {
    request_id: RequestId,
    caller: Caller,
    speculation: Option<Speculation>,
}

impl Attached {
    /// The request's parts and body, and what was attached to it; `None` for a request the
    /// caller layer did not pass through.
    fn split(request: Request) -> Option<(Self, Parts, axum::body::Body)> {
        let (mut parts, body) = request.into_parts();
        let extensions = &mut parts.extensions;
        let attached = Self {
            request_id: extensions.remove()?,
            caller: extensions.remove()?,
            speculation: extensions.remove(),
        };
        Some((attached, parts, body))
    }
}

/// A request the caller layer did not pass through: a wiring mistake, never a client's.
fn unattached() -> Response {
    request_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalServerError,
        "internal server error",
        None,
    )
}

pub async fn get_handler(State(state): State<HttpState>, request: Request) -> Response {
    let Some((attached, parts, _body)) = Attached::split(request) else {
        return unattached();
    };
    let headers = &parts.headers;
    let params = params_from_query_string(parts.uri.query().unwrap_or_default());
    if super::compression::nothing_acceptable(headers) {
        return no_acceptable_coding();
    }
    if matches!(params, Ok(None)) && wants_html(headers) && state.app.settings.graphql.graphiql {
        return super::graphiql::page(&state, headers);
    }
    let Some(media) = negotiate(headers) else {
        return not_acceptable();
    };
    match params {
        Ok(Some(params)) => {
            let call = (
                &attached.request_id,
                &attached.caller,
                attached.speculation.as_ref(),
            );
            let outcome = run(&state, params, Transport::HttpGet, call).await;
            respond_outcome(&state, outcome, media, headers, true)
        }
        Ok(None) => request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the 'query' parameter is required",
            Some(media),
        ),
        Err(message) => request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            &message,
            Some(media),
        ),
    }
}

pub async fn post_handler(State(state): State<HttpState>, request: Request) -> Response {
    let Some((attached, mut parts, body)) = Attached::split(request) else {
        return unattached();
    };
    let headers = std::mem::take(&mut parts.headers);
    // Read as axum's `Bytes` extractor reads it (its body limit, its rejections).
    let body = match Bytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    if super::compression::nothing_acceptable(&headers) {
        return no_acceptable_coding();
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let bad = |status, code, message: &str| request_error(status, code, message, Some(media));

    if content_coded(&headers) {
        // RFC 9110 §15.5.16: say which codings would have been accepted.
        let mut response = bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "request bodies are not decoded: send them without Content-Encoding",
        );
        response.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        return response;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let media_type = content_type.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media_type.as_deref() {
        Some(APPLICATION_JSON) if !utf8_or_unlabelled(content_type.unwrap_or_default()) => {
            // JSON is UTF-8 (RFC 8259 §8.1); a body said to be in another charset is not read
            // as if it were UTF-8.
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "the request body must be UTF-8 (charset=utf-8, or no charset)",
            );
        }
        Some(APPLICATION_JSON) => {}
        Some(_) => {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "POST requests must have Content-Type: application/json",
            );
        }
        None => {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "the Content-Type header is required (application/json)",
            );
        }
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("the request body is not valid JSON: {e}"),
            );
        }
    };
    match value {
        Value::Array(items) => {
            let max = state.app.settings.graphql.max_batch_size;
            if max == 0 {
                return bad(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "batched requests are not enabled",
                );
            }
            if items.is_empty() || items.len() > max {
                return bad(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    &format!("a batch must hold from 1 to {max} operations"),
                );
            }
            let mut params = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                match params_from_json(item) {
                    Ok(p) => params.push(p),
                    Err(message) => {
                        return bad(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::BadRequest,
                            &format!("operation {index}: {message}"),
                        );
                    }
                }
            }
            let mut results = Vec::with_capacity(params.len());
            let mut windows = Vec::new();
            for p in params {
                let call = (&attached.request_id, &attached.caller, None);
                let mut outcome = run(&state, p, Transport::HttpPost, call).await;
                windows.append(&mut outcome.windows);
                results.push(outcome.into_bytes());
            }
            let mut response = respond_array(&state, media, &results, &headers);
            response
                .extensions_mut()
                .insert(super::rate_limit::RuleWindows(windows));
            response
        }
        other => match params_from_json(other) {
            Ok(params) => {
                let call = (
                    &attached.request_id,
                    &attached.caller,
                    attached.speculation.as_ref(),
                );
                let outcome = run(&state, params, Transport::HttpPost, call).await;
                respond_outcome(&state, outcome, media, &headers, false)
            }
            Err(message) => bad(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
        },
    }
}

/// `true` unless the media type names a charset other than UTF-8.
/// Whether the body says it is compressed (any `Content-Encoding` but `identity`): it would
/// otherwise be read as JSON and fail with a misleading message.
fn content_coded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
}

fn utf8_or_unlabelled(content_type: &str) -> bool {
    content_type.split(';').skip(1).all(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return true;
        };
        !name.trim().eq_ignore_ascii_case("charset") || {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
    })
}

/// Prepares and executes one operation (see `super::operation`), shaped for HTTP.
async fn run(
    state: &HttpState,
    params: Params,
    transport: Transport,
    call: (&RequestId, &Caller, Option<&Speculation>),
) -> Outcome {
    let (request_id, caller, speculation) = call;
    let app = &state.app;
    let prepared = match operation::prepare(app, params, transport, caller, request_id).await {
        Ok(prepared) => prepared,
        Err(refusal) => {
            app.metrics.graphql_operation(
                None,
                "unknown",
                "request_error",
                std::time::Duration::ZERO,
            );
            return Outcome::refused(refusal, request_id);
        }
    };
    let is_query = prepared.ticket.info.kind == Some(OperationType::Query);
    // The response cache: a live entry answers without executing. A document whose hints were
    // seen to keep it out of the cache is not looked up at all.
    let storable = prepared
        .known_cache_policy()
        .is_none_or(|policy| policy.storable());
    let cache_key = (is_query && app.settings.cache.responses && storable).then(|| {
        let request = &prepared.request;
        let variables = serde_json::to_value(&request.variables).unwrap_or(Value::Null);
        response_cache::key(
            &request.query,
            request.operation_name.as_deref(),
            &variables,
            &prepared.ticket.cache_scope,
        )
    });
    // What the cache did, for `extensions.cache` (`RESPONSE_CACHE_EXTENSIONS`): a query the
    // cache could have answered, looked up (a miss) or not (a bypass).
    let reported =
        is_query && app.settings.cache.responses && app.settings.cache.response_extensions;
    let mut status = reported.then_some(response_cache::Status::Bypass);
    let mut generation = None;
    if let Some(key) = &cache_key {
        let lookup = match speculation {
            Some(speculation) => speculation.lookup(app, key).await,
            None => response_cache::lookup(app, key).await,
        };
        match lookup {
            response_cache::Lookup::Hit(entry) => {
                let ticket = prepared.ticket;
                app.metrics.graphql_operation(
                    ticket.info.name.as_deref(),
                    ticket.info.kind_label(),
                    "ok",
                    std::time::Duration::ZERO,
                );
                let report = reported.then(|| response_cache::Report {
                    status: response_cache::Status::Hit,
                    scope: response_cache::Scope::of(&ticket.cache_scope),
                    max_age: response_cache::kept_seconds(entry.meta.policy),
                    stored: None,
                    ttl: Some(entry.meta.seconds_left()),
                });
                let outcome = Outcome {
                    body: Value::Null,
                    executed: true,
                    status: None,
                    headers: HeaderMap::new(),
                    cacheable: Some(Cacheable {
                        policy: entry.meta.policy,
                        authenticated: ticket.authenticated,
                        etag: Some(entry.meta.etag),
                    }),
                    windows: ticket.windows,
                    bytes: Some(entry.body),
                };
                return with_report(outcome, report);
            }
            response_cache::Lookup::Miss {
                generation: current,
            } => {
                generation = Some(current);
                status = status.map(|_| response_cache::Status::Miss);
            }
            response_cache::Lookup::Unavailable => {}
        }
    }
    // Boxed: a cached answer (above) never gets here, and inline the execution would make every
    // request's future, moved whole into axum's box, kilobytes larger (docs/benchmarks.md).
    let executed = Box::pin(operation::execute(app, &state.schemas, prepared)).await;
    let storable = executed
        .ticket
        .phase
        .cache_policy()
        .is_some_and(|policy| policy.storable());
    if !storable && let Some(speculation) = speculation {
        // Its hints keep this document out: the next request like it reads nothing early.
        speculation.forget(app);
    }
    let response = match executed.response {
        Ok(response) => response,
        Err(stopped) => {
            let mut refusal = Refusal::from_error(&stopped.error(app));
            refusal.status = Some(match stopped {
                operation::Stopped::Deadline => StatusCode::SERVICE_UNAVAILABLE,
                operation::Stopped::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
            });
            let mut outcome = Outcome::refused(refusal, request_id);
            outcome.executed = executed.executed;
            outcome.windows = executed.ticket.windows;
            return outcome;
        }
    };
    let serialized = serde_json::to_vec(&Body {
        data: executed.executed.then_some(&response.data),
        errors: &response.errors,
        extensions: &response.extensions,
    })
    .unwrap_or_else(|_| b"{}".to_vec());
    let cacheable =
        (executed.executed && response.errors.is_empty() && is_query).then_some(Cacheable {
            policy: executed.ticket.phase.cache_policy().unwrap_or_default(),
            authenticated: executed.ticket.authenticated,
            etag: None,
        });
    let mut headers = response.http_headers;
    if let Some(budget) = executed.ticket.phase.budget() {
        super::rate_limit::add_budget_headers(&mut headers, &budget);
    }
    let mut cacheable = cacheable;
    let mut stored = false;
    if let (Some(cacheable), Some(key), Some(generation)) =
        (cacheable.as_mut(), &cache_key, generation)
    {
        let tag = super::caching::etag(&serialized);
        stored = Box::pin(response_cache::store(
            app,
            key,
            &serialized,
            (cacheable.policy, &tag),
            executed.ticket.tags.collected(),
            generation,
        ))
        .await;
        cacheable.etag = Some(tag);
    }
    let report = status.map(|status| response_cache::Report {
        status,
        scope: response_cache::Scope::of(&executed.ticket.cache_scope),
        max_age: executed
            .ticket
            .phase
            .cache_policy()
            .map_or(0, response_cache::kept_seconds),
        stored: (status == response_cache::Status::Miss).then_some(stored),
        ttl: None,
    });
    let outcome = Outcome {
        body: Value::Null,
        executed: executed.executed,
        status: None,
        headers,
        cacheable,
        windows: executed.ticket.windows,
        bytes: Some(Bytes::from(serialized)),
    };
    with_report(outcome, report)
}

/// The outcome with `report` as its body's `extensions.cache`. Its `ETag` stays the tag of the
/// body without the report — the same for a hit, a miss and a 304 — and turns weak (RFC 9110
/// §8.8.1): the bytes sent differ with the report.
fn with_report(mut outcome: Outcome, report: Option<response_cache::Report>) -> Outcome {
    let (Some(report), Some(bytes)) = (report, outcome.bytes.as_ref()) else {
        return outcome;
    };
    let Some(reported) = report.add_to(bytes) else {
        return outcome;
    };
    if let Some(cacheable) = outcome.cacheable.as_mut() {
        let tag = cacheable
            .etag
            .take()
            .unwrap_or_else(|| super::caching::etag(bytes));
        cacheable.etag = Some(format!("W/{tag}"));
    }
    outcome.bytes = Some(Bytes::from(reported));
    outcome
}

/// An executed operation's response body, serialised straight from async-graphql's response:
/// its maps keep the order of the selection set, as the specification asks of a response, and
/// nothing is copied into an intermediate JSON tree.
#[derive(serde::Serialize)]
struct Body<'a> {
    /// Present once execution started (`null` when it failed at a non-null root field).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}
