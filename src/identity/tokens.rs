//! Access tokens (HS256 JWT with pinned algorithm, issuer, audience and the user's session epoch)
//! and opaque refresh tokens (random, stored only as SHA-256).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Seconds a token is still accepted after its `exp`, for clocks a little apart.
const LEEWAY: u64 = 5;

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
    validation.leeway = LEEWAY;
    let key = DecodingKey::from_secret(settings.secrets.jwt_secret.expose_secret().as_bytes());
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| AppError::Unauthenticated)
}

/// Whether verified `claims` are still within their lifetime at `now` (Unix seconds): the one
/// check of [`verify_access_token`] that depends on the time, the same way (`exp` plus the
/// leeway).
pub fn unexpired(claims: &Claims, now: u64) -> bool {
    u64::try_from(claims.exp).is_ok_and(|exp| exp.saturating_add(LEEWAY) >= now)
}

/// Access tokens that passed [`verify_access_token`], by their exact text, with their claims. A
/// client sends the same token with every request until it expires; seen again, it costs a hash
/// and a comparison instead of base64, JSON and HMAC work, and only its expiry is checked again
/// ([`unexpired`]): the signature, issuer and audience of the same text cannot have changed, and
/// whether the session still stands is decided after this step, on every request.
///
/// One per application instance (`AppState::local`), so what it holds was checked against that
/// instance's secret. Bounded: the [`VerifiedTokens::CAPACITY`] most recently used; a token
/// longer than [`VerifiedTokens::MAX_TEXT`] is verified every time, and one that failed is never
/// kept (a client sending garbage only pays for the full check, as before).
pub struct VerifiedTokens(Mutex<lru::LruCache<u128, Arc<VerifiedToken>>>);

struct VerifiedToken {
    text: Box<str>,
    claims: Arc<Claims>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(Self::CAPACITY).unwrap_or(NonZeroUsize::MIN),
        )))
    }
}

impl VerifiedTokens {
    /// Tokens kept (about 0.5 KB each).
    pub const CAPACITY: usize = 8192;
    /// The longest token kept; ours are about 400 bytes.
    pub const MAX_TEXT: usize = 2048;

    fn key(token: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(token.as_bytes())
    }

    /// The claims of `token`, checked in full the first time, then from the memo while unexpired.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for any invalid or expired token.
    pub fn verify(&self, settings: &Settings, token: &str) -> AppResult<Arc<Claims>> {
        let key = Self::key(token);
        let known = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        // A hash collision is a miss, never another token's claims.
        if let Some(known) = known.filter(|known| *known.text == *token) {
            if unexpired(&known.claims, jsonwebtoken::get_current_timestamp()) {
                return Ok(known.claims.clone());
            }
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop(&key);
            return Err(AppError::Unauthenticated);
        }
        let claims = Arc::new(verify_access_token(settings, token)?);
        if token.len() <= Self::MAX_TEXT {
            let known = Arc::new(VerifiedToken {
                text: token.into(),
                claims: claims.clone(),
            });
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(key, known);
        }
        Ok(claims)
    }

    /// How many tokens are kept (for tests).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::nil(),
            sid: Uuid::nil(),
            epoch: 0,
            iss: "i".into(),
            aud: "a".into(),
            iat: 0,
            exp,
            jti: Uuid::nil(),
        }
    }

    #[test]
    fn expiry_is_exp_plus_the_leeway_like_the_full_check() {
        assert!(unexpired(&claims(100), 100));
        assert!(unexpired(&claims(100), 105));
        assert!(!unexpired(&claims(100), 106));
        assert!(!unexpired(&claims(-1), 0));
    }
}
