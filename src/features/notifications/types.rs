use async_graphql::connection::PageInfo;
use async_graphql::{ComplexObject, Context, ID, InputObject, Json, Result, SimpleObject};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::entity::notifications;
use super::hub::Record;
use super::kinds::NotificationKind;
use super::service::{self, Filter, Preference};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::ContextExt as _;
use crate::identity::SessionEnd;

/// An opaque cursor for a notification (its place in the newest-first order).
pub fn cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// # Errors
/// `BAD_USER_INPUT` naming `field` for anything that is not a cursor of ours.
pub fn parse_cursor(field: &str, cursor: &str) -> Result<Uuid, AppError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| AppError::invalid(field, "is not a notification cursor"))
}

/// Something that happened for the viewer.
#[derive(SimpleObject, Debug, Clone)]
pub struct Notification {
    pub id: ID,
    pub kind: NotificationKind,
    pub title: String,
    /// Sanitised HTML for announcements, plain text otherwise.
    pub body: String,
    /// Where the client should take the user (a path of the frontend), when anywhere.
    pub link: Option<String>,
    /// Everything the notification carries, `link` included.
    pub payload: Json<serde_json::Value>,
    pub read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Pass as `after` to `notifications` (older ones) or `notificationAdded` (newer ones).
    pub cursor: String,
}

impl Notification {
    fn new(
        id: Uuid,
        kind: NotificationKind,
        title: String,
        body: String,
        payload: serde_json::Value,
        read_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ID(id.to_string()),
            kind,
            title,
            body,
            link: payload
                .get("link")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            payload: Json(payload),
            read: read_at.is_some(),
            read_at,
            created_at,
            cursor: cursor(id),
        }
    }
}

impl From<notifications::Model> for Notification {
    fn from(m: notifications::Model) -> Self {
        let payload = serde_json::from_str(&m.payload).unwrap_or(serde_json::Value::Null);
        // A kind a newer release stored and this one does not know reads as an announcement.
        let kind = NotificationKind::parse(&m.kind).unwrap_or(NotificationKind::Announcement);
        Self::new(
            m.id,
            kind,
            m.title,
            m.body,
            payload,
            m.read_at,
            m.created_at,
        )
    }
}

impl From<&Record> for Notification {
    fn from(r: &Record) -> Self {
        Self::new(
            r.id,
            r.kind,
            r.title.clone(),
            r.body.clone(),
            r.payload.clone(),
            r.read_at,
            r.created_at,
        )
    }
}

#[derive(InputObject, Default)]
pub struct NotificationFilter {
    #[graphql(default)]
    pub unread_only: bool,
    /// Only these kinds (all when absent or empty).
    pub kinds: Option<Vec<NotificationKind>>,
}

impl From<NotificationFilter> for Filter {
    fn from(f: NotificationFilter) -> Self {
        Self {
            unread_only: f.unread_only,
            kinds: f.kinds.unwrap_or_default(),
        }
    }
}

#[derive(SimpleObject)]
pub struct NotificationEdge {
    pub cursor: String,
    pub node: Notification,
}

/// A page of the viewer's notifications, newest first (Relay cursor connection).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct NotificationConnection {
    pub edges: Vec<NotificationEdge>,
    pub nodes: Vec<Notification>,
    pub page_info: PageInfo,
    #[graphql(skip)]
    pub user_id: Uuid,
    #[graphql(skip)]
    pub filter: Filter,
}

#[ComplexObject]
impl NotificationConnection {
    /// Every notification the filter matches (counted only when asked for).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<u64> {
        service::count(&ctx.state()?.db, self.user_id, &self.filter)
            .await
            .gql()
    }
}

/// Whether a kind is shown in the app and sent by email.
#[derive(SimpleObject)]
pub struct NotificationPreference {
    pub kind: NotificationKind,
    pub in_app: bool,
    pub email: bool,
    /// This kind is always shown in the app (`inApp` cannot be turned off).
    pub in_app_required: bool,
}

impl From<Preference> for NotificationPreference {
    fn from(p: Preference) -> Self {
        Self {
            kind: p.kind,
            in_app: p.in_app,
            email: p.email,
            in_app_required: p.kind.in_app_required(),
        }
    }
}

/// A change to one kind; an absent channel stays as it is.
#[derive(InputObject)]
pub struct NotificationPreferenceInput {
    pub kind: NotificationKind,
    pub in_app: Option<bool>,
    pub email: Option<bool>,
}

/// Exactly one of `all`, `roles` or `userIds`.
#[derive(InputObject, Default)]
pub struct AnnouncementAudience {
    /// Every active user.
    pub all: Option<bool>,
    /// Users holding any of these roles.
    pub roles: Option<Vec<String>>,
    /// These users (at most 10,000).
    pub user_ids: Option<Vec<ID>>,
}

#[derive(InputObject)]
pub struct BroadcastAnnouncementInput {
    /// Plain text, one line, at most 200 characters.
    pub title: String,
    /// HTML, sanitised (scripts, styles and event handlers removed); at most 10,000 characters.
    pub body: String,
    pub audience: AnnouncementAudience,
    /// Also by email, to recipients whose preference mails announcements.
    #[graphql(default)]
    pub email: bool,
}

/// The announcement is queued; recipients get it as its batches run.
#[derive(SimpleObject)]
pub struct AnnouncementReceipt {
    pub announcement_id: ID,
}

/// The socket's session ended: sign out (or refresh and connect again, for `TOKEN_EXPIRED`).
/// The socket closes with 4403 right after this event.
#[derive(SimpleObject)]
pub struct SessionEvent {
    pub reason: SessionEnd,
    pub message: String,
    pub at: DateTime<Utc>,
}
