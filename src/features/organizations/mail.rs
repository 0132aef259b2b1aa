//! The invitation mail, as a durable job: the request only queues `{invitation}`; the job issues
//! the single-use token (storing its hash on the invitation, so only the last mailed link works)
//! and sends. The request does the same work whether or not the address has an account.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entity::invitations;
use crate::entities::organizations;
use crate::features::notifications::{Content, NotificationKind, notify};
use crate::identity::{accounts, tokens};
use crate::infra::jobs::{JobContext, JobHandler};
use crate::infra::mailer::Email;
use crate::state::AppState;
use crate::text::escape_html;

pub const INVITATION_MAIL: &str = "organization_invitation_mail";

/// At most this many invitation mails per recipient and hour, whoever sends them.
const MAILS_PER_RECIPIENT: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct InvitationMail {
    pub invitation: Uuid,
}

pub struct InvitationMailJob {
    state: AppState,
}

pub fn handler(state: &AppState) -> Arc<dyn JobHandler> {
    Arc::new(InvitationMailJob {
        state: state.clone(),
    })
}

impl InvitationMailJob {
    async fn compose(&self, id: Uuid, first_attempt: bool) -> Result<Option<Email>, String> {
        let db = &self.state.db;
        let failed = |_| "database unavailable".to_owned();
        let failed_app = |error: crate::error::AppError| {
            error.report();
            "database unavailable".to_owned()
        };
        let Some(invitation) = invitations::Entity::find_by_id(id)
            .one(db)
            .await
            .map_err(failed)?
            .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none())
            .filter(|i| i.expires_at > Utc::now())
        else {
            return Ok(None);
        };
        let Some(organization) = organizations::Entity::find_by_id(invitation.organization_id)
            .one(db)
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        if first_attempt && !self.within_cap(&invitation.email).await {
            tracing::info!("invitation mail cap reached for a recipient; not sent");
            return Ok(None);
        }
        if first_attempt {
            self.notify_in_app(&invitation, &organization)
                .await
                .map_err(failed_app)?;
        }
        let (token, hash) = tokens::new_refresh_token();
        invitations::Entity::update_many()
            .col_expr(invitations::Column::TokenHash, Expr::value(hash))
            .filter(invitations::Column::Id.eq(invitation.id))
            .filter(invitations::Column::AcceptedAt.is_null())
            .filter(invitations::Column::RevokedAt.is_null())
            .exec(db)
            .await
            .map_err(failed)?;
        Ok(Some(message(
            &self.state.settings.http.public_url,
            &invitation.email,
            &organization.name,
            &invitation.role,
            &token,
        )))
    }

    /// Tells an invitee who has an account in the app as well (never the token: that only
    /// travels by mail). Once per invitation, however often the job runs.
    async fn notify_in_app(
        &self,
        invitation: &invitations::Model,
        organization: &organizations::Model,
    ) -> crate::error::AppResult<()> {
        let state = &self.state;
        let Some(user) = accounts::find_by_email(&state.db, &invitation.email).await? else {
            return Ok(());
        };
        let role = invitation.role.to_lowercase();
        let mut content = Content::new(
            format!("Invitation to join {}", organization.name),
            format!(
                "You are invited to join {} as {role}. Accept with the link in the email we sent                  to {}.",
                organization.name, invitation.email
            ),
        )
        .data("organization", serde_json::json!(organization.slug))
        .data("invitation", serde_json::json!(invitation.id));
        content.source_key = Some(format!("invitation:{}", invitation.id));
        content.no_email = true;
        let txn = crate::infra::db::begin(&state.db).await?;
        let delivery = notify(
            state,
            &txn,
            &[user.id],
            NotificationKind::Organization,
            &content,
            None,
        )
        .await?;
        txn.commit().await?;
        delivery.publish(state).await;
        Ok(())
    }

    async fn within_cap(&self, recipient: &str) -> bool {
        match self
            .state
            .stores
            .kv
            .sliding_window(
                &format!("mail:invitation:{recipient}"),
                MAILS_PER_RECIPIENT,
                Duration::from_secs(3600),
            )
            .await
        {
            Ok(outcome) => outcome.allowed,
            Err(error) => {
                error.log("invitation mail cap unavailable; sending");
                true
            }
        }
    }
}

fn message(base: &url::Url, to: &str, organization: &str, role: &str, token: &str) -> Email {
    let mut url = base
        .join("invitations/accept")
        .unwrap_or_else(|_| base.clone());
    url.query_pairs_mut().append_pair("token", token);
    let role = role.to_lowercase();
    let intro = format!("You are invited to join {organization} as {role}.");
    let outro = "The link works once, for the account with this email address, and expires in 7 \
                 days. If you did not expect it, ignore this message.";
    Email {
        to: to.to_owned(),
        subject: format!("Join {organization}"),
        text: format!(
            "{intro}\n\nAccept the invitation:\n{url}\n\nOr enter this code:\ntoken: {token}\n\n{outro}\n"
        ),
        html: format!(
            "<p>{}</p><p><a href=\"{}\">Accept the invitation</a></p><p>Or enter this code: <code>{}</code></p><p>{}</p>",
            escape_html(&intro),
            escape_html(url.as_str()),
            escape_html(token),
            escape_html(outro),
        ),
        unsubscribe: None,
    }
}

#[async_trait]
impl JobHandler for InvitationMailJob {
    async fn handle(&self, job: JobContext<'_>) -> Result<(), String> {
        let mail: InvitationMail =
            serde_json::from_str(job.payload).map_err(|e| format!("bad payload: {e}"))?;
        let Some(email) = self.compose(mail.invitation, job.attempt <= 1).await? else {
            return Ok(());
        };
        self.state
            .mailer
            .send(&email)
            .await
            .map_err(|e| e.to_string())
    }
}
