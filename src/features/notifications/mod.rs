//! Notifications, in the app and by email, and the viewer's real-time subscriptions
//! (`notificationAdded`, `unreadCountChanged`, `sessionEvents`). docs/notifications.md,
//! docs/subscriptions.md.
//!
//! Other features notify with [`notify`] inside the transaction of their change, then
//! [`Delivery::publish`] after the commit.

mod broadcast;
pub mod entity;
mod hub;
pub mod kinds;
mod mail;
mod resolvers;
mod routes;
pub mod service;
pub mod settings;
mod types;

pub use kinds::NotificationKind;
pub use resolvers::{NotificationsMutation, NotificationsQuery, NotificationsSubscription};
pub use service::{Content, Delivery, notify};

use crate::feature::{Feature, Job, Task};
use crate::identity::Permission;

/// Admins hold it (they hold every permission); grant it to a role to let its holders announce.
pub const NOTIFICATIONS_BROADCAST: Permission = Permission::new(
    "notifications:broadcast",
    "Send announcements to every user, to roles or to chosen users",
);

pub const FEATURE: Feature = Feature {
    permissions: &[NOTIFICATIONS_BROADCAST],
    jobs: &[
        Job {
            kind: mail::NOTIFICATION_MAIL,
            handler: mail::handler,
        },
        Job {
            kind: broadcast::BROADCAST,
            handler: broadcast::handler,
        },
    ],
    tasks: &[Task {
        name: "notifications-fanout",
        run: hub::listen_task,
    }],
    routes: Some(routes::routes),
    settings: Some(settings::SECTION),
    ..Feature::new("notifications")
};
