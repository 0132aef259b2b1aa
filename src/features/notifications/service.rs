//! Creating, reading and changing notifications, and the preferences that decide who gets what.
//!
//! Other features call [`notify`] inside the transaction of the change that causes the
//! notification, then [`Delivery::publish`] after the commit: rows, email jobs and the change
//! stand or fall together, and no subscriber hears of a row that was rolled back.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Select, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::entity::{notifications, preferences};
use super::hub::{self, Event, Shared};
use super::kinds::NotificationKind;
use super::mail;
use crate::entities::users;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// At most this many ids in one mark or delete call.
pub const MAX_IDS: usize = 100;
/// At most this many notifications in one page.
pub const MAX_PAGE: u64 = 100;
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 10_000;

/// What a notification says. `link` is where a client takes the user (a path of the frontend);
/// `data` is any further JSON the client needs.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub data: serde_json::Map<String, Value>,
    /// Set by fan-outs: one notification per recipient and key, however often a job runs.
    pub source_key: Option<String>,
    /// In the app only, whatever the recipients' email preferences.
    pub no_email: bool,
}

impl Content {
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            body: body.into(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn link(mut self, link: impl Into<String>) -> Self {
        self.link = Some(link.into());
        self
    }

    #[must_use]
    pub fn data(mut self, key: &str, value: Value) -> Self {
        self.data.insert(key.to_owned(), value);
        self
    }

    fn payload(&self) -> Value {
        let mut payload = self.data.clone();
        if let Some(link) = &self.link {
            payload.insert("link".to_owned(), json!(link));
        }
        Value::Object(payload)
    }
}

/// What [`notify`] wrote, to announce once the transaction committed.
#[must_use = "publish the delivery after the transaction commits"]
#[derive(Debug, Default)]
pub struct Delivery {
    event: Event,
    /// Rows written (recipients who see it in the app).
    pub rows: usize,
    /// Email jobs queued.
    pub emails: usize,
    kind: Option<NotificationKind>,
}

impl Delivery {
    /// Tells every instance's subscribers (and counts `notifications_sent_total`). Call after
    /// the commit.
    pub async fn publish(self, state: &AppState) {
        if let Some(kind) = self.kind {
            state.metrics.record(|| {
                for (channel, count) in [("in_app", self.rows), ("email", self.emails)] {
                    if count > 0 {
                        metrics::counter!(
                            "notifications_sent_total",
                            "kind" => kind.as_str(),
                            "channel" => channel,
                        )
                        .increment(count as u64);
                    }
                }
            });
        }
        hub::publish(state, &self.event).await;
    }
}

/// Notifies `recipients` on `conn` (the transaction of the change that causes it): a row for
/// each whose preference shows the kind in the app, an email job for each verified one whose
/// preference mails it. Duplicates in `recipients` count once.
///
/// # Errors
/// The database fails (and so the caller's change does not happen either).
pub async fn notify(
    state: &AppState,
    conn: &impl ConnectionTrait,
    recipients: &[Uuid],
    kind: NotificationKind,
    content: &Content,
    request_id: Option<&str>,
) -> AppResult<Delivery> {
    let mut seen = HashSet::new();
    let recipients: Vec<Uuid> = recipients
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    if recipients.is_empty() {
        return Ok(Delivery::default());
    }
    let title = crate::text::clean_lossy(&content.title, MAX_TITLE).unwrap_or_default();
    let body: String = content.body.chars().take(MAX_BODY).collect();
    let chosen = chosen_preferences(conn, &recipients, kind).await?;
    let defaults = kind.defaults();
    let (mut in_app, mut by_email) = (Vec::new(), Vec::new());
    for id in &recipients {
        let (app, email) = chosen
            .get(id)
            .copied()
            .unwrap_or((defaults.in_app, defaults.email));
        if app || kind.in_app_required() {
            in_app.push(*id);
        }
        if email && !content.no_email {
            by_email.push(*id);
        }
    }

    // A fan-out that runs again skips whom it reached already.
    if let Some(key) = &content.source_key {
        let reached: HashSet<Uuid> = notifications::Entity::find()
            .select_only()
            .column(notifications::Column::RecipientId)
            .filter(notifications::Column::SourceKey.eq(key.as_str()))
            .filter(notifications::Column::RecipientId.is_in(recipients.clone()))
            .into_tuple::<Uuid>()
            .all(conn)
            .await?
            .into_iter()
            .collect();
        in_app.retain(|id| !reached.contains(id));
        by_email.retain(|id| !reached.contains(id));
    }

    let now = Utc::now();
    let payload = content.payload();
    let mut items = Vec::with_capacity(in_app.len());
    if !in_app.is_empty() {
        let rows: Vec<notifications::ActiveModel> = in_app
            .iter()
            .map(|recipient| {
                let id = Uuid::now_v7();
                items.push((*recipient, id));
                notifications::ActiveModel {
                    id: Set(id),
                    recipient_id: Set(*recipient),
                    kind: Set(kind.as_str().to_owned()),
                    title: Set(title.clone()),
                    body: Set(body.clone()),
                    payload: Set(payload.to_string()),
                    source_key: Set(content.source_key.clone()),
                    read_at: Set(None),
                    created_at: Set(now),
                }
            })
            .collect();
        notifications::Entity::insert_many(rows).exec(conn).await?;
    }

    let mut emails = 0;
    if !by_email.is_empty() {
        let verified: Vec<Uuid> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .filter(users::Column::Id.is_in(by_email))
            .filter(users::Column::IsVerified.eq(true))
            .filter(users::Column::IsActive.eq(true))
            .into_tuple()
            .all(conn)
            .await?;
        for user_id in verified {
            let job = mail::NotificationMail {
                user_id,
                kind,
                title: title.clone(),
                body: body.clone(),
                link: content.link.clone(),
            };
            state
                .jobs
                .enqueue(conn, mail::NOTIFICATION_MAIL, &job, request_id)
                .await?;
            emails += 1;
        }
    }

    let counts = unread_counts(conn, &in_app).await?;
    let rows = items.len();
    let added = (!items.is_empty()).then_some({
        (
            Shared {
                kind,
                title,
                body,
                payload,
                created_at: now,
            },
            items,
        )
    });
    Ok(Delivery {
        event: Event { added, counts },
        rows,
        emails,
        kind: Some(kind),
    })
}

/// Each recipient's own choice for `kind`, where they made one: `(in_app, email)`.
async fn chosen_preferences(
    conn: &impl ConnectionTrait,
    users: &[Uuid],
    kind: NotificationKind,
) -> AppResult<HashMap<Uuid, (bool, bool)>> {
    Ok(preferences::Entity::find()
        .filter(preferences::Column::UserId.is_in(users.to_vec()))
        .filter(preferences::Column::Kind.eq(kind.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.user_id, (p.in_app, p.email)))
        .collect())
}

/// Unread counts of `users` (zeros included), in one grouped query.
async fn unread_counts(conn: &impl ConnectionTrait, users: &[Uuid]) -> AppResult<Vec<(Uuid, u64)>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let found: HashMap<Uuid, i64> = notifications::Entity::find()
        .select_only()
        .column(notifications::Column::RecipientId)
        .column_as(notifications::Column::Id.count(), "n")
        .filter(notifications::Column::RecipientId.is_in(users.to_vec()))
        .filter(notifications::Column::ReadAt.is_null())
        .group_by(notifications::Column::RecipientId)
        .into_tuple::<(Uuid, i64)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok(users
        .iter()
        .map(|id| {
            let n = found.get(id).copied().unwrap_or(0);
            (*id, u64::try_from(n).unwrap_or(0))
        })
        .collect())
}

/// Which of a user's notifications a list shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub unread_only: bool,
    pub kinds: Vec<NotificationKind>,
}

fn mine(user_id: Uuid, filter: &Filter) -> Select<notifications::Entity> {
    let mut query =
        notifications::Entity::find().filter(notifications::Column::RecipientId.eq(user_id));
    if filter.unread_only {
        query = query.filter(notifications::Column::ReadAt.is_null());
    }
    if !filter.kinds.is_empty() {
        query = query
            .filter(notifications::Column::Kind.is_in(filter.kinds.iter().map(|k| k.as_str())));
    }
    query
}

/// Newest first: up to `first` notifications older than `after`, and whether more follow.
///
/// # Errors
/// `BAD_USER_INPUT` for `first` outside 1–100; the database fails.
pub async fn page(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    filter: &Filter,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<(Vec<notifications::Model>, bool)> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(AppError::invalid(
            "first",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let mut query = mine(user_id, filter);
    if let Some(after) = after {
        query = query.filter(notifications::Column::Id.lt(after));
    }
    let mut rows = query
        .order_by_desc(notifications::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    let more = rows.len() > usize::try_from(first).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(first).unwrap_or(usize::MAX));
    Ok((rows, more))
}

/// How many notifications the filter matches.
///
/// # Errors
/// The database fails.
pub async fn count(db: &impl ConnectionTrait, user_id: Uuid, filter: &Filter) -> AppResult<u64> {
    Ok(mine(user_id, filter).count(db).await?)
}

/// # Errors
/// The database fails.
pub async fn unread_count(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<u64> {
    let filter = Filter {
        unread_only: true,
        kinds: Vec::new(),
    };
    count(db, user_id, &filter).await
}

/// Oldest first: up to `limit` notifications created after `after` (a replay's backlog).
///
/// # Errors
/// The database fails.
pub async fn since(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    after: Uuid,
    limit: u64,
) -> AppResult<Vec<notifications::Model>> {
    Ok(notifications::Entity::find()
        .filter(notifications::Column::RecipientId.eq(user_id))
        .filter(notifications::Column::Id.gt(after))
        .order_by_asc(notifications::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

fn check_ids(ids: &[Uuid]) -> AppResult<Vec<Uuid>> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(AppError::invalid(
            "ids",
            format!("must name 1 to {MAX_IDS} notifications"),
        ));
    }
    let mut seen = HashSet::new();
    Ok(ids.iter().copied().filter(|id| seen.insert(*id)).collect())
}

/// Checks on `conn` that every id is one of the user's notifications.
async fn own_all(conn: &impl ConnectionTrait, user_id: Uuid, ids: &[Uuid]) -> AppResult<()> {
    let owned = notifications::Entity::find()
        .filter(notifications::Column::RecipientId.eq(user_id))
        .filter(notifications::Column::Id.is_in(ids.to_vec()))
        .count(conn)
        .await?;
    if owned != ids.len() as u64 {
        return Err(AppError::NotFound("no such notification".into()));
    }
    Ok(())
}

/// Marks the user's notifications read (or unread again). Every id must be the user's, or
/// nothing changes (`NOT_FOUND`: another user's id looks like one that does not exist).
///
/// # Errors
/// `BAD_USER_INPUT` for an empty or too long list; `NOT_FOUND`; the database fails.
pub async fn mark(
    state: &AppState,
    user_id: Uuid,
    ids: &[Uuid],
    read: bool,
) -> AppResult<Vec<notifications::Model>> {
    let ids = check_ids(ids)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    own_all(&txn, user_id, &ids).await?;
    let mut update = notifications::Entity::update_many()
        .filter(notifications::Column::RecipientId.eq(user_id))
        .filter(notifications::Column::Id.is_in(ids.clone()));
    if read {
        update = update
            .col_expr(notifications::Column::ReadAt, Expr::value(Utc::now()))
            .filter(notifications::Column::ReadAt.is_null());
    } else {
        update = update
            .col_expr(
                notifications::Column::ReadAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .filter(notifications::Column::ReadAt.is_not_null());
    }
    let changed = update.exec(&txn).await?.rows_affected;
    let rows = notifications::Entity::find()
        .filter(notifications::Column::Id.is_in(ids))
        .order_by_desc(notifications::Column::Id)
        .all(&txn)
        .await?;
    let counts = if changed > 0 {
        unread_counts(&txn, &[user_id]).await?
    } else {
        Vec::new()
    };
    txn.commit().await?;
    hub::publish(
        state,
        &Event {
            added: None,
            counts,
        },
    )
    .await;
    Ok(rows)
}

/// Marks every unread notification of the user read; returns how many changed.
///
/// # Errors
/// The database fails.
pub async fn mark_all_read(state: &AppState, user_id: Uuid) -> AppResult<u64> {
    let changed = notifications::Entity::update_many()
        .col_expr(notifications::Column::ReadAt, Expr::value(Utc::now()))
        .filter(notifications::Column::RecipientId.eq(user_id))
        .filter(notifications::Column::ReadAt.is_null())
        .exec(&state.db)
        .await?
        .rows_affected;
    if changed > 0 {
        let counts = unread_counts(&state.db, &[user_id]).await?;
        hub::publish(
            state,
            &Event {
                added: None,
                counts,
            },
        )
        .await;
    }
    Ok(changed)
}

/// Deletes the user's notifications; every id must be the user's, or nothing changes.
///
/// # Errors
/// `BAD_USER_INPUT`, `NOT_FOUND`, or the database fails.
pub async fn delete(state: &AppState, user_id: Uuid, ids: &[Uuid]) -> AppResult<Vec<Uuid>> {
    let ids = check_ids(ids)?;
    let txn = crate::infra::db::begin(&state.db).await?;
    own_all(&txn, user_id, &ids).await?;
    notifications::Entity::delete_many()
        .filter(notifications::Column::RecipientId.eq(user_id))
        .filter(notifications::Column::Id.is_in(ids.clone()))
        .exec(&txn)
        .await?;
    let counts = unread_counts(&txn, &[user_id]).await?;
    txn.commit().await?;
    hub::publish(
        state,
        &Event {
            added: None,
            counts,
        },
    )
    .await;
    Ok(ids)
}

/// A user's settings for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    pub kind: NotificationKind,
    pub in_app: bool,
    pub email: bool,
}

/// Every kind, with the user's choice or the kind's defaults.
///
/// # Errors
/// The database fails.
pub async fn preferences_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<Preference>> {
    let chosen: HashMap<String, (bool, bool)> = preferences::Entity::find()
        .filter(preferences::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.kind, (p.in_app, p.email)))
        .collect();
    Ok(NotificationKind::ALL
        .into_iter()
        .map(|kind| {
            let defaults = kind.defaults();
            let (in_app, email) = chosen
                .get(kind.as_str())
                .copied()
                .unwrap_or((defaults.in_app, defaults.email));
            Preference {
                kind,
                in_app: in_app || kind.in_app_required(),
                email,
            }
        })
        .collect())
}

/// One change to a preference; `None` leaves that channel as it is.
#[derive(Debug, Clone, Copy)]
pub struct PreferenceChange {
    pub kind: NotificationKind,
    pub in_app: Option<bool>,
    pub email: Option<bool>,
}

/// Applies the changes in one transaction and returns every kind's settings.
///
/// # Errors
/// `BAD_USER_INPUT` for hiding a kind that is always shown, or a kind named twice; the
/// database fails.
pub async fn update_preferences(
    state: &AppState,
    user_id: Uuid,
    changes: &[PreferenceChange],
) -> AppResult<Vec<Preference>> {
    let mut named = HashSet::new();
    for change in changes {
        if !named.insert(change.kind) {
            return Err(AppError::invalid(
                "preferences",
                format!("names {} more than once", change.kind.as_str()),
            ));
        }
        if change.in_app == Some(false) && change.kind.in_app_required() {
            return Err(AppError::invalid(
                "preferences",
                format!(
                    "{} notifications are always shown in the app",
                    change.kind.as_str()
                ),
            ));
        }
    }
    let txn = crate::infra::db::begin(&state.db).await?;
    let current = preferences_of(&txn, user_id).await?;
    for change in changes {
        let Some(now) = current.iter().find(|p| p.kind == change.kind) else {
            continue;
        };
        save(
            &txn,
            user_id,
            change.kind,
            change.in_app.unwrap_or(now.in_app),
            change.email.unwrap_or(now.email),
        )
        .await?;
    }
    let updated = preferences_of(&txn, user_id).await?;
    txn.commit().await?;
    Ok(updated)
}

async fn save(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    kind: NotificationKind,
    in_app: bool,
    email: bool,
) -> AppResult<()> {
    preferences::Entity::insert(preferences::ActiveModel {
        user_id: Set(user_id),
        kind: Set(kind.as_str().to_owned()),
        in_app: Set(in_app),
        email: Set(email),
        updated_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([preferences::Column::UserId, preferences::Column::Kind])
            .update_columns([
                preferences::Column::InApp,
                preferences::Column::Email,
                preferences::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// Turns one kind's email off for a user (the unsubscribe link); `false` when the user is gone.
///
/// # Errors
/// The database fails.
pub async fn unsubscribe(
    state: &AppState,
    user_id: Uuid,
    kind: NotificationKind,
) -> AppResult<bool> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let exists = users::Entity::find_by_id(user_id).count(&txn).await? > 0;
    if !exists {
        return Ok(false);
    }
    let current = preferences_of(&txn, user_id).await?;
    let in_app = current
        .iter()
        .find(|p| p.kind == kind)
        .is_none_or(|p| p.in_app);
    save(&txn, user_id, kind, in_app, false).await?;
    txn.commit().await?;
    Ok(true)
}

/// Whether the user's preference mails `kind` now (checked again when the mail is sent).
///
/// # Errors
/// The database fails.
pub async fn mails(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    kind: NotificationKind,
) -> AppResult<bool> {
    Ok(chosen_preferences(db, &[user_id], kind)
        .await?
        .get(&user_id)
        .map_or(kind.defaults().email, |(_, email)| *email))
}
