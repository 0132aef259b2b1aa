use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::features::users::types::User;

#[derive(InputObject, Default)]
pub struct UserFilter {
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_banned: Option<bool>,
    pub role_name: Option<String>,
    /// Case-insensitive substring of email, username or display name.
    pub search: Option<String>,
    /// Inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum UserOrderField {
    CreatedAt,
    Email,
    LastLoginAt,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(InputObject)]
pub struct UserOrder {
    pub field: UserOrderField,
    #[graphql(default_with = "SortDirection::Desc")]
    pub direction: SortDirection,
}

/// One page of users. (Cached per admin with the `User` tag: any change to any user, or a new
/// one, drops it.)
#[derive(SimpleObject)]
#[graphql(cache_control(max_age = 60, private))]
pub struct UserPage {
    pub items: Vec<User>,
    pub total_count: u64,
    pub limit: i32,
    pub offset: i32,
}

/// What a bulk role change did.
#[derive(SimpleObject)]
pub struct BulkRoleResult {
    /// Users whose roles changed.
    pub updated: i32,
    /// Users who already had (or already lacked) the role.
    pub unchanged: i32,
    /// Ids that match no user.
    pub not_found: Vec<ID>,
}

#[derive(SimpleObject)]
pub struct RoleDetails {
    pub id: ID,
    pub name: String,
    pub description: Option<String>,
    /// Built in: cannot be deleted.
    pub is_system: bool,
    pub permissions: Vec<String>,
    pub user_count: u64,
}

#[derive(SimpleObject)]
pub struct UserStats {
    pub total: u64,
    pub active: u64,
    pub verified: u64,
    pub banned: u64,
    pub new_last_30_days: u64,
}

#[derive(SimpleObject)]
pub struct RoleCount {
    pub role: String,
    pub users: u64,
}

#[derive(SimpleObject)]
pub struct JobStats {
    pub pending: u64,
    pub running: u64,
    /// Jobs that failed for good.
    pub dead: u64,
}

#[derive(SimpleObject)]
pub struct SystemStats {
    pub users: UserStats,
    pub role_distribution: Vec<RoleCount>,
    pub audit_entries_last_24_hours: u64,
    pub organizations: u64,
    /// API keys neither revoked nor expired.
    pub active_api_keys: u64,
    pub jobs: JobStats,
    /// `sqlite` or `postgres`.
    pub database_backend: String,
    pub version: String,
    pub uptime_seconds: u64,
}

/// Where a background job is.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Done,
    /// Failed `JOB_MAX_ATTEMPTS` times: kept for `JOB_DEAD_RETENTION`, can be retried.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => crate::infra::jobs::PENDING,
            Self::Running => crate::infra::jobs::RUNNING,
            Self::Done => crate::infra::jobs::DONE,
            Self::Dead => crate::infra::jobs::DEAD,
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            crate::infra::jobs::RUNNING => Self::Running,
            crate::infra::jobs::DONE => Self::Done,
            crate::infra::jobs::DEAD => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// A background job as operators see it: never its payload (it can hold personal data).
#[derive(SimpleObject)]
pub struct Job {
    pub id: ID,
    pub kind: String,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    /// Why the last attempt failed (handlers never put secrets in it).
    pub last_error: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<crate::entities::jobs::Model> for Job {
    fn from(m: crate::entities::jobs::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            kind: m.kind,
            state: JobState::parse(&m.state),
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            run_at: m.run_at,
            last_error: m.last_error,
            request_id: m.request_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub total_count: u64,
    pub limit: u64,
    pub offset: u64,
}
