//! The mails identity sends, as one durable job kind.
//!
//! A request only enqueues what should happen (`Reset { email }`), never the token or whether the
//! address has an account: the job looks the account up, applies the per-recipient cap, creates
//! the single-use token and sends. So the request does the same work for every address (no timing
//! oracle), a stranger cannot flood an inbox (`AUTH_MAIL_LIMIT` per kind and recipient, each
//! alias of a mutation counting), and no token ever sits in the jobs table.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::email_tokens::{self, Purpose};
use super::emails;
use crate::error::{AppError, AppResult};
use crate::identity::accounts;
use crate::infra::jobs::{JobContext, JobHandler};
use crate::infra::mailer::Email;
use crate::state::AppState;

pub const AUTH_MAIL: &str = "auth_mail";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthMail {
    /// Confirm the address of this account (nothing when it is confirmed already).
    Verify { user_id: Uuid },
    /// A reset link, when the address has an account (nothing otherwise).
    Reset { email: String },
    /// Someone tried to register an address that has an account.
    AlreadyRegistered { email: String },
}

impl AuthMail {
    fn kind(&self) -> &'static str {
        match self {
            Self::Verify { .. } => "verify",
            Self::Reset { .. } => "reset",
            Self::AlreadyRegistered { .. } => "already_registered",
        }
    }
}

/// Queues a mail on `conn` (the transaction of the change that causes it).
///
/// # Errors
/// The database fails.
pub async fn enqueue(
    state: &AppState,
    conn: &impl ConnectionTrait,
    mail: &AuthMail,
    request_id: Option<&str>,
) -> AppResult<()> {
    state
        .jobs
        .enqueue(conn, AUTH_MAIL, mail, request_id)
        .await?;
    Ok(())
}

pub struct AuthMailJob {
    state: AppState,
}

pub fn handler(state: &AppState) -> Arc<dyn JobHandler> {
    Arc::new(AuthMailJob {
        state: state.clone(),
    })
}

impl AuthMailJob {
    /// The message to send, or `None` when there is nothing to send.
    async fn compose(&self, mail: &AuthMail, first_attempt: bool) -> AppResult<Option<Email>> {
        let state = &self.state;
        let base = &state.settings.http.public_url;
        let (recipient, user) = match mail {
            AuthMail::Verify { user_id } => {
                match accounts::find_by_id(&state.db, *user_id).await? {
                    Some(user) if !user.is_verified => (user.email.clone(), Some(user)),
                    _ => return Ok(None),
                }
            }
            AuthMail::Reset { email } => match accounts::find_by_email(&state.db, email).await? {
                Some(user) => (user.email.clone(), Some(user)),
                None => return Ok(None),
            },
            AuthMail::AlreadyRegistered { email } => (accounts::normalize_email(email), None),
        };
        // Counted once per job, so a retry after a delivery failure is not refused by its own
        // first attempt.
        if first_attempt && !self.within_cap(mail.kind(), &recipient).await {
            tracing::info!(
                kind = mail.kind(),
                "mail cap reached for a recipient; not sent"
            );
            return Ok(None);
        }
        let email = match (mail, user) {
            (AuthMail::Verify { .. }, Some(user)) => {
                let token = email_tokens::issue(&state.db, user.id, Purpose::VerifyEmail).await?;
                emails::verify_email(base, &user.email, &token)
            }
            (AuthMail::Reset { .. }, Some(user)) => {
                let token = email_tokens::issue(&state.db, user.id, Purpose::ResetPassword).await?;
                emails::reset_password(base, &user.email, &token)
            }
            (AuthMail::AlreadyRegistered { .. }, _) => emails::already_registered(&recipient),
            _ => return Ok(None),
        };
        Ok(Some(email))
    }

    async fn within_cap(&self, kind: &str, recipient: &str) -> bool {
        let quota = self.state.settings.auth.mail_limit;
        match self
            .state
            .stores
            .kv
            .sliding_window(
                &format!("mail:{kind}:{recipient}"),
                quota.limit,
                quota.window,
            )
            .await
        {
            Ok(outcome) => outcome.allowed,
            // A store outage must not stop password resets.
            Err(error) => {
                error.log("mail cap unavailable; sending");
                true
            }
        }
    }
}

#[async_trait]
impl JobHandler for AuthMailJob {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String> {
        let mail: AuthMail =
            serde_json::from_str(job.payload).map_err(|e| format!("bad payload: {e}"))?;
        let email = match self.compose(&mail, job.attempt <= 1).await {
            Ok(Some(email)) => email,
            Ok(None) => return Ok(()),
            Err(error) => {
                error.report();
                return Err(match error {
                    AppError::Database(_) => "database unavailable".to_owned(),
                    other => other.to_string(),
                });
            }
        };
        self.state
            .mailer
            .send(&email)
            .await
            .map_err(|e| e.to_string())
    }
}
