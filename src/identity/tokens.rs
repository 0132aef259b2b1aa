//! Access tokens (HS256 JWT with pinned algorithm, issuer, audience and the user's session epoch)
//! and opaque refresh tokens (random, stored only as SHA-256).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::config::Settings;
use crate::error::{AppError, AppResult};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    /// The session (refresh-token family).
    pub sid: Uuid,
    /// The user's session epoch when issued; a bump invalidates the token.
    pub epoch: i64,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// # Errors
/// Signing fails (internal).
pub fn issue_access_token(
    settings: &Settings,
    user_id: Uuid,
    session_id: Uuid,
    epoch: i64,
) -> AppResult<(String, DateTime<Utc>)> {
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(settings.auth.access_token_ttl)
        .map_err(|e| AppError::Internal(e.into()))?;
    let expires_at = now + ttl;
    let claims = Claims {
        sub: user_id,
        sid: session_id,
        epoch,
        iss: settings.auth.jwt_issuer.clone(),
        aud: settings.auth.jwt_audience.clone(),
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
        jti: Uuid::now_v7(),
    };
    let key = EncodingKey::from_secret(settings.secrets.jwt_secret.expose_secret().as_bytes());
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok((token, expires_at))
}

/// Checks signature (HS256 only: `none` and other algorithms are refused), expiry, issuer and
/// audience.
///
/// # Errors
/// `UNAUTHENTICATED` for any invalid token.
pub fn verify_access_token(settings: &Settings, token: &str) -> AppResult<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[&settings.auth.jwt_issuer]);
    validation.set_audience(&[&settings.auth.jwt_audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 5;
    let key = DecodingKey::from_secret(settings.secrets.jwt_secret.expose_secret().as_bytes());
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| AppError::Unauthenticated)
}

/// A new opaque refresh token and the hash to store.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// Whether `token` could be one of our opaque tokens (URL-safe base64, bounded): anything else
/// is refused before it reaches the database.
pub fn is_token_shaped(token: &str) -> bool {
    token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
