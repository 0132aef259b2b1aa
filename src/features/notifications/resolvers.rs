use std::collections::HashSet;

use async_graphql::connection::PageInfo;
use async_graphql::{Context, ID, Object, Result, Subscription};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::NOTIFICATIONS_BROADCAST;
use super::broadcast::{self, Audience};
use super::hub::{Hub, UserEvent};
use super::service::{self, Filter, PreferenceChange};
use super::types::{
    AnnouncementReceipt, BroadcastAnnouncementInput, Notification, NotificationConnection,
    NotificationEdge, NotificationFilter, NotificationPreference, NotificationPreferenceInput,
    SessionEvent, parse_cursor,
};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, RequirePermission, SocketSession};

/// Notifications a replay reads from the database at a time.
const REPLAY_PAGE: u64 = 100;

/// Ids of the viewer's notifications; one that is not an id cannot be theirs (`NOT_FOUND`).
fn notification_ids(ids: &[ID]) -> Result<Vec<Uuid>, AppError> {
    ids.iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|_| AppError::NotFound("no such notification".into()))
        })
        .collect()
}

#[derive(Default)]
pub struct NotificationsQuery;

#[Object]
impl NotificationsQuery {
    /// The viewer's notifications, newest first. `after` is a cursor from an earlier page;
    /// costs `first` × the selection per notification.
    #[graphql(complexity = "(first.max(1) as usize).saturating_mul(child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<NotificationFilter>,
    ) -> Result<NotificationConnection> {
        let user = ctx.user()?;
        let first = u64::try_from(first)
            .map_err(|_| AppError::invalid("first", "must be from 1 to 100"))
            .gql()?;
        let after = after.map(|c| parse_cursor("after", &c)).transpose().gql()?;
        let filter: Filter = filter.unwrap_or_default().into();
        let (rows, more) = service::page(&ctx.state()?.db, user.id, &filter, first, after)
            .await
            .gql()?;
        let nodes: Vec<Notification> = rows.into_iter().map(Notification::from).collect();
        let page_info = PageInfo {
            has_previous_page: after.is_some(),
            has_next_page: more,
            start_cursor: nodes.first().map(|n| n.cursor.clone()),
            end_cursor: nodes.last().map(|n| n.cursor.clone()),
        };
        Ok(NotificationConnection {
            edges: nodes
                .iter()
                .map(|n| NotificationEdge {
                    cursor: n.cursor.clone(),
                    node: n.clone(),
                })
                .collect(),
            nodes,
            page_info,
            user_id: user.id,
            filter,
        })
    }

    /// How many of the viewer's notifications are unread.
    async fn unread_notification_count(&self, ctx: &Context<'_>) -> Result<u64> {
        let user = ctx.user()?;
        service::unread_count(&ctx.state()?.db, user.id).await.gql()
    }

    /// The viewer's choice for every kind (the kind's defaults where they chose nothing).
    async fn notification_preferences(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<NotificationPreference>> {
        let user = ctx.user()?;
        Ok(service::preferences_of(&ctx.state()?.db, user.id)
            .await
            .gql()?
            .into_iter()
            .map(NotificationPreference::from)
            .collect())
    }
}

#[derive(Default)]
pub struct NotificationsMutation;

#[Object]
impl NotificationsMutation {
    /// Marks the viewer's notifications read (1–100 ids). Any id that is not the viewer's makes
    /// it `NOT_FOUND`, and nothing changes.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> Result<Vec<Notification>> {
        let user = ctx.user()?;
        let ids = notification_ids(&ids).gql()?;
        let rows = service::mark(ctx.state()?, user.id, &ids, true)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Notification::from).collect())
    }

    /// Marks the viewer's notifications unread again; the same rules as `markNotificationsRead`.
    async fn mark_notifications_unread(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> Result<Vec<Notification>> {
        let user = ctx.user()?;
        let ids = notification_ids(&ids).gql()?;
        let rows = service::mark(ctx.state()?, user.id, &ids, false)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Notification::from).collect())
    }

    /// Marks every unread notification of the viewer read; returns how many changed.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> Result<u64> {
        let user = ctx.user()?;
        service::mark_all_read(ctx.state()?, user.id).await.gql()
    }

    /// Deletes the viewer's notifications (1–100 ids); returns their ids. Any id that is not the
    /// viewer's makes it `NOT_FOUND`, and nothing is deleted.
    async fn delete_notifications(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<ID>> {
        let user = ctx.user()?;
        let ids = notification_ids(&ids).gql()?;
        let deleted = service::delete(ctx.state()?, user.id, &ids).await.gql()?;
        Ok(deleted.into_iter().map(|id| ID(id.to_string())).collect())
    }

    /// Changes the viewer's preferences; returns every kind's.
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        preferences: Vec<NotificationPreferenceInput>,
    ) -> Result<Vec<NotificationPreference>> {
        let user = ctx.user()?;
        if preferences.len() > super::kinds::NotificationKind::ALL.len() {
            return Err(AppError::invalid(
                "preferences",
                "names a kind more than once",
            ))
            .gql();
        }
        let changes: Vec<PreferenceChange> = preferences
            .into_iter()
            .map(|p| PreferenceChange {
                kind: p.kind,
                in_app: p.in_app,
                email: p.email,
            })
            .collect();
        Ok(service::update_preferences(ctx.state()?, user.id, &changes)
            .await
            .gql()?
            .into_iter()
            .map(NotificationPreference::from)
            .collect())
    }

    /// Sends an announcement to every active user, to the holders of some roles, or to chosen
    /// users: in the app, and by email when `email` is set and a recipient's preference allows.
    /// Queued and fanned out in batches by a background job; audited.
    #[graphql(guard = "RequirePermission(NOTIFICATIONS_BROADCAST)")]
    async fn broadcast_announcement(
        &self,
        ctx: &Context<'_>,
        input: BroadcastAnnouncementInput,
    ) -> Result<AnnouncementReceipt> {
        let audience = input.audience;
        let chosen = [
            audience.all == Some(true),
            audience.roles.is_some(),
            audience.user_ids.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(AppError::invalid(
                "audience",
                "choose exactly one of all, roles or userIds",
            ))
            .gql();
        }
        let audience = if let Some(roles) = audience.roles {
            Audience::Roles(roles)
        } else if let Some(ids) = audience.user_ids {
            let ids: Result<Vec<Uuid>, _> = ids.iter().map(|id| Uuid::parse_str(id)).collect();
            Audience::Users(
                ids.map_err(|_| {
                    AppError::invalid("audience", "userIds holds a value that is not a user id")
                })
                .gql()?,
            )
        } else {
            Audience::All
        };
        let id = broadcast::start(
            ctx.state()?,
            &ctx.actor(),
            &input.title,
            &input.body,
            audience,
            input.email,
        )
        .await
        .gql()?;
        Ok(AnnouncementReceipt {
            announcement_id: ID(id.to_string()),
        })
    }
}

#[derive(Default)]
pub struct NotificationsSubscription;

#[Subscription]
impl NotificationsSubscription {
    /// The viewer's new notifications as they are created, on whichever instance. With
    /// `after` (the cursor of the last one received), first every notification created since,
    /// oldest first, then live ones: none missed across the seam, none twice.
    async fn notification_added(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<Notification>> + use<>> {
        let user_id = ctx.user()?.id;
        let session = SocketSession::of(ctx)?;
        let after = after.map(|c| parse_cursor("after", &c)).transpose().gql()?;
        let state = ctx.state()?.clone();
        // Live events are held from here while the backlog is read.
        let mut receiver = state.local::<Hub>().subscribe(user_id);
        Ok(async_stream::stream! {
            let mut replayed = HashSet::new();
            if let Some(mut last) = after {
                loop {
                    // Boxed: the stream lives as long as the subscription, and would otherwise
                    // keep room for this query's state while it waits for events.
                    let rows = match Box::pin(service::since(&state.db, user_id, last, REPLAY_PAGE)).await {
                        Ok(rows) => rows,
                        Err(error) => {
                            yield Err(error).gql();
                            return;
                        }
                    };
                    let full = rows.len() as u64 == REPLAY_PAGE;
                    for row in rows {
                        last = row.id;
                        replayed.insert(row.id);
                        if !session.deliverable().await {
                            return;
                        }
                        yield Ok(Notification::from(row));
                    }
                    if !full {
                        break;
                    }
                }
            }
            loop {
                match receiver.events.recv().await {
                    Ok(UserEvent::Added(record)) => {
                        if replayed.remove(&record.id) {
                            continue;
                        }
                        if !session.deliverable().await {
                            return;
                        }
                        yield Ok(Notification::from(&*record));
                    }
                    Ok(UserEvent::UnreadCount(_)) => {}
                    Err(RecvError::Lagged(_)) => {
                        session.drop_slow_consumer();
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// The viewer's unread count: now, then after every change.
    async fn unread_count_changed(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Result<u64>> + use<>> {
        let user_id = ctx.user()?.id;
        let session = SocketSession::of(ctx)?;
        let state = ctx.state()?.clone();
        let mut receiver = state.local::<Hub>().subscribe(user_id);
        Ok(async_stream::stream! {
            match Box::pin(service::unread_count(&state.db, user_id)).await {
                Ok(count) => yield Ok(count),
                Err(error) => {
                    yield Err(error).gql();
                    return;
                }
            }
            loop {
                match receiver.events.recv().await {
                    Ok(UserEvent::UnreadCount(count)) => {
                        if !session.deliverable().await {
                            return;
                        }
                        yield Ok(count);
                    }
                    Ok(UserEvent::Added(_)) => {}
                    Err(RecvError::Lagged(_)) => {
                        session.drop_slow_consumer();
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// One event when the socket's session ends — signed out, revoked, password changed,
    /// banned, deleted, token expired — delivered just before the socket closes with 4403.
    async fn session_events(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = SessionEvent> + use<>> {
        ctx.user()?;
        let listener = SocketSession::of(ctx)?.listen();
        // The listener lives until the stream is polled after its event: the socket waits for
        // it, so the event is on its way before the close frame.
        Ok(futures_util::stream::unfold(
            (listener, false),
            |(listener, sent)| async move {
                if sent {
                    return None;
                }
                let reason = listener.ended().await;
                let event = SessionEvent {
                    reason,
                    message: reason.describe().to_owned(),
                    at: chrono::Utc::now(),
                };
                Some((event, (listener, true)))
            },
        ))
    }
}
