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
use crate::error::ErrorCode;

/// How far an operation got; shared with the transport through the request data.
#[derive(Debug, Default)]
pub struct RequestPhase {
    parsed: AtomicBool,
    validated: AtomicBool,
    executed: AtomicBool,
}

impl RequestPhase {
    /// `false` when the operation failed before execution (parse, validation, limits).
    pub fn executed(&self) -> bool {
        self.executed.load(Ordering::Acquire)
    }
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

#[async_trait::async_trait]
impl Extension for RequestContextExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        self.shared.decorate(&mut response);
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
        self.shared.phase().parsed.store(true, Ordering::Release);
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
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
