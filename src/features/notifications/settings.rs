//! The notifications' settings: `NOTIFICATIONS_BROADCAST_BATCH`, `NOTIFICATIONS_RETENTION_DAYS`.

use std::any::Any;
use std::sync::Arc;

use crate::config::{Environment, Reader, Section};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Recipients an announcement's job notifies per run (one transaction each).
    pub broadcast_batch: u64,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            broadcast_batch: 500,
        }
    }
}

impl NotificationSettings {
    /// The running application's (the defaults when the section was not read).
    pub fn of(state: &AppState) -> Self {
        state
            .settings
            .section::<Self>()
            .cloned()
            .unwrap_or_default()
    }
}

fn read(r: &mut Reader<'_>, _environment: Environment) -> Arc<dyn Any + Send + Sync> {
    Arc::new(NotificationSettings {
        broadcast_batch: r.number("NOTIFICATIONS_BROADCAST_BATCH", 500u64, 1, 5_000),
    })
}

pub const SECTION: Section = Section {
    name: "notifications",
    read,
};
