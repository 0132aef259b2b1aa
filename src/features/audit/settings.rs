//! The audit trail's settings: `AUDIT_RETENTION_DAYS`, `AUDIT_RETENTION_INTERVAL`.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Environment, Reader, Section};
use crate::infra::scheduler::Every;

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Entries older than this many days are removed; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// When retention runs: an interval (`1h`) or a cron expression (`0 30 3 * * *`).
    pub retention_interval: Every,
}

fn read(r: &mut Reader<'_>, _environment: Environment) -> Arc<dyn Any + Send + Sync> {
    let retention_days = if r.is_set("AUDIT_RETENTION_DAYS") {
        Some(r.number("AUDIT_RETENTION_DAYS", 365u32, 1, 36_500))
    } else {
        r.record("AUDIT_RETENTION_DAYS", "(unset: keep everything)", false);
        None
    };
    Arc::new(AuditSettings {
        retention_days,
        retention_interval: schedule(r, "AUDIT_RETENTION_INTERVAL", "1h"),
    })
}

/// A schedule setting: a duration or a cron expression.
pub fn schedule(r: &mut Reader<'_>, name: &str, default: &str) -> Every {
    let text = r.string(name, default);
    match Every::parse(&text) {
        Ok(every) => every,
        Err(message) => {
            r.fail(name, message);
            Every::Interval(Duration::from_secs(3600))
        }
    }
}

pub const SECTION: Section = Section {
    name: "audit",
    read,
};
