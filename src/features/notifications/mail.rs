//! Notification email: one durable job per recipient, sent only to a verified, active address
//! whose preference still mails the kind when the job runs, each with a signed one-click
//! unsubscribe link for that kind (RFC 8058: `List-Unsubscribe` + `List-Unsubscribe-Post`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::kinds::NotificationKind;
use super::service;
use crate::error::AppResult;
use crate::identity::accounts;
use crate::infra::jobs::{JobContext, JobHandler};
use crate::infra::mailer::Email;
use crate::state::AppState;
use crate::text::escape_html;

pub const NOTIFICATION_MAIL: &str = "notification_mail";

/// The path of the unsubscribe page and its one-click endpoint.
pub const UNSUBSCRIBE_PATH: &str = "/notifications/unsubscribe";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationMail {
    pub user_id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
}

pub fn handler(state: &AppState) -> Arc<dyn JobHandler> {
    Arc::new(NotificationMailJob {
        state: state.clone(),
    })
}

struct NotificationMailJob {
    state: AppState,
}

#[async_trait]
impl JobHandler for NotificationMailJob {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String> {
        let mail: NotificationMail =
            serde_json::from_str(job.payload).map_err(|e| format!("bad payload: {e}"))?;
        let email = match self.compose(&mail).await {
            Ok(Some(email)) => email,
            Ok(None) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        };
        self.state
            .mailer
            .send(&email)
            .await
            .map_err(|e| e.to_string())
    }
}

impl NotificationMailJob {
    /// The message, or `None` when the address may not (or no longer wants to) receive it.
    async fn compose(&self, mail: &NotificationMail) -> AppResult<Option<Email>> {
        let state = &self.state;
        let Some(user) = accounts::find_by_id(&state.db, mail.user_id).await? else {
            return Ok(None);
        };
        // A suspended account still hears about its own security (the suspension itself).
        let banned = user.is_banned_at(Utc::now()) && mail.kind != NotificationKind::Security;
        if !user.is_verified || !user.is_active || banned {
            return Ok(None);
        }
        if !service::mails(&state.db, user.id, mail.kind).await? {
            return Ok(None);
        }
        let unsubscribe = unsubscribe_url(state, user.id, mail.kind);
        let link = mail.link.as_deref().map(|link| absolute(state, link));
        let body_text =
            crate::text::clean_lossy(&strip_tags(&mail.body), 10_000).unwrap_or_default();
        let mut text = format!("{}\n\n{body_text}\n", mail.title);
        let mut html = format!(
            "<h1>{}</h1><div>{}</div>",
            escape_html(&mail.title),
            crate::text::sanitize_html(&mail.body)
        );
        if let Some(link) = &link {
            text.push_str(&format!("\nOpen: {link}\n"));
            html.push_str(&format!(
                "<p><a href=\"{}\">Open</a></p>",
                escape_html(link)
            ));
        }
        let footer = format!(
            "You receive {} by email. Stop them: {unsubscribe}",
            mail.kind.label()
        );
        text.push_str(&format!("\n--\n{footer}\n"));
        html.push_str(&format!(
            "<hr><p>You receive {} by email. <a href=\"{}\">Unsubscribe</a></p>",
            escape_html(mail.kind.label()),
            escape_html(&unsubscribe)
        ));
        Ok(Some(Email {
            to: user.email,
            subject: mail.title.clone(),
            text,
            html,
            unsubscribe: Some(unsubscribe),
        }))
    }
}

/// A frontend path made absolute on `PUBLIC_URL`; absolute URLs stay as they are.
fn absolute(state: &AppState, link: &str) -> String {
    state
        .settings
        .http
        .public_url
        .join(link)
        .map_or_else(|_| link.to_owned(), |url| url.to_string())
}

/// Formatted text as plain text, for the text part of a mail.
fn strip_tags(html: &str) -> String {
    ammonia::Builder::empty().clean(html).to_string()
}

/// `<user>.<KIND>.<mac>`: names the user and kind, and cannot be made for another without the
/// server's key.
pub fn unsubscribe_token(state: &AppState, user_id: Uuid, kind: NotificationKind) -> String {
    let claim = format!("{}.{}", user_id.simple(), kind.as_str());
    let mac = mac(state, &claim);
    format!("{claim}.{mac}")
}

fn mac(state: &AppState, claim: &str) -> String {
    state
        .secret_box
        .fingerprint(format!("notifications:unsubscribe\0{claim}").as_bytes())
}

/// The user and kind a token names, when it is genuine.
pub fn verify_unsubscribe_token(state: &AppState, token: &str) -> Option<(Uuid, NotificationKind)> {
    let (claim, given) = token.rsplit_once('.')?;
    let expected = mac(state, claim);
    let equal = expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if !equal {
        return None;
    }
    let (user, kind) = claim.split_once('.')?;
    Some((Uuid::parse_str(user).ok()?, NotificationKind::parse(kind)?))
}

pub fn unsubscribe_url(state: &AppState, user_id: Uuid, kind: NotificationKind) -> String {
    let mut url = state
        .settings
        .http
        .public_url
        .join(UNSUBSCRIBE_PATH.trim_start_matches('/'))
        .unwrap_or_else(|_| state.settings.http.public_url.clone());
    url.query_pairs_mut()
        .append_pair("token", &unsubscribe_token(state, user_id, kind));
    url.to_string()
}
