//! One GraphQL operation, from request parameters to response, the same way for HTTP and
//! WebSocket:
//!
//! 1. the document: a persisted query's hash resolved (or the text itself);
//! 2. its text checked (size, tokens, nesting), then parsed, then measured after fragment
//!    expansion (`graphql::document`) — all before async-graphql validates anything;
//! 3. the operation selected, and what the transport forbids refused (mutations over GET,
//!    subscriptions over HTTP);
//! 4. the viewer, from the caller's credentials (an invalid one runs anonymously only for public
//!    root fields);
//! 5. per-root-field rate rules (`login=5/1m`), counted whatever the operation is named;
//! 6. request data attached (viewer, client, request id, phase, the features' loaders);
//! 7. execution under `GRAPHQL_EXECUTION_TIMEOUT`: first polled in the request's task, then, if
//!    it has to wait, in a task of its own that is aborted when it runs over;
//! 8. a document sent for registration (APQ) stored once it passed validation.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use async_graphql::{ErrorExtensions as _, ServerError, Variables};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::caller::Subject;
use super::persisted;
use super::rate_limit::{self, Principal};
use crate::error::{AppError, ErrorCode};
use crate::graphql::{self, RequestPhase, document};
use crate::identity::{Caller, Viewer};
use crate::infra::rate_limit::{Decision, Window};
use crate::schema;
use crate::state::AppState;
use crate::telemetry::{self, RequestId};

/// The GraphQL request parameters, checked against the specification's shapes (the WebSocket
/// `subscribe` payload has the same shape).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    /// Absent when a persisted query's hash stands for it.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
    #[serde(default)]
    pub extensions: Option<Map<String, Value>>,
}

impl Params {
    /// The request for `document` (the query itself, or what a persisted hash resolved to).
    fn into_request(self, document: String) -> async_graphql::Request {
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

/// How the operation arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    HttpGet,
    HttpPost,
    WebSocket,
}

/// What the document says about the operation that would run.
#[derive(Debug, Clone, Default)]
pub struct OperationInfo {
    pub name: Option<String>,
    pub kind: Option<OperationType>,
    /// Selects only root fields open to callers with bad credentials.
    pub public: bool,
    pub root_fields: Vec<String>,
}

impl OperationInfo {
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            Some(OperationType::Query) => "query",
            Some(OperationType::Mutation) => "mutation",
            Some(OperationType::Subscription) => "subscription",
            None => "unknown",
        }
    }
}

/// Refused before anything executed.
#[derive(Debug)]
pub struct Refusal {
    pub errors: Vec<ServerError>,
    /// A status the refusal imposes whatever the media type (401, 405, 429, 503, or 200 for a
    /// persisted query the client should send in full).
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    /// The root-field rate windows counted before the refusal (the one that refused among them).
    pub windows: Vec<Window>,
}

impl Refusal {
    fn new(error: ServerError, status: Option<StatusCode>) -> Self {
        Self {
            errors: vec![error],
            status,
            headers: HeaderMap::new(),
            windows: Vec::new(),
        }
    }

    fn coded(message: &str, code: ErrorCode, status: Option<StatusCode>) -> Self {
        Self::new(code.graphql_error(message, None), status)
    }

    /// A service error, with the status its code implies on any media type when that status is
    /// about the transport (credentials, rate limits, availability).
    pub fn from_error(error: &AppError) -> Self {
        let code = error.code();
        let status = matches!(
            code,
            ErrorCode::Unauthenticated | ErrorCode::RateLimited | ErrorCode::ServiceUnavailable
        )
        .then(|| code.status());
        let extended = error.extend();
        let mut server = ServerError::new(extended.message, None);
        server.extensions = extended.extensions;
        let mut refusal = Self::new(server, status);
        if let Some(retry) = error.retry_after()
            && let Ok(value) = retry.to_string().parse()
        {
            refusal
                .headers
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        refusal
    }

    /// The errors with the request id, as JSON.
    pub fn errors_json(&self, request_id: &RequestId) -> Value {
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|error| {
                let mut error = error.clone();
                let extensions = error.extensions.get_or_insert_with(Default::default);
                extensions.set("requestId", request_id.as_str());
                if let Some(trace) = telemetry::otel::current_trace_id() {
                    extensions.set("traceId", trace);
                }
                serde_json::to_value(&error)
                    .unwrap_or_else(|_| serde_json::json!({ "message": error.message }))
            })
            .collect();
        Value::Array(errors)
    }
}

/// An operation ready to execute: its request, and what [`finish`] needs afterwards.
pub struct Prepared {
    pub request: async_graphql::Request,
    pub ticket: Ticket,
    /// What execution adds to the request, kept aside until it runs.
    document: document::Vetted,
    viewer: Viewer,
    client: crate::identity::ClientInfo,
    request_id: RequestId,
}

impl Prepared {
    /// What the schema's cache hints allow for the document, when an earlier request for the
    /// same text worked it out (`None`: not known before executing).
    pub fn known_cache_policy(&self) -> Option<graphql::CachePolicy> {
        self.document.cache_policy()
    }

    /// The request with its parsed document, request data and the features' loaders attached,
    /// and the ticket: what runs. All of it is only made here, so an answer from the response
    /// cache copies no document and makes no loader.
    pub fn into_parts(self, app: &AppState) -> (async_graphql::Request, Ticket) {
        let request = self
            .document
            .into_request(self.request)
            .data(graphql::OperationData {
                viewer: self.viewer,
                client: self.client,
                request_id: self.request_id,
                phase: self.ticket.phase.clone(),
                tags: self.ticket.tags.clone(),
            });
        (schema::attach_loaders(app, request), self.ticket)
    }
}

/// What is known about a prepared operation, for its bookkeeping once it has run.
pub struct Ticket {
    pub phase: Arc<RequestPhase>,
    pub info: OperationInfo,
    pub authenticated: bool,
    /// `(hash, document)` to register once it validated (APQ).
    register: Option<(String, String)>,
    principal: Option<Principal>,
    /// The root-field rate windows the operation was counted against.
    pub windows: Vec<Window>,
    /// The response cache's scope: `public` for anonymous callers, else the user and what they
    /// may do (a permission change is a new scope, so guards run again).
    pub cache_scope: String,
    /// The entity tags the response shows, collected while it resolves.
    pub tags: Arc<graphql::CacheTags>,
}

/// Steps 1–6: everything up to execution.
///
/// # Errors
/// The refusal to answer with; nothing executed.
pub async fn prepare(
    app: &AppState,
    params: Params,
    transport: Transport,
    caller: &Caller,
    request_id: &RequestId,
) -> Result<Prepared, Refusal> {
    let mut params = params;
    let resolved = persisted::resolve(app, params.query.take(), params.extensions.as_ref())
        .await
        .map_err(|refusal| {
            // Apollo clients expect 200 here, then retry with the document.
            let status = match refusal.code {
                ErrorCode::PersistedQueryNotFound => Some(StatusCode::OK),
                ErrorCode::BadRequest => Some(StatusCode::BAD_REQUEST),
                _ => None,
            };
            Refusal::coded(&refusal.message, refusal.code, status)
        })?;
    let register = resolved
        .register
        .map(|hash| (hash, resolved.document.clone()));
    let request = params.into_request(resolved.document);
    let vetted = document::vet(
        &request,
        &app.settings.graphql,
        &app.local::<document::Documents>(),
    )
    .map_err(|e| Refusal::new(e, None))?;
    let info = select_operation(vetted.document(), request.operation_name.as_deref());
    if info.kind.is_none() {
        let message = match &request.operation_name {
            Some(name) => format!("the document has no operation named {name:?}"),
            None => "the document has several operations: name the one to run (operationName)"
                .to_owned(),
        };
        return Err(Refusal::coded(&message, ErrorCode::BadRequest, None));
    }
    if let Some(name) = &info.name {
        tracing::Span::current().record("operation_name", name.as_str());
    }

    match (transport, info.kind) {
        (Transport::HttpGet, Some(OperationType::Mutation)) => {
            return Err(Refusal::coded(
                "mutations are only accepted over POST",
                ErrorCode::MethodNotAllowed,
                Some(StatusCode::METHOD_NOT_ALLOWED),
            ));
        }
        (Transport::HttpGet | Transport::HttpPost, Some(OperationType::Subscription)) => {
            return Err(Refusal::coded(
                "subscriptions are served over WebSocket at /graphql/ws",
                ErrorCode::BadRequest,
                None,
            ));
        }
        _ => {}
    }

    let viewer = caller
        .viewer(info.public)
        .map_err(|e| Refusal::from_error(&e))?;
    let subject = match &viewer {
        Viewer::User(user) => Subject::User(user.id),
        Viewer::ApiKey(key) => Subject::ApiKey(&key.hash),
        Viewer::Anonymous => Subject::Anonymous,
    };
    let bypass = viewer.has(crate::identity::permissions::RATE_LIMIT_BYPASS);
    // Only root-field rules and an APQ registration count against the principal here (the
    // request itself was counted by `caller`): most operations need no key at all.
    let counted = !bypass && rate_limit::has_field_rules(app, &info.root_fields);
    let principal = (counted || register.is_some())
        .then(|| rate_limit::principal(app, &caller.client, subject))
        .flatten();
    let mut windows = Vec::new();
    if let Some(principal) = principal.as_ref().filter(|_| counted) {
        for rule in rate_limit::field_rules(app, principal, &info.root_fields) {
            match app
                .rate_limiter
                .hit(rule.policy, &rule.key, rule.quota)
                .await
            {
                Decision::Limited(window) => {
                    let mut refusal = Refusal::from_error(&rate_limit::limited(&window));
                    windows.push(window);
                    refusal.windows = windows;
                    return Err(refusal);
                }
                Decision::Unavailable => {
                    return Err(Refusal::from_error(&rate_limit::unavailable()));
                }
                Decision::Allowed(window) => windows.push(window),
                Decision::StoreDown => {}
            }
        }
    }

    let authenticated = !viewer.is_anonymous();
    let digest = |names: &mut dyn Iterator<Item = &String>| {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for name in names {
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
        }
        hasher.digest()
    };
    let cache_scope = match &viewer {
        Viewer::User(user) => scoped("user:", user.id, digest(&mut user.permissions.iter())),
        Viewer::ApiKey(key) => scoped("apikey:", key.id, digest(&mut key.scopes.iter())),
        Viewer::Anonymous => super::response_cache::PUBLIC_SCOPE.to_owned(),
    };
    let tags = Arc::new(graphql::CacheTags::default());
    Ok(Prepared {
        request,
        ticket: Ticket {
            phase: vetted.phase.clone(),
            info,
            authenticated,
            register,
            principal,
            windows,
            cache_scope,
            tags,
        },
        document: vetted,
        viewer,
        client: caller.client.clone(),
        request_id: request_id.clone(),
    })
}

/// A private response-cache scope, `<prefix><id>:<digest as 16 hex digits>` (made on every
/// request, so without `format!`).
fn scoped(prefix: &str, id: uuid::Uuid, digest: u64) -> String {
    let mut scope = crate::infra::kv::key_with_uuid(prefix, id, 17);
    scope.push(':');
    let hex = super::caching::hex128(u128::from(digest));
    scope.push_str(std::str::from_utf8(&hex[16..]).unwrap_or_default());
    scope
}

/// Steps 7–8: runs a query or mutation to its response under the execution deadline.
///
/// An operation whose validation is kept runs on the schema without extensions
/// ([`schema::Schemas`]): its limits and budget are checked here first, and its response is
/// decorated here after, as the request extension's hooks would.
pub async fn execute(app: &AppState, schemas: &schema::Schemas, prepared: Prepared) -> Executed {
    let started = Instant::now();
    let (request, ticket) = prepared.into_parts(app);
    let request_id = request_id_of(&request);
    let id = request_id.as_ref().map(RequestId::as_str);
    let kept = schemas
        .direct
        .as_ref()
        .and_then(|direct| Some((direct, ticket.phase.kept_validation()?)));
    let schema = match kept {
        None => &schemas.full,
        Some((direct, validation)) => {
            if let Err(errors) =
                graphql::extension::admit_kept(app, &ticket.phase, &request, validation, id).await
            {
                let mut response = async_graphql::Response::from_errors(errors);
                graphql::extension::complete(&mut response, &ticket.phase, id, Some(app));
                finish(app, &ticket, &response, started).await;
                return Executed {
                    executed: ticket.phase.executed(),
                    response: Ok(response),
                    ticket,
                };
            }
            direct
        }
    };
    let deadline = app.settings.graphql.execution_timeout;
    let work: Operation = {
        let schema = schema.clone();
        let work =
            async move { schema.execute(request).await }.instrument(tracing::Span::current());
        match request_id.clone() {
            Some(id) => Box::pin(telemetry::in_request(id, work)),
            None => Box::pin(work),
        }
    };
    let mut response = match run_with_deadline(work, deadline).await {
        Ok(response) => response,
        Err(stopped) => {
            app.metrics.graphql_operation(
                ticket.info.name.as_deref(),
                ticket.info.kind_label(),
                stopped.outcome(),
                started.elapsed(),
            );
            if telemetry::otel::enabled() {
                // Stopped at its deadline or by a panic: a failed operation, exported whatever
                // the sampling said.
                trace_operation(&ticket, stopped.outcome(), started.elapsed(), true);
            }
            return Executed {
                response: Err(stopped),
                executed: ticket.phase.executed(),
                ticket,
            };
        }
    };
    if kept.is_some() {
        graphql::extension::complete(&mut response, &ticket.phase, id, Some(app));
    }
    finish(app, &ticket, &response, started).await;
    Executed {
        executed: ticket.phase.executed(),
        response: Ok(response),
        ticket,
    }
}

/// Metrics and APQ registration once a response exists (also used for WebSocket operations).
pub async fn finish(
    app: &AppState,
    ticket: &Ticket,
    response: &async_graphql::Response,
    started: Instant,
) {
    let Ticket {
        phase,
        info,
        register,
        principal,
        ..
    } = ticket;
    let outcome = match (phase.executed(), response.errors.is_empty()) {
        (false, _) => "request_error",
        (true, true) => "ok",
        (true, false) => "field_error",
    };
    app.metrics.graphql_operation(
        info.name.as_deref(),
        info.kind_label(),
        outcome,
        started.elapsed(),
    );
    if telemetry::otel::enabled() {
        let internal = response.errors.iter().any(|error| {
            error
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .is_some_and(|code| {
                    *code == async_graphql::Value::from(ErrorCode::InternalServerError.as_str())
                })
        });
        trace_operation(ticket, outcome, started.elapsed(), internal);
    }
    if let Some((hash, document)) = register
        && phase.validated()
    {
        persisted::register(app, principal.as_ref(), hash, document).await;
    }
}

/// The operation's span (a child of the request's), and the trace marked failed when the
/// operation hit an internal error or was stopped (so it is exported whatever the sampling said).
fn trace_operation(ticket: &Ticket, outcome: &'static str, elapsed: Duration, failed: bool) {
    use opentelemetry::KeyValue;
    let mut attributes = vec![
        KeyValue::new("graphql.operation.type", ticket.info.kind_label()),
        KeyValue::new("graphql.outcome", outcome),
    ];
    if let Some(name) = &ticket.info.name {
        attributes.push(KeyValue::new("graphql.operation.name", name.clone()));
    }
    if let Some(cost) = ticket.phase.cost() {
        attributes.push(KeyValue::new(
            "graphql.cost",
            i64::try_from(cost.requested).unwrap_or(i64::MAX),
        ));
    }
    telemetry::otel::record_finished("graphql", elapsed, attributes, failed);
    if failed {
        telemetry::otel::mark_failed("internal error");
    }
}

fn request_id_of(request: &async_graphql::Request) -> Option<RequestId> {
    graphql::OperationData::of(request).map(|operation| operation.request_id.clone())
}

/// An operation's work, boxed so that it can move into a task of its own after its first poll.
type Operation = Pin<Box<dyn Future<Output = async_graphql::Response> + Send>>;

/// Why an operation has no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It ran past `GRAPHQL_EXECUTION_TIMEOUT` and was stopped (`TIMEOUT`, 503).
    Deadline,
    /// A resolver panicked: logged, answered as an internal error (500), nothing else affected.
    Panicked,
}

impl Stopped {
    /// The `outcome` label of the operation metrics.
    fn outcome(self) -> &'static str {
        match self {
            Self::Deadline => "timeout",
            Self::Panicked => "panic",
        }
    }

    /// The error the client gets.
    pub fn error(self, app: &AppState) -> AppError {
        match self {
            Self::Deadline => deadline_error(app),
            Self::Panicked => AppError::Internal(anyhow::anyhow!("an operation panicked")),
        }
    }
}

/// Runs an operation to its response within `deadline`.
///
/// Its first poll happens here, in the request's own task: an operation with nothing to wait
/// for (the viewer's own data, which authentication already loaded; anything in memory)
/// completes in it, with no task to spawn, wake and join. One that has to wait goes on in a
/// task of its own: each wake then polls that task alone, not the whole middleware stack above
/// this handler, and a client that goes away does not cut a mutation short between two of its
/// statements. That task is aborted at the deadline.
async fn run_with_deadline(
    mut work: Operation,
    deadline: Duration,
) -> Result<async_graphql::Response, Stopped> {
    let started = Instant::now();
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
            work.as_mut().poll(cx)
        })))
    })
    .await;
    match first {
        Ok(Poll::Ready(response)) => return Ok(response),
        Ok(Poll::Pending) => {}
        Err(panic) => {
            tracing::error!(
                panic = super::errors::panic_text(&*panic),
                "operation panicked"
            );
            return Err(Stopped::Panicked);
        }
    }
    // Polled again at once by the new task, which registers its own waker: a wake meant for
    // the first poll's only makes this task look at the join handle.
    let mut task = tokio::spawn(work);
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, &mut task).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(join)) => {
            tracing::error!(panic = ?join, "operation panicked");
            Err(Stopped::Panicked)
        }
        Err(_) => {
            task.abort();
            tracing::warn!(
                deadline = %humantime::format_duration(deadline),
                "operation stopped at its deadline"
            );
            Err(Stopped::Deadline)
        }
    }
}

/// A response, or why the operation has none.
pub struct Executed {
    pub response: Result<async_graphql::Response, Stopped>,
    pub ticket: Ticket,
    pub executed: bool,
}

/// The error for an operation stopped at its deadline.
pub fn deadline_error(app: &AppState) -> AppError {
    AppError::Timeout(app.settings.graphql.execution_timeout)
}

/// The root fields a selection set selects, through fragment spreads and inline fragments too (a
/// rule on `login` holds however the document spells it: `{ ...F } fragment F on MutationRoot {
/// login(…) }` counts as `login`). Each fragment is entered once.
fn collect_root_fields<'d>(
    document: &'d ExecutableDocument,
    items: &'d [async_graphql::Positioned<Selection>],
    entered: &mut Vec<&'d str>,
    out: &mut Vec<String>,
) {
    for selection in items {
        match &selection.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                if !out.iter().any(|f| f == name) {
                    out.push(name.to_owned());
                }
            }
            Selection::InlineFragment(fragment) => collect_root_fields(
                document,
                &fragment.node.selection_set.node.items,
                entered,
                out,
            ),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if entered.contains(&name) {
                    continue;
                }
                entered.push(name);
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    collect_root_fields(
                        document,
                        &fragment.node.selection_set.node.items,
                        entered,
                        out,
                    );
                }
            }
        }
    }
}

/// The name and type of the operation that would run, when the document says which, whether it
/// only selects root fields open to callers with bad credentials, and its root field names.
pub fn select_operation(document: &ExecutableDocument, requested: Option<&str>) -> OperationInfo {
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
    let public_fields = schema::public_root_fields();
    let items = operation.map(|op| &op.node.selection_set.node.items);
    let public = items.is_some_and(|items| {
        items.iter().all(|selection| match &selection.node {
            Selection::Field(field) => public_fields.contains(&field.node.name.node.as_str()),
            // Fragments could select anything: not public.
            _ => false,
        })
    });
    let mut root_fields = Vec::new();
    if let Some(items) = items {
        collect_root_fields(document, items, &mut Vec::new(), &mut root_fields);
    }
    OperationInfo {
        name,
        kind: operation.map(|op| op.node.ty),
        public,
        root_fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `work` as an operation; what it answered, and whether it ran in this task.
    async fn run(
        work: impl Future<Output = ()> + Send + 'static,
        deadline: Duration,
    ) -> Result<bool, Stopped> {
        let here = tokio::task::try_id();
        let operation: Operation = Box::pin(async move {
            work.await;
            let mut response = async_graphql::Response::new(async_graphql::Value::Null);
            response.extensions.insert(
                "sameTask".into(),
                async_graphql::Value::Boolean(tokio::task::try_id() == here),
            );
            response
        });
        let response = run_with_deadline(operation, deadline).await?;
        Ok(response.extensions["sameTask"] == async_graphql::Value::Boolean(true))
    }

    #[tokio::test]
    async fn an_operation_runs_in_the_requests_task_until_it_has_to_wait() {
        let second = Duration::from_secs(5);
        assert_eq!(run(async {}, second).await, Ok(true), "nothing to wait for");
        let waits = async { tokio::time::sleep(Duration::from_millis(5)).await };
        assert_eq!(
            run(waits, second).await,
            Ok(false),
            "goes on in a task of its own"
        );
        let waits_long = async { tokio::time::sleep(Duration::from_secs(60)).await };
        assert_eq!(
            run(waits_long, Duration::from_millis(50)).await,
            Err(Stopped::Deadline)
        );
    }

    #[tokio::test]
    async fn a_panicking_operation_is_stopped_whether_or_not_it_waited_first() {
        assert_eq!(
            run(
                async { panic!("in the first poll") },
                Duration::from_secs(5)
            )
            .await,
            Err(Stopped::Panicked)
        );
        let later = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("after a wait");
        };
        assert_eq!(
            run(later, Duration::from_secs(5)).await,
            Err(Stopped::Panicked)
        );
    }

    #[test]
    fn keys_made_by_hand_read_as_format_writes_them() {
        let id = uuid::Uuid::parse_str("0192f0c4-7b1e-7c3a-9f00-00000000beef").unwrap();
        for digest in [0, 0xbeef, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(
                scoped("user:", id, digest),
                format!("user:{id}:{digest:016x}")
            );
        }
        assert_eq!(
            crate::infra::kv::key_with_uuid("auth:user:", id, 0),
            format!("auth:user:{id}")
        );
    }
}
