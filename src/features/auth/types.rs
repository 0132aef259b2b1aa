use async_graphql::{ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::features::users::types::User;
use crate::identity::sessions::{SessionInfo, Tokens};

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    pub password: String,
    /// 3–32 characters of a-z, 0-9 and _.
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// The same answer whether or not the email was already registered.
#[derive(SimpleObject)]
pub struct RegisterPayload {
    pub message: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    /// The authenticator's current code, or a backup code, when two-factor is on.
    pub two_factor_code: Option<String>,
}

/// Scan `otpauthUri` as a QR code (or type `secret`), then confirm with a code.
#[derive(SimpleObject)]
pub struct TwoFactorSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

#[derive(SimpleObject)]
pub struct TwoFactorConfirmation {
    /// Ten single-use codes for when the authenticator is lost. Shown once.
    pub backup_codes: Vec<String>,
}

/// A signed-in session. Send `accessToken` as `Authorization: Bearer …`; exchange `refreshToken`
/// (once) for a new pair with `refreshSession` before `accessTokenExpiresAt`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    pub session_id: ID,
    pub user: User,
}

impl From<Tokens> for AuthPayload {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access_token,
            access_token_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token,
            refresh_token_expires_at: tokens.refresh_expires_at,
            session_id: ID(tokens.session_id.to_string()),
            user: User(tokens.user),
        }
    }
}

/// One signed-in device or client of the caller.
#[derive(SimpleObject)]
pub struct Session {
    pub id: ID,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// The session of this request.
    pub current: bool,
}

impl From<SessionInfo> for Session {
    fn from(s: SessionInfo) -> Self {
        Self {
            id: ID(s.id.to_string()),
            user_agent: s.user_agent,
            ip: s.ip,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            current: s.current,
        }
    }
}
