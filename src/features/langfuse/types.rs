use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use super::entity::{checks, settings};
use super::probe::{CheckStatus, Checked};
use super::service::mask;
use crate::identity::Stage;

/// Whether the monitor can reach a setting's Langfuse.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "LangfuseConnectionStatus")]
pub enum ConnectionStatus {
    /// Not checked by the monitor yet (or disabled since).
    Unknown,
    Up,
    /// `LANGFUSE_ALERT_AFTER` scheduled checks in a row failed.
    Down,
}

impl ConnectionStatus {
    pub fn parse(text: &str) -> Self {
        match text {
            "UP" => Self::Up,
            "DOWN" => Self::Down,
            _ => Self::Unknown,
        }
    }
}

/// One environment's Langfuse settings. The secret key is write-only: reads show it masked.
#[derive(SimpleObject)]
pub struct LangfuseSettings {
    pub id: ID,
    pub environment: Stage,
    pub host: String,
    pub public_key: String,
    /// Masked: `sk-lf-…abcd`.
    pub secret_key: String,
    pub enabled: bool,
    pub sample_rate: f64,
    pub release: Option<String>,
    pub tags: Vec<String>,
    pub status: ConnectionStatus,
    pub consecutive_failures: i32,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<settings::Model> for LangfuseSettings {
    fn from(m: settings::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            environment: Stage::parse(&m.environment).unwrap_or(Stage::Development),
            host: m.host,
            public_key: m.public_key,
            secret_key: mask(&m.secret_last4),
            enabled: m.enabled,
            sample_rate: m.sample_rate,
            release: m.release,
            tags: serde_json::from_str(&m.tags).unwrap_or_default(),
            status: ConnectionStatus::parse(&m.status),
            consecutive_failures: m.consecutive_failures,
            last_checked_at: m.last_checked_at,
            status_changed_at: m.status_changed_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(InputObject)]
pub struct LangfuseSettingsInput {
    pub environment: Stage,
    /// Langfuse Cloud EU (`https://cloud.langfuse.com`) when omitted; US is
    /// `https://us.cloud.langfuse.com`; self-hosted allowed (https).
    pub host: Option<String>,
    /// `pk-lf-…`
    pub public_key: String,
    /// `sk-lf-…`; required for new settings, kept when omitted on an update. Never returned.
    pub secret_key: Option<String>,
    #[graphql(default = true)]
    pub enabled: bool,
    /// 0 to 1.
    #[graphql(default = 1.0)]
    pub sample_rate: f64,
    pub release: Option<String>,
    #[graphql(default)]
    pub tags: Vec<String>,
}

#[derive(InputObject)]
pub struct LangfuseCredentialsInput {
    pub host: Option<String>,
    pub public_key: String,
    pub secret_key: String,
}

/// What a connection check found.
#[derive(SimpleObject)]
pub struct LangfuseCheckResult {
    pub status: CheckStatus,
    /// The status of Langfuse's last answer, when there was one.
    pub http_status: Option<i32>,
    pub latency_ms: u64,
    pub project_name: Option<String>,
    pub langfuse_version: Option<String>,
    /// What happened, and what to do about it.
    pub message: String,
    /// With `RATE_LIMITED`: Langfuse's `Retry-After`.
    pub retry_after_seconds: Option<u64>,
    pub checked_at: DateTime<Utc>,
}

impl From<Checked> for LangfuseCheckResult {
    fn from(c: Checked) -> Self {
        Self {
            status: c.status,
            http_status: c.http_status.map(i32::from),
            latency_ms: c.latency_ms,
            project_name: c.project_name,
            langfuse_version: c.langfuse_version,
            message: c.message,
            retry_after_seconds: c.retry_after_seconds,
            checked_at: c.checked_at,
        }
    }
}

/// One recorded check.
#[derive(SimpleObject)]
pub struct LangfuseCheck {
    pub status: CheckStatus,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i64>,
    pub message: String,
    /// Run by the monitor (else a test from the API).
    pub scheduled: bool,
    pub checked_at: DateTime<Utc>,
}

impl From<checks::Model> for LangfuseCheck {
    fn from(m: checks::Model) -> Self {
        Self {
            status: CheckStatus::parse(&m.status).unwrap_or(CheckStatus::InvalidResponse),
            http_status: m.http_status,
            latency_ms: m.latency_ms,
            message: m.message,
            scheduled: m.scheduled,
            checked_at: m.checked_at,
        }
    }
}

/// One environment's connection status with its recent checks, newest first.
#[derive(SimpleObject)]
pub struct LangfuseEnvironmentStatus {
    pub environment: Stage,
    pub enabled: bool,
    pub status: ConnectionStatus,
    pub consecutive_failures: i32,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub history: Vec<LangfuseCheck>,
}

/// A setting turned `DOWN` or back `UP`.
#[derive(SimpleObject, Clone)]
pub struct LangfuseStatusChange {
    pub environment: Stage,
    pub status: ConnectionStatus,
    pub previous_status: ConnectionStatus,
    pub message: String,
    pub changed_at: DateTime<Utc>,
}
