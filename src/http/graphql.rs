//! `GET|POST /graphql` following the GraphQL-over-HTTP specification: content negotiation
//! (`application/graphql-response+json` and `application/json`), 4xx for malformed requests,
//! no mutations over GET, and request errors told apart from field errors.

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{ServerError, Variables};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::HttpState;
use super::caching::{self, Cacheable};
use super::errors::error_response_with_status;
use super::persisted;
use super::rate_limit;
use crate::config::RuleTarget;
use crate::error::ErrorCode;
use crate::features::auth::{Authentication, Caller, PUBLIC_ROOT_FIELDS, Viewer};
use crate::features::users::loaders::Loaders;
use crate::graphql::{RequestId, RequestPhase};
use crate::infra::rate_limit::Decision;

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
    request_id: &RequestId,
) -> Response {
    let mut response = error_response_with_status(status, code, message, Some(request_id));
    if let Some(media) = media {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, media.content_type());
    }
    response
}

/// The GraphQL request parameters, checked against the specification's shapes. (The WebSocket
/// `subscribe` payload has the same shape.)
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Params {
    /// Absent when a persisted query's hash stands for it.
    #[serde(default)]
    pub(crate) query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) extensions: Option<Map<String, Value>>,
}

impl Params {
    /// The request for `document` (the query itself, or what a persisted hash resolved to).
    pub(crate) fn into_request(self, document: String) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(document);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(Value::Object(variables)));
        }
        for (key, value) in self.extensions.unwrap_or_default() {
            if let Ok(value) = async_graphql::Value::from_json(value) {
                request.extensions.0.insert(key, value);
            }
        }
        request
    }
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
        return not_acceptable(&request_id);
    };
    match params {
        Ok(Some(params)) => {
            execute(
                &state,
                params,
                media,
                Method::Get,
                &request_id,
                &caller,
                &headers,
            )
            .await
        }
        Ok(None) => request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the 'query' parameter is required",
            Some(media),
            &request_id,
        ),
        Err(message) => request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            &message,
            Some(media),
            &request_id,
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
        return not_acceptable(&request_id);
    };
    let bad = |status, code, message: &str| {
        request_error(status, code, message, Some(media), &request_id)
    };

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
                results.push(run(&state, p, Method::Post, &request_id, &caller).await);
            }
            let body = Value::Array(results.into_iter().map(|r| r.body).collect());
            respond(StatusCode::OK, media, &body, HeaderMap::new())
        }
        other => match params_from_json(other) {
            Ok(params) => {
                execute(
                    &state,
                    params,
                    media,
                    Method::Post,
                    &request_id,
                    &caller,
                    &headers,
                )
                .await
            }
            Err(message) => bad(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
        },
    }
}

fn not_acceptable(request_id: &RequestId) -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::NotAcceptable,
        "acceptable response types: application/graphql-response+json, application/json",
        None,
        request_id,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
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
    /// Refused before execution: no `data`, only these errors.
    fn refused(message: &str, code: ErrorCode, request_id: &RequestId) -> Self {
        Self {
            body: errors_body(vec![ServerError::new(message, None)], code, request_id),
            executed: false,
            status: matches!(
                code,
                ErrorCode::MethodNotAllowed | ErrorCode::Unauthenticated
            )
            .then(|| code.status()),
            headers: HeaderMap::new(),
            cacheable: None,
        }
    }
}

async fn execute(
    state: &HttpState,
    params: Params,
    media: MediaType,
    method: Method,
    request_id: &RequestId,
    caller: &Caller,
    request_headers: &HeaderMap,
) -> Response {
    let outcome = run(state, params, method, request_id, caller).await;
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

/// Parses, checks the operation type against the method, executes, and records metrics and the
/// operation name on the request span.
async fn run(
    state: &HttpState,
    params: Params,
    method: Method,
    request_id: &RequestId,
    caller: &Caller,
) -> Outcome {
    let started = Instant::now();
    let requested_name = params.operation_name.clone();
    let mut params = params;
    let document =
        match persisted::resolve(&state.app, params.query.take(), params.extensions.as_ref()).await
        {
            Ok(document) => document,
            Err(refusal) => {
                let mut outcome = Outcome::refused(&refusal.message, refusal.code, request_id);
                // Apollo clients expect 200 here, then retry with the document.
                outcome.status = match refusal.code {
                    ErrorCode::PersistedQueryNotFound => Some(StatusCode::OK),
                    ErrorCode::BadRequest => Some(StatusCode::BAD_REQUEST),
                    _ => None,
                };
                return outcome;
            }
        };
    let mut request = params.into_request(document);

    let (operation_name, operation_type, public, root_fields) = match request.parsed_query() {
        Ok(document) => select_operation(document, requested_name.as_deref()),
        Err(error) => {
            state.app.metrics.graphql_operation(
                None,
                "unknown",
                "request_error",
                started.elapsed(),
            );
            return Outcome {
                body: errors_body(vec![error], ErrorCode::GraphqlParseFailed, request_id),
                executed: false,
                status: None,
                headers: HeaderMap::new(),
                cacheable: None,
            };
        }
    };
    let kind = match operation_type {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    };
    if let Some(name) = &operation_name {
        tracing::Span::current().record("operation_name", name.as_str());
    }

    if method == Method::Get && operation_type == Some(OperationType::Mutation) {
        return Outcome::refused(
            "mutations are only accepted over POST",
            ErrorCode::MethodNotAllowed,
            request_id,
        );
    }
    if operation_type == Some(OperationType::Subscription) {
        return Outcome::refused(
            "subscriptions are served over WebSocket at /graphql/ws",
            ErrorCode::BadRequest,
            request_id,
        );
    }

    // A bad credential is an error, never anonymity — except for the fields that let a client
    // sign in again.
    let caller_is_user = matches!(caller.authentication, Authentication::User(_));
    let viewer = match &caller.authentication {
        Authentication::Anonymous => Viewer::Anonymous,
        Authentication::User(user) => Viewer::User(user.clone()),
        Authentication::Invalid(_) if public => Viewer::Anonymous,
        Authentication::Invalid(message) => {
            return Outcome::refused(message, ErrorCode::Unauthenticated, request_id);
        }
    };

    // Rules on root fields (`login=5/1m`): counted per principal, whatever the operation is named.
    if let Some((principal, _, _)) = rate_limit::principal(&state.app, caller) {
        for (target, quota) in &state.app.settings.rate_limit.rules {
            let RuleTarget::Field(field) = target else {
                continue;
            };
            if !root_fields.iter().any(|f| f == field) {
                continue;
            }
            let key = format!("field:{field}:{principal}");
            match state.app.rate_limiter.hit(field, &key, *quota).await {
                Decision::Limited(window) => {
                    let (body, headers) = rate_limit::limited_parts(&window, Some(request_id));
                    return Outcome {
                        body,
                        executed: false,
                        status: Some(StatusCode::TOO_MANY_REQUESTS),
                        headers,
                        cacheable: None,
                    };
                }
                Decision::Unavailable => {
                    return Outcome::refused(
                        "rate limiting is unavailable; retry shortly",
                        ErrorCode::ServiceUnavailable,
                        request_id,
                    );
                }
                Decision::Allowed(_) | Decision::StoreDown => {}
            }
        }
    }

    let phase = Arc::new(RequestPhase::default());
    let request = request
        .data(request_id.clone())
        .data(phase.clone())
        .data(viewer)
        .data(caller.client.clone())
        .data(Loaders::new(&state.app.db));
    let response = state.schema.execute(request).await;
    let executed = phase.executed();
    let outcome = match (executed, response.errors.is_empty()) {
        (false, _) => "request_error",
        (true, true) => "ok",
        (true, false) => "field_error",
    };
    state.app.metrics.graphql_operation(
        operation_name.as_deref(),
        kind,
        outcome,
        started.elapsed(),
    );

    let mut body = Map::new();
    if executed {
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
        (executed && response.errors.is_empty() && operation_type == Some(OperationType::Query))
            .then_some(Cacheable {
                hint: response.cache_control,
                authenticated: caller_is_user,
            });
    Outcome {
        body: Value::Object(body),
        executed,
        status: None,
        headers: response.http_headers,
        cacheable,
    }
}

/// The name and type of the operation that would run, when the document says which, whether it
/// only selects root fields open to callers with bad credentials, and its root field names.
fn select_operation(
    document: &async_graphql::parser::types::ExecutableDocument,
    requested: Option<&str>,
) -> (Option<String>, Option<OperationType>, bool, Vec<String>) {
    let (name, operation) = match &document.operations {
        DocumentOperations::Single(op) => (requested.map(str::to_owned), Some(op)),
        DocumentOperations::Multiple(map) => match requested {
            Some(name) => (Some(name.to_owned()), map.get(name)),
            None if map.len() == 1 => map.iter().next().map_or((None, None), |(name, op)| {
                (Some(name.to_string()), Some(op))
            }),
            None => (None, None),
        },
    };
    let public = operation.is_some_and(|op| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .all(|selection| match &selection.node {
                Selection::Field(field) => {
                    PUBLIC_ROOT_FIELDS.contains(&field.node.name.node.as_str())
                }
                // Fragments could select anything: not public.
                _ => false,
            })
    });
    let fields = operation.map_or_else(Vec::new, |op| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .filter_map(|selection| match &selection.node {
                Selection::Field(field) => Some(field.node.name.node.to_string()),
                _ => None,
            })
            .collect()
    });
    (name, operation.map(|op| op.node.ty), public, fields)
}

/// `{"errors": [...]}` without `data`, each error carrying the code and request id.
fn errors_body(errors: Vec<ServerError>, code: ErrorCode, request_id: &RequestId) -> Value {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|mut error| {
            let extensions = error.extensions.get_or_insert_with(Default::default);
            extensions.set("code", code.as_str());
            extensions.set("requestId", request_id.0.as_str());
            serde_json::to_value(&error).unwrap_or_else(|_| json!({"message": error.message}))
        })
        .collect();
    json!({ "errors": errors })
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
