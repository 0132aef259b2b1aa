use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::entities::api_keys;
use crate::identity::Stage;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An organization's API key as it can be seen after its creation: never the key itself.
#[derive(SimpleObject)]
pub struct ApiKey {
    pub id: ID,
    pub name: String,
    /// The key's first characters (`mpk_prod_AbCd1234`), to tell keys apart.
    pub prefix: String,
    pub environment: Stage,
    /// Organization permissions: what the key may do.
    pub scopes: Vec<String>,
    pub status: ApiKeyStatus,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<ID>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated within a minute of use, not on every request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// After a rotation: when the replaced secret stops working.
    pub previous_key_expires_at: Option<DateTime<Utc>>,
}

impl From<api_keys::Model> for ApiKey {
    fn from(m: api_keys::Model) -> Self {
        let now = Utc::now();
        let status = if m.revoked_at.is_some() {
            ApiKeyStatus::Revoked
        } else if m.expires_at.is_some_and(|at| at <= now) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        };
        Self {
            id: ID(m.id.to_string()),
            name: m.name,
            prefix: m.prefix,
            environment: Stage::parse(&m.environment).unwrap_or(Stage::Development),
            scopes: serde_json::from_str(&m.scopes).unwrap_or_default(),
            status,
            created_at: m.created_at,
            created_by: m.created_by.map(|id| ID(id.to_string())),
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            last_used_at: m.last_used_at,
            previous_key_expires_at: m
                .previous_expires_at
                .filter(|at| *at > now && m.revoked_at.is_none()),
        }
    }
}

/// A key just created or rotated. `key` is shown this once: store it now.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    pub key: String,
    pub api_key: ApiKey,
}

#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// 1–100 characters, one line.
    pub name: String,
    pub environment: Stage,
    /// Organization permissions (`organizationPermissions`) the creator holds here.
    pub scopes: Vec<String>,
    /// Never expires when omitted; at most 5 years ahead.
    pub expires_at: Option<DateTime<Utc>>,
}
