use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};

/// Where the process runs; decides defaults and how strict validation is.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl From<crate::config::Environment> for Environment {
    fn from(environment: crate::config::Environment) -> Self {
        match environment {
            crate::config::Environment::Development => Self::Development,
            crate::config::Environment::Test => Self::Test,
            crate::config::Environment::Production => Self::Production,
        }
    }
}

/// The running build and where it runs.
#[derive(SimpleObject)]
pub struct ApiInfo {
    /// Semantic version of the server.
    pub version: String,
    pub environment: Environment,
}

/// One beat of the `heartbeat` subscription.
#[derive(SimpleObject)]
pub struct Heartbeat {
    /// 1 for the first beat, then counting up.
    pub sequence: i32,
    pub at: DateTime<Utc>,
}

/// The caller's cost budget after this operation (GitHub-style points per window).
#[derive(SimpleObject)]
pub struct RateLimitStatus {
    /// Points per window.
    pub limit: u64,
    /// What this operation cost.
    pub cost: u64,
    pub remaining: u64,
    pub reset_at: DateTime<Utc>,
}
