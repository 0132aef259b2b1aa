//! Per-operation bookkeeping: which phase an operation reached (the HTTP layer needs it to tell
//! request errors from field errors), and the same error shape on every transport — a stable
//! `extensions.code` and the `extensions.requestId` on each error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_graphql::ValidationResult;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, Variables};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::OperationData;
use super::cache_policy::{self, CachePolicy};
use crate::config::Quota;
use crate::error::ErrorCode;
use crate::identity::permissions::{ADMIN_READ, RATE_LIMIT_BYPASS};
use crate::identity::{ClientInfo, Viewer};
use crate::infra::budget::Charge;
use crate::state::AppState;

/// How far an operation got (and what it cost); shared with the transport and resolvers through
/// the request data.
#[derive(Debug, Default)]
pub struct RequestPhase {
    /// The transport measured the document ([`super::document::analyse`]) before handing it over.
    vetted: AtomicBool,
    /// `__typename` selections after expansion: each costs 1 on top of async-graphql's measure.
    typenames: AtomicUsize,
    parsed: AtomicBool,
    validated: AtomicBool,
    executed: AtomicBool,
    cost: Mutex<Option<Cost>>,
    /// The caller's cost budget after this operation was charged (or refused for it).
    budget: Mutex<Option<Budget>>,
    /// What the schema's cache hints allow for the document's queries.
    cache_policy: Mutex<Option<CachePolicy>>,
    /// The same, kept with the parsed document (`super::document`) once worked out: the walk
    /// over the schema's hints is done once per document, and the next request for it knows
    /// before executing whether its response can be kept.
    document_policy: Arc<OnceLock<CachePolicy>>,
    /// Where a passed validation of this document is kept, when it may be (no variables).
    validation: Option<ValidationMemo>,
}

/// A validation that passed: the operation it was for, and async-graphql's measures.
#[derive(Debug)]
pub struct Validated {
    operation: Option<Box<str>>,
    result: ValidationResult,
}

/// A kept document's passed validation, for a request without variables.
///
/// async-graphql validates every request (22 rules over the whole document, then its cache,
/// complexity and depth measures: about 5 % of a small query's CPU). Those rules read only the
/// schema, the document, the selected operation and the variables' values, so for the same text
/// and operation without variables the outcome is the same every time: the first that passes is
/// kept with the parsed document, and the next such request takes its measures instead of
/// walking the rules again. Requests with variables are always validated (a variable's value can
/// be wrong for an argument), as are failures.
#[derive(Debug)]
pub struct ValidationMemo {
    slot: Arc<OnceLock<Validated>>,
    operation: Option<Box<str>>,
}

impl ValidationMemo {
    pub fn new(slot: Arc<OnceLock<Validated>>, operation: Option<&str>) -> Self {
        Self {
            slot,
            operation: operation.map(Into::into),
        }
    }

    /// The kept validation, if it was for this request's operation.
    fn get(&self) -> Option<ValidationResult> {
        self.slot
            .get()
            .filter(|kept| kept.operation == self.operation)
            .map(|kept| kept.result)
    }

    fn keep(&self, result: ValidationResult) {
        // Another operation of the same document may have been kept first: it stays.
        let _ = self.slot.set(Validated {
            operation: self.operation.clone(),
            result,
        });
    }
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
    /// A phase for a document whose cache policy is kept in `policy` and, for a request without
    /// variables, whose passed validation is kept in `validation`.
    pub fn for_document(
        policy: Arc<OnceLock<CachePolicy>>,
        validation: Option<ValidationMemo>,
    ) -> Self {
        Self {
            document_policy: policy,
            validation,
            ..Self::default()
        }
    }

    /// Records that the document was measured and is within the limits.
    pub fn vetted(&self, shape: &super::document::Shape) {
        self.typenames.store(shape.typenames, Ordering::Release);
        self.vetted.store(true, Ordering::Release);
    }

    /// `true` once the operation passed parsing, validation and every limit.
    pub fn validated(&self) -> bool {
        self.validated.load(Ordering::Acquire)
    }

    /// `false` when the operation failed before execution (parse, validation, limits).
    pub fn executed(&self) -> bool {
        self.executed.load(Ordering::Acquire)
    }

    /// The passed validation kept for this request's operation, once the document's cache policy
    /// is known too: all the extension's hooks would learn before executing it
    /// ([`admit_kept`]).
    pub fn kept_validation(&self) -> Option<ValidationResult> {
        self.document_policy.get()?;
        self.validation.as_ref()?.get()
    }

    pub fn cost(&self) -> Option<Cost> {
        *self.cost.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the response may be cached (`None` before the document was parsed).
    pub fn cache_policy(&self) -> Option<CachePolicy> {
        *self
            .cache_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller's cost budget as this operation left it (also when it refused the operation),
    /// for the transport's `X-Cost-Budget-*` headers.
    pub fn budget(&self) -> Option<Budget> {
        *self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

use super::document::too_complex;

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

    fn decorate(&self, response: &mut Response, max_errors: usize) {
        let request_id = self
            .request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        decorate(response, &self.phase(), request_id.as_deref(), max_errors);
    }
}

/// Caps a response's errors and gives each its code and the request id.
fn decorate(
    response: &mut Response,
    phase: &RequestPhase,
    request_id: Option<&str>,
    max_errors: usize,
) {
    cap_errors(&mut response.errors, max_errors);
    for error in &mut response.errors {
        decorate_error(error, phase, request_id);
    }
}

/// What every query or mutation's response gets once it exists (the `request` hook's work, and
/// [`admit_kept`]'s counterpart): its errors decorated and counted, and the cost extension when
/// it is on.
pub fn complete(
    response: &mut Response,
    phase: &RequestPhase,
    request_id: Option<&str>,
    state: Option<&AppState>,
) {
    let max_errors = state.map_or(20, |state| state.settings.graphql.max_errors);
    decorate(response, phase, request_id, max_errors);
    if let Some(state) = state {
        count_rejected_inputs(state, &response.errors);
    }
    let report = state.is_some_and(|state| state.settings.graphql.cost_extension);
    if let Some(cost) = phase.cost().filter(|_| report) {
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
}

/// What the `parse_query`, `validation` and `execute` hooks do, for an operation run on the
/// schema without extensions ([`crate::schema::Schemas`]) because its validation is kept
/// ([`RequestPhase::kept_validation`]): the document was measured, its cache policy is known,
/// and the caller's depth and cost ceilings and cost budget are checked against the kept
/// measures. Afterwards the response goes through [`complete`], as the `request` hook's would.
///
/// # Errors
/// The operation is over a ceiling or the budget is spent: nothing executes.
pub async fn admit_kept(
    state: &AppState,
    phase: &RequestPhase,
    request: &async_graphql::Request,
    kept: ValidationResult,
    request_id: Option<&str>,
) -> Result<(), Vec<ServerError>> {
    if !phase.vetted.load(Ordering::Acquire) {
        return Err(vec![not_measured()]);
    }
    phase.parsed.store(true, Ordering::Release);
    *phase
        .cache_policy
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = phase.document_policy.get().copied();
    let operation = OperationData::of(request);
    let caller = (operation.map(|o| &o.viewer), operation.map(|o| &o.client));
    check_cost(phase, state, caller, &kept, request_id).await?;
    phase.validated.store(true, Ordering::Release);
    phase.executed.store(true, Ordering::Release);
    Ok(())
}

fn not_measured() -> ServerError {
    ErrorCode::InternalServerError
        .graphql_error("the document was not measured before parsing", None)
}

/// Keeps a response's errors small whatever the document: duplicates (same message, same path)
/// are dropped, and past `max` the rest are summed up in one last error.
fn cap_errors(errors: &mut Vec<ServerError>, max: usize) {
    if errors.len() <= 1 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert((e.message.clone(), format!("{:?}", e.path))));
    if errors.len() > max {
        let omitted = errors.len() - max;
        errors.truncate(max);
        let mut summary = ErrorCode::GraphqlValidationFailed
            .graphql_error(format!("{omitted} more errors omitted"), None);
        if let Some(extensions) = summary.extensions.as_mut() {
            extensions.set("omitted", omitted);
        }
        errors.push(summary);
    }
}

/// Gives an error its code (when whoever raised it set none) and the request id.
///
/// Our own errors carry their code from where they are raised. What async-graphql raises without
/// one is classified by the phase it happened in: before parsing succeeded it is a parse error,
/// before execution a validation error (the operation is selected and every limit checked by the
/// transport before this), and during execution a failed coercion of an argument value — the
/// one case the library reports as a plain error, pinned by a test
/// (`query_limits::an_argument_that_fails_coercion_is_bad_user_input`). Anything else that
/// reaches here without a code is ours to fix: `INTERNAL_SERVER_ERROR`.
fn decorate_error(error: &mut ServerError, phase: &RequestPhase, request_id: Option<&str>) {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some());
    let code = (!has_code).then(|| {
        if !phase.parsed.load(Ordering::Acquire) {
            ErrorCode::GraphqlParseFailed
        } else if !phase.executed() {
            ErrorCode::GraphqlValidationFailed
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
    if let Some(trace) = crate::telemetry::otel::current_trace_id() {
        extensions.set("traceId", trace);
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

/// Depth and complexity against the caller's ceilings, the cost warning, and the budget debit;
/// the cost is kept with the phase (the validation hook's work once async-graphql measured the
/// operation, and [`admit_kept`]'s).
async fn check_cost(
    phase: &RequestPhase,
    state: &AppState,
    (viewer, client): (Option<&Viewer>, Option<&ClientInfo>),
    result: &ValidationResult,
    request_id: Option<&str>,
) -> Result<(), Vec<ServerError>> {
    let limits = &state.settings.graphql;
    // async-graphql counts `__typename` as free; here every field costs at least 1.
    let typenames = phase.typenames.load(Ordering::Acquire);
    let complexity = result.complexity.saturating_add(typenames);
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
    let privileged = user.is_some_and(|u| u.has(ADMIN_READ));
    let limit = if privileged {
        limits.admin_max_complexity
    } else {
        limits.max_complexity
    };
    if complexity > limit {
        return Err(vec![too_complex(
            format!(
                "the operation costs {} points; at most {limit} are allowed",
                complexity
            ),
            "cost",
            complexity,
            limit,
        )]);
    }
    if complexity > limits.cost_warn_threshold {
        tracing::warn!(
            cost = complexity,
            limit,
            user_id = user.map(|u| u.id.to_string()).unwrap_or_default(),
            request_id = request_id.unwrap_or_default(),
            "expensive operation"
        );
    }
    let bypass = user.is_some_and(|u| u.has(RATE_LIMIT_BYPASS));
    let key = viewer.and_then(Viewer::api_key);
    let (principal, quota) = match (user, key) {
        (Some(user), _) => (BudgetPrincipal::User(user.id), limits.user_budget),
        (None, Some(key)) => (BudgetPrincipal::ApiKey(key.id), limits.api_key_budget),
        (None, None) => (
            BudgetPrincipal::Address(client.map(ClientInfo::address_key).unwrap_or_default()),
            limits.anonymous_budget,
        ),
    };
    let budget = match quota.filter(|_| !bypass) {
        None => None,
        Some(quota) => {
            let debited = debit(state, principal, quota, complexity).await;
            let budget = match &debited {
                Ok(budget) => *budget,
                Err((budget, _)) => Some(*budget),
            };
            *phase.budget.lock().unwrap_or_else(PoisonError::into_inner) = budget;
            debited.map_err(|(_, errors)| errors)?
        }
    };
    *phase.cost.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cost {
        requested: complexity,
        limit,
        budget,
    });
    Ok(())
}

/// Whose budget an operation is charged to (written into the budget's store key).
#[derive(Clone, Copy)]
enum BudgetPrincipal {
    User(uuid::Uuid),
    ApiKey(uuid::Uuid),
    Address(crate::identity::AddressKey),
}

impl BudgetPrincipal {
    /// The budget's store key for window `slot` of `window` seconds:
    /// `budget:{user:<id>|apikey:<id>|ip:<address>}:{window}:{slot}`, written without the
    /// formatting machinery (every operation makes one).
    fn key(self, window: u64, slot: u64) -> String {
        let mut key = match self {
            Self::User(id) => crate::infra::kv::key_with_uuid("budget:user:", id, 0),
            Self::ApiKey(id) => crate::infra::kv::key_with_uuid("budget:apikey:", id, 0),
            Self::Address(address) => address.prefixed("budget:ip:"),
        };
        let mut digits = itoa::Buffer::new();
        key.reserve(42);
        key.push(':');
        key.push_str(digits.format(window));
        key.push(':');
        key.push_str(digits.format(slot));
        key
    }
}

/// Spends `cost` points of the principal's budget for the current window (fixed windows, as
/// GitHub's API does); refuses when it is used up (with the budget as it stands). A store outage
/// lets the operation through.
async fn debit(
    state: &AppState,
    principal: BudgetPrincipal,
    quota: Quota,
    cost: usize,
) -> Result<Option<Budget>, (Budget, Vec<ServerError>)> {
    let window = quota.window.as_secs().max(1);
    let now = chrono::Utc::now();
    let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let slot = now_secs / window;
    let key = principal.key(window, slot);
    let delta = i64::try_from(cost).unwrap_or(i64::MAX);
    let limit = i64::try_from(quota.limit).unwrap_or(i64::MAX);
    // Checked and charged on this instance's ledger; the store hears of it within a tenth of a
    // second (`crate::infra::budget`), so the request waits for no round trip.
    let charged = match state
        .budgets
        .charge(state.stores.kv.as_ref(), &key, delta, limit, quota.window)
        .await
    {
        Ok(charged) => charged,
        Err(error) => {
            error.log("cost budget store unavailable");
            return Ok(None);
        }
    };
    let (used, refused) = match charged {
        Charge::Charged(used) => (used, false),
        Charge::Refused(used) => (used, true),
    };
    let used = u64::try_from(used).unwrap_or(0);
    let reset_secs = (slot + 1) * window - now_secs;
    let reset_at = now + chrono::Duration::seconds(i64::try_from(reset_secs).unwrap_or(0));
    if refused {
        let mut error = ErrorCode::RateLimited.graphql_error(
            format!(
                "the cost budget of {} points per {} is used up",
                quota.limit,
                humantime::format_duration(quota.window)
            ),
            None,
        );
        if let Some(extensions) = error.extensions.as_mut() {
            extensions.set("retryAfter", reset_secs.max(1));
            extensions.set("cost", cost);
        }
        let budget = Budget {
            limit: quota.limit,
            remaining: quota.limit.saturating_sub(used),
            reset_at,
        };
        return Err((budget, vec![error]));
    }
    Ok(Some(Budget {
        limit: quota.limit,
        remaining: quota.limit.saturating_sub(used),
        reset_at,
    }))
}

/// Counts the fields of `BAD_USER_INPUT` errors (`input_rejected_total{field}`) and logs their
/// names — never the values, which may be anything a client sent.
fn count_rejected_inputs(state: &AppState, errors: &[ServerError]) {
    for error in errors {
        let Some(extensions) = &error.extensions else {
            continue;
        };
        if extensions.get("code")
            != Some(&async_graphql::Value::from(
                ErrorCode::BadUserInput.as_str(),
            ))
        {
            continue;
        }
        let fields: Vec<String> = match extensions.get("fields") {
            Some(async_graphql::Value::Object(fields)) => {
                fields.keys().map(|k| label(k.as_str())).collect()
            }
            _ => vec!["other".to_owned()],
        };
        tracing::info!(fields = %fields.join(","), "input rejected");
        state.metrics.record(|| {
            for field in fields {
                metrics::counter!("input_rejected_total", "field" => field).increment(1);
            }
        });
    }
}

/// A field name as a metric label: our own names pass, anything else is `other` (bounded
/// cardinality whatever reaches here).
fn label(field: &str) -> String {
    let plain = !field.is_empty()
        && field.len() <= 48
        && field.starts_with(|c: char| c.is_ascii_alphabetic())
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
    if plain {
        field.to_owned()
    } else {
        "other".to_owned()
    }
}

#[async_trait::async_trait]
impl Extension for RequestContextExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        complete(
            &mut response,
            &self.shared.phase(),
            self.request_id().as_deref(),
            ctx.data_opt::<AppState>(),
        );
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let shared = self.shared.clone();
        let state = ctx.data_opt::<AppState>().cloned();
        let max_errors = state
            .as_ref()
            .map_or(20, |state| state.settings.graphql.max_errors);
        next.run(ctx, stream)
            .map(move |mut response| {
                // Subscriptions have no `execute` hook: once validated (the transport selected the
                // operation beforehand), the stream is executing.
                let phase = shared.phase();
                if phase.validated.load(Ordering::Acquire) {
                    phase.executed.store(true, Ordering::Release);
                }
                shared.decorate(&mut response, max_errors);
                if let Some(state) = &state {
                    count_rejected_inputs(state, &response.errors);
                }
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
        let operation = ctx.data_opt::<OperationData>();
        if let Some(phase) = operation.map(|o| &o.phase) {
            *self
                .shared
                .phase
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(phase.clone());
        }
        if let Some(id) = operation.map(|o| &o.request_id) {
            *self
                .shared
                .request_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(id.as_str().to_owned());
        }
        // Parsing also walks fragments inline (async-graphql's recursion check), so nothing that
        // was not measured first may get that far: the transports measure every document.
        let phase = self.shared.phase();
        if !phase.vetted.load(Ordering::Acquire) {
            return Err(not_measured());
        }
        let document = next.run(ctx, query, variables).await?;
        phase.parsed.store(true, Ordering::Release);
        let policy = *phase
            .document_policy
            .get_or_init(|| cache_policy::of_document(&ctx.schema_env.registry, &document));
        *phase
            .cache_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(policy);
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let phase = self.shared.phase();
        let memo = phase.validation.as_ref();
        let result = match memo.and_then(ValidationMemo::get) {
            Some(kept) => kept,
            None => {
                let result = next.run(ctx).await?;
                if let Some(memo) = memo {
                    memo.keep(result);
                }
                result
            }
        };
        if let Some(state) = ctx.data_opt::<AppState>() {
            let operation = ctx.data_opt::<OperationData>();
            let caller = (operation.map(|o| &o.viewer), operation.map(|o| &o.client));
            check_cost(&phase, state, caller, &result, self.request_id().as_deref()).await?;
        }
        phase.validated.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(complexity: usize) -> ValidationResult {
        ValidationResult {
            cache_control: async_graphql::CacheControl::default(),
            complexity,
            depth: 2,
        }
    }

    #[test]
    fn a_budget_key_names_its_principal_window_and_slot() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            BudgetPrincipal::User(id).key(3600, 493_000),
            format!("budget:user:{id}:3600:493000")
        );
        assert_eq!(
            BudgetPrincipal::ApiKey(id).key(60, 0),
            format!("budget:apikey:{id}:60:0")
        );
        assert_eq!(
            BudgetPrincipal::Address(crate::identity::AddressKey::default()).key(1, u64::MAX),
            format!("budget:ip:unknown:1:{}", u64::MAX)
        );
    }

    #[test]
    fn a_kept_validation_serves_only_the_operation_it_was_for() {
        let slot = Arc::<OnceLock<Validated>>::default();
        let first = ValidationMemo::new(slot.clone(), Some("A"));
        assert!(first.get().is_none());
        first.keep(measured(7));
        assert_eq!(first.get().map(|r| r.complexity), Some(7));

        // Another request for the same operation finds it; another operation does not, and
        // does not replace it.
        let again = ValidationMemo::new(slot.clone(), Some("A"));
        assert_eq!(again.get().map(|r| r.complexity), Some(7));
        let other = ValidationMemo::new(slot.clone(), Some("B"));
        assert!(other.get().is_none());
        other.keep(measured(9));
        assert!(other.get().is_none());
        assert!(ValidationMemo::new(slot, None).get().is_none());
    }
}
