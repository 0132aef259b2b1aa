//! `GET|POST /graphql` following the GraphQL-over-HTTP specification: content negotiation
//! (`application/graphql-response+json` and `application/json`), 4xx for malformed requests,
//! no mutations over GET, and request errors told apart from field errors.

use async_graphql::parser::types::OperationType;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::HttpState;
use super::caching::{self, Cacheable};
use super::operation::{self, Params, Refusal, Transport};
use crate::error::{ErrorCode, error_response};
use crate::identity::Caller;
use crate::telemetry::RequestId;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const APPLICATION_JSON: &str = "application/json";

/// The response media type the client accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

/// Picks the media type from `Accept` by quality; a missing header, `*/*` and `application/*`
/// mean `application/json`. `None` when nothing we can produce is acceptable.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    let mut best: Option<(f32, u8, MediaType)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        // Specific types win over wildcards at equal quality.
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => (3, MediaType::GraphqlResponseJson),
            APPLICATION_JSON => (2, MediaType::Json),
            "application/*" | "*/*" => (1, MediaType::Json),
            _ => continue,
        };
        if quality <= 0.0 {
            continue;
        }
        if best.is_none_or(|(q, s, _)| quality > q || (quality == q && candidate.0 > s)) {
            best = Some((quality, candidate.0, candidate.1));
        }
    }
    best.map(|(_, _, media)| media)
}

/// A request error before anything executed, in the negotiated media type (or JSON when the
/// failure is the negotiation itself).
fn request_error(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    media: Option<MediaType>,
) -> Response {
    let mut response = error_response(status, code, message, None);
    if let Some(media) = media {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, media.content_type());
    }
    response
}

fn params_from_json(value: Value) -> Result<Params, String> {
    let Value::Object(mut object) = value else {
        return Err("the request body must be a JSON object".into());
    };
    let query = match object.remove("query") {
        Some(Value::String(q)) => Some(q),
        None | Some(Value::Null) => None,
        Some(_) => return Err("the 'query' parameter must be a string".into()),
    };
    let operation_name = match object.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err("the 'operationName' parameter must be a string".into()),
    };
    let variables = optional_object(object.remove("variables"), "variables")?;
    let extensions = optional_object(object.remove("extensions"), "extensions")?;
    if query.is_none()
        && !extensions
            .as_ref()
            .is_some_and(|e| e.contains_key("persistedQuery"))
    {
        return Err("the 'query' parameter is required".into());
    }
    Ok(Params {
        query,
        operation_name,
        variables,
        extensions,
    })
}

fn optional_object(value: Option<Value>, name: &str) -> Result<Option<Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(format!("the '{name}' parameter must be an object")),
    }
}

fn params_from_query_string(raw: &str) -> Result<Option<Params>, String> {
    let mut query = None;
    let mut operation_name = None;
    let mut variables = None;
    let mut extensions = None;
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let slot = match key.as_ref() {
            "query" => &mut query,
            "operationName" => &mut operation_name,
            "variables" => &mut variables,
            "extensions" => &mut extensions,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("the '{key}' parameter is given more than once"));
        }
        *slot = Some(value.into_owned());
    }
    if query.is_none() && extensions.is_none() {
        return Ok(None);
    }
    let parse_object =
        |text: Option<String>, name: &str| -> Result<Option<Map<String, Value>>, String> {
            match text.filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(text) => {
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|_| format!("the '{name}' parameter must be JSON"))?;
                    optional_object(Some(value), name)
                }
            }
        };
    Ok(Some(Params {
        query,
        operation_name: operation_name.filter(|n| !n.is_empty()),
        variables: parse_object(variables, "variables")?,
        extensions: parse_object(extensions, "extensions")?,
    }))
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

pub async fn get_handler(
    State(state): State<HttpState>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params_from_query_string(raw.as_deref().unwrap_or_default());
    if matches!(params, Ok(None)) && wants_html(&headers) && state.app.settings.graphql.graphiql {
        let page = async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("multipult GraphiQL")
            .finish();
        return Html(page).into_response();
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    match params {
        Ok(Some(params)) => {
            let outcome = run(&state, params, Transport::HttpGet, &request_id, &caller).await;
            respond_outcome(&state, outcome, media, &headers)
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

pub async fn post_handler(
    State(state): State<HttpState>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let bad = |status, code, message: &str| request_error(status, code, message, Some(media));

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
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
            for p in params {
                let outcome = run(&state, p, Transport::HttpPost, &request_id, &caller).await;
                results.push(outcome.body);
            }
            respond(
                StatusCode::OK,
                media,
                &Value::Array(results),
                HeaderMap::new(),
            )
        }
        other => match params_from_json(other) {
            Ok(params) => {
                let outcome = run(&state, params, Transport::HttpPost, &request_id, &caller).await;
                respond_outcome(&state, outcome, media, &headers)
            }
            Err(message) => bad(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
        },
    }
}

fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::NotAcceptable,
        "acceptable response types: application/graphql-response+json, application/json",
        None,
    )
}

/// The outcome of one operation, before it is given a status code.
struct Outcome {
    body: Value,
    /// `false` for request errors: nothing executed, and the body has no `data`.
    executed: bool,
    /// A status decided before execution (405 for a GET mutation, 401 for bad credentials).
    status: Option<StatusCode>,
    headers: HeaderMap,
    /// Set for queries that executed without errors: they may be cached.
    cacheable: Option<Cacheable>,
}

impl Outcome {
    fn refused(refusal: Refusal, request_id: &RequestId) -> Self {
        Self {
            body: json!({ "errors": refusal.errors_json(request_id) }),
            executed: false,
            status: refusal.status,
            headers: refusal.headers,
            cacheable: None,
        }
    }
}

fn respond_outcome(
    state: &HttpState,
    outcome: Outcome,
    media: MediaType,
    request_headers: &HeaderMap,
) -> Response {
    let status = if let Some(status) = outcome.status {
        status
    } else if outcome.executed || media == MediaType::Json {
        // Legacy `application/json` clients expect 200 with the errors in the body.
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let bytes = serde_json::to_vec(&outcome.body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = respond_bytes(status, media, bytes.clone(), outcome.headers);
    response = caching::apply(
        response,
        &bytes,
        outcome.cacheable,
        &state.app.settings.cache,
        request_headers,
        &state.app.metrics,
    );
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::UNAUTHORIZED => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        _ => {}
    }
    response
}

fn respond(status: StatusCode, media: MediaType, body: &Value, headers: HeaderMap) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = respond_bytes(status, media, bytes, headers);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn respond_bytes(
    status: StatusCode,
    media: MediaType,
    bytes: Vec<u8>,
    headers: HeaderMap,
) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().extend(headers);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

/// Prepares and executes one operation (see `operation`), shaped for HTTP.
async fn run(
    state: &HttpState,
    params: Params,
    transport: Transport,
    request_id: &RequestId,
    caller: &Caller,
) -> Outcome {
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
    let executed = operation::execute(app, &state.schema, prepared).await;
    let Some(response) = executed.response else {
        let mut refusal = Refusal::from_error(&operation::deadline_error(app));
        refusal.status = Some(StatusCode::SERVICE_UNAVAILABLE);
        let mut outcome = Outcome::refused(refusal, request_id);
        outcome.executed = executed.executed;
        return outcome;
    };
    let mut body = Map::new();
    if executed.executed {
        body.insert(
            "data".into(),
            serde_json::to_value(&response.data).unwrap_or(Value::Null),
        );
    }
    if !response.errors.is_empty() {
        body.insert(
            "errors".into(),
            serde_json::to_value(&response.errors).unwrap_or_else(|_| json!([])),
        );
    }
    if !response.extensions.is_empty() {
        body.insert(
            "extensions".into(),
            serde_json::to_value(&response.extensions).unwrap_or_else(|_| json!({})),
        );
    }
    let cacheable =
        (executed.executed && response.errors.is_empty() && is_query).then_some(Cacheable {
            hint: response.cache_control,
            authenticated: executed.ticket.authenticated,
        });
    Outcome {
        body: Value::Object(body),
        executed: executed.executed,
        status: None,
        headers: response.http_headers,
        cacheable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_follows_quality_and_prefers_specific_types() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("text/html")), None);
        assert_eq!(negotiate(&accept("application/json;q=0")), None);
    }
}
