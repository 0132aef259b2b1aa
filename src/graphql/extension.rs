//! Per-operation bookkeeping: which phase an operation reached (the HTTP layer needs it to tell
//! request errors from field errors), and the same error shape on every transport — a stable
//! `extensions.code` and the `extensions.requestId` on each error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::ValidationResult;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, Variables};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::context::RequestId;
use crate::config::Quota;
use crate::error::ErrorCode;
use crate::features::auth::{ClientInfo, Viewer};
use crate::features::users::Permission;
use crate::state::AppState;

/// How far an operation got (and what it cost); shared with the transport and resolvers through
/// the request data.
#[derive(Debug, Default)]
pub struct RequestPhase {
    parsed: AtomicBool,
    validated: AtomicBool,
    executed: AtomicBool,
    cost: Mutex<Option<Cost>>,
}

/// The measured cost of an operation, and the caller's budget after paying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub requested: usize,
    pub limit: usize,
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: chrono::DateTime<chrono::Utc>,
}

impl RequestPhase {
    /// `false` when the operation failed before execution (parse, validation, limits).
    pub fn executed(&self) -> bool {
        self.executed.load(Ordering::Acquire)
    }

    pub fn cost(&self) -> Option<Cost> {
        *self.cost.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn too_complex(message: String, measure: &str, value: usize, limit: usize) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::QueryTooComplex.as_str());
    extensions.set(measure, value);
    extensions.set("limit", limit);
    error.extensions = Some(extensions);
    error
}

/// Aliases anywhere in the document, and the most root fields of one operation.
fn shape(document: &ExecutableDocument) -> (usize, usize) {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn aliases(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some())
                        + aliases(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => aliases(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let mut total = 0;
    let mut roots = 0;
    for (_, operation) in document.operations.iter() {
        total += aliases(&operation.node.selection_set.node);
        roots = roots.max(operation.node.selection_set.node.items.len());
    }
    for fragment in document.fragments.values() {
        total += aliases(&fragment.node.selection_set.node);
    }
    (total, roots)
}

pub struct RequestContext;

impl ExtensionFactory for RequestContext {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestContextExtension::default())
    }
}

#[derive(Default)]
struct RequestContextExtension {
    shared: Arc<Shared>,
}

/// What the hooks learn, shared with the subscription stream (which outlives `&self`).
#[derive(Default)]
struct Shared {
    phase: Mutex<Option<Arc<RequestPhase>>>,
    request_id: Mutex<Option<String>>,
}

impl Shared {
    fn phase(&self) -> Arc<RequestPhase> {
        self.phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Default::default)
            .clone()
    }

    fn decorate(&self, response: &mut Response) {
        let phase = self.phase();
        let request_id = self
            .request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for error in &mut response.errors {
            decorate_error(error, &phase, request_id.as_deref());
        }
    }
}

fn is_operation_selection_error(error: &ServerError) -> bool {
    error.message.starts_with("Unknown operation")
        || error.message.starts_with("Operation name required")
}

/// Gives an error its code (when the resolver set none) and the request id.
fn decorate_error(error: &mut ServerError, phase: &RequestPhase, request_id: Option<&str>) {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some());
    let code = (!has_code).then(|| {
        if !phase.parsed.load(Ordering::Acquire) {
            ErrorCode::GraphqlParseFailed
        } else if !phase.executed() {
            if error.message.contains("too complex") || error.message.contains("nested too deep") {
                ErrorCode::QueryTooComplex
            } else if is_operation_selection_error(error) {
                ErrorCode::BadRequest
            } else {
                ErrorCode::GraphqlValidationFailed
            }
        } else if error.message.starts_with("Failed to parse") {
            ErrorCode::BadUserInput
        } else {
            ErrorCode::InternalServerError
        }
    });
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if let Some(code) = code {
        extensions.set("code", code.as_str());
    }
    if let Some(id) = request_id {
        extensions.set("requestId", id);
    }
}

impl RequestContextExtension {
    fn request_id(&self) -> Option<String> {
        self.shared
            .request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Depth and complexity against the caller's ceilings, the cost warning, and the budget debit.
async fn check_cost(
    state: &AppState,
    viewer: Option<&Viewer>,
    client: Option<&ClientInfo>,
    result: &ValidationResult,
    request_id: Option<&str>,
) -> Result<Cost, Vec<ServerError>> {
    let limits = &state.settings.graphql;
    let user = viewer.and_then(|v| v.user().ok());
    if result.depth > limits.max_depth {
        return Err(vec![too_complex(
            format!(
                "the operation is nested {} levels deep; at most {} are allowed",
                result.depth, limits.max_depth
            ),
            "depth",
            result.depth,
            limits.max_depth,
        )]);
    }
    let privileged = user.is_some_and(|u| u.permissions.contains(Permission::AdminRead.as_str()));
    let limit = if privileged {
        limits.admin_max_complexity
    } else {
        limits.max_complexity
    };
    if result.complexity > limit {
        return Err(vec![too_complex(
            format!(
                "the operation costs {} points; at most {limit} are allowed",
                result.complexity
            ),
            "cost",
            result.complexity,
            limit,
        )]);
    }
    if result.complexity > limits.cost_warn_threshold {
        tracing::warn!(
            cost = result.complexity,
            limit,
            user_id = user.map(|u| u.id.to_string()).unwrap_or_default(),
            request_id = request_id.unwrap_or_default(),
            "expensive operation"
        );
    }
    let bypass = user.is_some_and(|u| u.permissions.contains(Permission::RateLimitBypass.as_str()));
    let (principal, quota) = match user {
        Some(user) => (format!("user:{}", user.id), limits.user_budget),
        None => (
            format!(
                "ip:{}",
                client
                    .and_then(|c| c.ip)
                    .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
            ),
            limits.anonymous_budget,
        ),
    };
    let budget = match quota.filter(|_| !bypass) {
        None => None,
        Some(quota) => debit(state, &principal, quota, result.complexity).await?,
    };
    Ok(Cost {
        requested: result.complexity,
        limit,
        budget,
    })
}

/// Spends `cost` points of the principal's budget for the current window (fixed windows, as
/// GitHub's API does); refuses when it is used up. A store outage lets the operation through.
async fn debit(
    state: &AppState,
    principal: &str,
    quota: Quota,
    cost: usize,
) -> Result<Option<Budget>, Vec<ServerError>> {
    let window = quota.window.as_secs().max(1);
    let now = chrono::Utc::now();
    let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let slot = now_secs / window;
    let key = format!("budget:{principal}:{window}:{slot}");
    let delta = i64::try_from(cost).unwrap_or(i64::MAX);
    let used = match state
        .stores
        .kv
        .increment(&key, delta, Some(quota.window))
        .await
    {
        Ok(used) => u64::try_from(used).unwrap_or(0),
        Err(error) => {
            tracing::warn!(error = %error, "cost budget store unavailable");
            return Ok(None);
        }
    };
    let reset_secs = (slot + 1) * window - now_secs;
    let reset_at = now + chrono::Duration::seconds(i64::try_from(reset_secs).unwrap_or(0));
    if used > quota.limit {
        let mut error = ServerError::new(
            format!(
                "the cost budget of {} points per {} is used up",
                quota.limit,
                humantime::format_duration(quota.window)
            ),
            None,
        );
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", ErrorCode::RateLimited.as_str());
        extensions.set("retryAfter", reset_secs.max(1));
        extensions.set("cost", cost);
        error.extensions = Some(extensions);
        return Err(vec![error]);
    }
    Ok(Some(Budget {
        limit: quota.limit,
        remaining: quota.limit - used,
        reset_at,
    }))
}

#[async_trait::async_trait]
impl Extension for RequestContextExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        self.shared.decorate(&mut response);
        let report = ctx
            .data_opt::<AppState>()
            .is_some_and(|state| state.settings.graphql.cost_extension);
        if let Some(cost) = self.shared.phase().cost().filter(|_| report) {
            let mut value = async_graphql::indexmap::IndexMap::new();
            value.insert(
                async_graphql::Name::new("requested"),
                async_graphql::Value::from(cost.requested),
            );
            value.insert(
                async_graphql::Name::new("limit"),
                async_graphql::Value::from(cost.limit),
            );
            response
                .extensions
                .insert("cost".into(), async_graphql::Value::Object(value));
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let shared = self.shared.clone();
        next.run(ctx, stream)
            .map(move |mut response| {
                // Subscriptions have no `execute` hook: once validated and the operation was
                // selected, the stream is executing.
                let phase = shared.phase();
                if phase.validated.load(Ordering::Acquire)
                    && !response.errors.iter().any(is_operation_selection_error)
                {
                    phase.executed.store(true, Ordering::Release);
                }
                shared.decorate(&mut response);
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Request data is attached just before parsing: remember what `request` cannot see.
        if let Some(phase) = ctx.data_opt::<Arc<RequestPhase>>() {
            *self
                .shared
                .phase
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(phase.clone());
        }
        if let Some(id) = ctx.data_opt::<RequestId>() {
            *self
                .shared
                .request_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(id.0.clone());
        }
        let document = next.run(ctx, query, variables).await?;
        if let Some(state) = ctx.data_opt::<AppState>() {
            let limits = &state.settings.graphql;
            let (aliases, roots) = shape(&document);
            if aliases > limits.max_aliases {
                self.shared.phase().parsed.store(true, Ordering::Release);
                return Err(too_complex(
                    format!(
                        "the operation uses {aliases} aliases; at most {} are allowed",
                        limits.max_aliases
                    ),
                    "aliases",
                    aliases,
                    limits.max_aliases,
                ));
            }
            if roots > limits.max_root_fields {
                self.shared.phase().parsed.store(true, Ordering::Release);
                return Err(too_complex(
                    format!(
                        "the operation selects {roots} root fields; at most {} are allowed",
                        limits.max_root_fields
                    ),
                    "rootFields",
                    roots,
                    limits.max_root_fields,
                ));
            }
        }
        self.shared.phase().parsed.store(true, Ordering::Release);
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(state) = ctx.data_opt::<AppState>() {
            let viewer = ctx.data_opt::<Viewer>();
            let client = ctx.data_opt::<ClientInfo>();
            let cost =
                check_cost(state, viewer, client, &result, self.request_id().as_deref()).await?;
            *self
                .shared
                .phase()
                .cost
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cost);
        }
        self.shared.phase().validated.store(true, Ordering::Release);
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.shared.phase().executed.store(true, Ordering::Release);
        next.run(ctx, operation_name).await
    }
}
