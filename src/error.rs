//! One closed error type for the whole crate, mapped to a stable `extensions.code`, and the one
//! builder of the error body every path answers with (GraphQL, HTTP layers, WebSocket, OAuth).
//!
//! Infrastructure variants display as "internal server error" so that even a stray `?` or
//! `Display` conversion cannot leak SQL, paths or secrets; their cause chain is logged once, with
//! the request id, where the error is answered ([`AppError::report`]).

use std::collections::BTreeMap;

use async_graphql::ErrorExtensions as _;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The vocabulary of `extensions.code`. Clients switch on these strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    NotFound,
    Conflict,
    RateLimited,
    QueryTooComplex,
    PersistedQueryNotFound,
    /// Safelist mode: the document is not in the manifest.
    PersistedQueryNotAllowed,
    /// The password was right; a TOTP or backup code is needed too.
    TwoFactorRequired,
    /// The account is banned (`extensions.bannedUntil` when the ban ends).
    AccountBanned,
    /// The HTTP request itself is malformed (body, parameters, unknown operation).
    BadRequest,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    MethodNotAllowed,
    NotAcceptable,
    /// `If-None-Match` matched on a POST: only GET and HEAD revalidate (RFC 9110 §13.1.2).
    PreconditionFailed,
    UnsupportedMediaType,
    PayloadTooLarge,
    Timeout,
    ServiceUnavailable,
    InternalServerError,
}

impl ErrorCode {
    /// A GraphQL error with this code in its extensions (add more there as needed).
    pub fn graphql_error(
        self,
        message: impl Into<String>,
        at: Option<async_graphql::Pos>,
    ) -> async_graphql::ServerError {
        let mut error = async_graphql::ServerError::new(message, at);
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", self.as_str());
        error.extensions = Some(extensions);
        error
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotAllowed => "PERSISTED_QUERY_NOT_ALLOWED",
            Self::TwoFactorRequired => "TWO_FACTOR_REQUIRED",
            Self::AccountBanned => "ACCOUNT_BANNED",
            Self::BadRequest => "BAD_REQUEST",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::NotAcceptable => "NOT_ACCEPTABLE",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::Timeout => "TIMEOUT",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The HTTP status a non-GraphQL path (or a request error) answers with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated | Self::TwoFactorRequired => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::AccountBanned => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BadUserInput
            | Self::QueryTooComplex
            | Self::PersistedQueryNotFound
            | Self::PersistedQueryNotAllowed
            | Self::BadRequest
            | Self::GraphqlParseFailed
            | Self::GraphqlValidationFailed => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code for an HTTP status that a layer produced without a body.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthenticated,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::NOT_ACCEPTABLE => Self::NotAcceptable,
            StatusCode::PRECONDITION_FAILED => Self::PreconditionFailed,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::CONFLICT => Self::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::InternalServerError,
        }
    }
}

/// Every failure a service can return.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthenticated,
    /// A credential was presented but is invalid, expired or revoked.
    #[error("{0}")]
    InvalidToken(String),
    /// Unknown email and wrong password alike.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("a two-factor code is required")]
    TwoFactorRequired,
    #[error("invalid two-factor code")]
    InvalidTwoFactorCode,
    #[error("{0}")]
    Forbidden(String),
    /// A safety rule refused the action; `reason` is a stable machine-readable name.
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    #[error("this account is banned")]
    AccountBanned {
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Field name → message, for `extensions.fields`.
    #[error("{message}")]
    BadUserInput {
        message: String,
        fields: BTreeMap<String, String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    BadRequest(String),
    /// The operation ran past its deadline and was stopped.
    #[error("the operation took longer than {} and was stopped", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal server error")]
    Database(#[from] sea_orm::DbErr),
    #[error("internal server error")]
    Store(#[from] crate::infra::StoreError),
    #[error("internal server error")]
    Internal(#[from] anyhow::Error),
    #[error("internal server error")]
    Crypto(#[from] crate::infra::crypto::CryptoError),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated
            | Self::InvalidToken(_)
            | Self::InvalidCredentials
            | Self::InvalidTwoFactorCode => ErrorCode::Unauthenticated,
            Self::TwoFactorRequired => ErrorCode::TwoFactorRequired,
            Self::Forbidden(_) | Self::Refused { .. } => ErrorCode::Forbidden,
            Self::AccountBanned { .. } => ErrorCode::AccountBanned,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Database(_) | Self::Store(_) | Self::Internal(_) | Self::Crypto(_) => {
                ErrorCode::InternalServerError
            }
        }
    }

    /// One invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::BadUserInput {
            message: format!("invalid input: {field}: {message}"),
            fields: BTreeMap::from([(field.to_owned(), message)]),
        }
    }

    /// Logs the hidden cause of an infrastructure error — its whole `source()` chain — once, where
    /// the error is answered; the current span carries the request id. Other errors are the
    /// caller's, not ours, and are not logged.
    pub fn report(&self) {
        match self {
            Self::Database(_) | Self::Store(_) | Self::Internal(_) | Self::Crypto(_) => {
                tracing::error!(error = ?ErrorChain(self), "internal error");
            }
            Self::Unavailable(_) => {
                tracing::warn!(error = ?ErrorChain(self), "dependency unavailable");
            }
            _ => {}
        }
    }

    /// Seconds a client should wait before retrying, for errors that have one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }

    /// The `extensions` object for this error, with the current request's id.
    pub fn extensions(&self) -> serde_json::Value {
        let mut ext = json!({ "code": self.code().as_str() });
        match self {
            Self::BadUserInput { fields, .. } => ext["fields"] = json!(fields),
            Self::Refused { reason, .. } => ext["reason"] = json!(reason),
            Self::AccountBanned { until: Some(until) } => {
                ext["bannedUntil"] = json!(until.to_rfc3339())
            }
            _ => {}
        }
        if let Some(retry) = self.retry_after() {
            ext["retryAfter"] = json!(retry);
        }
        if let Some(id) = crate::telemetry::current_request_id() {
            ext["requestId"] = json!(id);
        }
        if let Some(trace) = crate::telemetry::otel::current_trace_id() {
            ext["traceId"] = json!(trace);
        }
        ext
    }
}

/// How long clients are told to wait when a dependency is down.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// Formats an error with every `source()` below it: `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sanitised `Display` of our own infrastructure variants says nothing: start below.
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        let mut first = true;
        while let Some(error) = current {
            let text = error.to_string();
            if !(first && text == "internal server error") {
                if !first {
                    f.write_str(": ")?;
                }
                write!(f, "{text}")?;
                first = false;
            }
            current = error.source();
        }
        Ok(())
    }
}

/// The body every error answers with: the GraphQL error shape.
pub fn error_body(message: &str, extensions: serde_json::Value) -> serde_json::Value {
    json!({ "errors": [{ "message": message, "extensions": extensions }] })
}

/// A JSON error response: the body of [`error_body`] with `code` and the current request id, the
/// status, and the headers that go with the code (`Retry-After`, `WWW-Authenticate`).
pub fn error_response(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    extensions: Option<serde_json::Value>,
) -> Response {
    let mut ext = extensions.unwrap_or_else(|| json!({}));
    ext["code"] = json!(code.as_str());
    if ext.get("requestId").is_none()
        && let Some(id) = crate::telemetry::current_request_id()
    {
        ext["requestId"] = json!(id);
    }
    if ext.get("traceId").is_none()
        && let Some(trace) = crate::telemetry::otel::current_trace_id()
    {
        ext["traceId"] = json!(trace);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(retry) = ext.get("retryAfter").and_then(serde_json::Value::as_u64)
        && let Ok(value) = HeaderValue::from_str(&retry.to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    let body = serde_json::to_vec(&error_body(message, ext)).unwrap_or_default();
    (status, headers, body).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.report();
        let code = self.code();
        error_response(
            code.status(),
            code,
            &self.to_string(),
            Some(self.extensions()),
        )
    }
}

/// Resolvers turn service errors into GraphQL errors with `.map_err(|e| e.extend())` (or the
/// [`GqlResultExt::gql`] shorthand), which keeps the code. (A bare `?` would also compile through
/// async-graphql's `Display` conversion, but would lose the code; the message stays sanitised.)
impl async_graphql::ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.report();
        let extensions = self.extensions();
        async_graphql::Error::new(self.to_string()).extend_with(|_, e| {
            if let serde_json::Value::Object(map) = &extensions {
                for (key, value) in map {
                    if let Ok(value) = async_graphql::Value::from_json(value.clone()) {
                        e.set(key.as_str(), value);
                    }
                }
            }
        })
    }
}

pub trait GqlResultExt<T> {
    /// The service result as a resolver result, with the error's code.
    ///
    /// # Errors
    /// The service's error, extended with its code.
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResultExt<T> for AppResult<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

/// Collects every invalid field of an input before failing, so a client fixes them all at once.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// Checks `input` as plain text (`crate::text`): the normalised text, or `None` with the
    /// field's error added.
    pub fn text(&mut self, field: &str, input: &str, rules: crate::text::Rules) -> Option<String> {
        match crate::text::plain(input, rules) {
            Ok(text) => Some(text),
            Err(rejection) => {
                self.add(field, rejection.message());
                None
            }
        }
    }

    /// # Errors
    /// `BAD_USER_INPUT` naming every field added.
    pub fn into_result(self) -> AppResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        Err(AppError::BadUserInput {
            message: format!("invalid input: {}", names.join(", ")),
            fields: self.0,
        })
    }
}

/// Maps a unique-constraint violation to `CONFLICT`, on PostgreSQL and SQLite alike.
pub fn conflict_on_unique(message: &'static str) -> impl Fn(sea_orm::DbErr) -> AppError {
    move |error| match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict(message.into()),
        _ => AppError::Database(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infrastructure_errors_never_show_their_source() {
        let error = AppError::Database(sea_orm::DbErr::Custom(
            "relation \"users\" does not exist at /srv/app".into(),
        ));
        assert_eq!(error.to_string(), "internal server error");
        let gql = error.extend();
        assert_eq!(gql.message, "internal server error");
    }

    #[test]
    fn bad_user_input_names_its_fields() {
        let ext = AppError::invalid("email", "is not an email address").extensions();
        assert_eq!(ext["code"], "BAD_USER_INPUT");
        assert_eq!(ext["fields"]["email"], "is not an email address");
    }
}
