//! Outgoing mail: SMTP (lettre, pooled, TLS when the URL says so) or, by default, `.eml` files in
//! `DATA_DIR/outbox` plus one log line. Mail is sent by the `send_email` background job, never on
//! the request path.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use super::jobs::{JobContext, JobHandler};
use crate::config::Settings;

/// The job kind that delivers an [`Email`].
pub const SEND_EMAIL: &str = "send_email";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A one-click unsubscribe URL (RFC 8058): sent as `List-Unsubscribe` with
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

fn build(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| MailError::Invalid(format!("recipient: {e}")))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone());
    if let Some(url) = &email.unsubscribe {
        if url.contains(['\r', '\n', '<', '>']) {
            return Err(MailError::Invalid("unsubscribe URL".into()));
        }
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::Invalid(e.to_string()))
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

#[async_trait]
impl Mailer for SmtpMailer {
    #[tracing::instrument(name = "mail.send", skip_all, fields(otel.kind = "client", mail.transport = "smtp"))]
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build(&self.from, email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Delivery(e.to_string()))
    }
}

/// Writes each message as an `.eml` file: the embedded default and what tests read.
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    pub fn new(dir: PathBuf, from: Mailbox) -> Self {
        Self { dir, from }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    #[tracing::instrument(name = "mail.send", skip_all, fields(otel.kind = "client", mail.transport = "outbox"))]
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build(&self.from, email)?;
        let name = format!("{}.eml", uuid::Uuid::now_v7());
        let path = self.dir.join(&name);
        let dir = self.dir.clone();
        let bytes = message.formatted();
        // Mail holds personal data and one-time links: only the owner may read it.
        tokio::task::spawn_blocking(move || {
            super::files::private_dir(&dir)?;
            let mut file = super::files::private_file_options()
                .truncate(true)
                .open(&path)?;
            std::io::Write::write_all(&mut file, &bytes)
        })
        .await
        .map_err(|e| MailError::Delivery(format!("outbox: {e}")))?
        .map_err(|e| MailError::Delivery(format!("outbox: {e}")))?;
        tracing::info!(file = %name, subject = %email.subject, "mail written to the outbox");
        Ok(())
    }
}

/// SMTP when `SMTP_URL` is set, otherwise the outbox folder.
///
/// # Errors
/// The SMTP URL or sender address cannot be used.
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn Mailer>, MailError> {
    let from: Mailbox = settings
        .mail
        .from
        .parse()
        .map_err(|e| MailError::Invalid(format!("MAIL_FROM: {e}")))?;
    match &settings.mail.smtp_url {
        Some(url) => {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                .map_err(|e| MailError::Invalid(format!("SMTP_URL: {e}")))?
                .timeout(Some(settings.mail.smtp_timeout))
                .build();
            Ok(Arc::new(SmtpMailer { transport, from }))
        }
        None => Ok(Arc::new(OutboxMailer::new(
            settings.data_dir.join("outbox"),
            from,
        ))),
    }
}

/// Delivers `send_email` jobs.
pub struct SendEmailJob {
    pub mailer: Arc<dyn Mailer>,
}

#[async_trait]
impl JobHandler for SendEmailJob {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String> {
        let email: Email =
            serde_json::from_str(job.payload).map_err(|e| format!("bad payload: {e}"))?;
        self.mailer.send(&email).await.map_err(|e| e.to_string())
    }
}
