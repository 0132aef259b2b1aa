//! One closed error type for the whole crate, mapped to a stable `extensions.code`.
//!
//! Infrastructure variants display as "internal server error" so that even a stray `?` or
//! `Display` conversion cannot leak SQL, paths or secrets; their source is logged once.

use std::collections::BTreeMap;

use async_graphql::ErrorExtensions as _;
use axum::http::StatusCode;
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
    UnsupportedMediaType,
    PayloadTooLarge,
    Timeout,
    ServiceUnavailable,
    InternalServerError,
}

impl ErrorCode {
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
            Self::Unauthenticated | Self::InvalidCredentials | Self::InvalidTwoFactorCode => {
                ErrorCode::Unauthenticated
            }
            Self::TwoFactorRequired => ErrorCode::TwoFactorRequired,
            Self::Forbidden(_) | Self::Refused { .. } => ErrorCode::Forbidden,
            Self::AccountBanned { .. } => ErrorCode::AccountBanned,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::BadRequest(_) => ErrorCode::BadRequest,
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

    /// Logs the hidden cause of infrastructure errors once; the span carries the request id.
    fn log_source(&self) {
        match self {
            Self::Database(e) => tracing::error!(error = %e, "database error"),
            Self::Store(e) => tracing::error!(error = %e, "shared store error"),
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            Self::Crypto(e) => tracing::error!(error = %e, "secret decryption failed"),
            Self::Unavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "dependency unavailable")
            }
            _ => {}
        }
    }

    /// The `extensions` object for this error (without `requestId`, which the transport adds).
    pub fn extensions(&self) -> serde_json::Value {
        let mut ext = json!({ "code": self.code().as_str() });
        match self {
            Self::BadUserInput { fields, .. } => ext["fields"] = json!(fields),
            Self::RateLimited { retry_after_secs } => ext["retryAfter"] = json!(retry_after_secs),
            Self::Refused { reason, .. } => ext["reason"] = json!(reason),
            Self::AccountBanned { until: Some(until) } => {
                ext["bannedUntil"] = json!(until.to_rfc3339())
            }
            _ => {}
        }
        ext
    }
}

/// Resolvers turn service errors into GraphQL errors with `.map_err(|e| e.extend())` (or the
/// [`GqlResultExt::gql`] shorthand), which keeps the code. (A bare `?` would also compile through
/// async-graphql's `Display` conversion, but would lose the code; the message stays sanitised.)
impl async_graphql::ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.log_source();
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

/// The body every non-GraphQL error path answers with: the GraphQL error shape.
pub fn error_body(message: &str, extensions: serde_json::Value) -> serde_json::Value {
    json!({ "errors": [{ "message": message, "extensions": extensions }] })
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
