//! Identity's settings (`ACCESS_TOKEN_TTL`, `JWT_*`, `PASSWORD_MIN_LENGTH`, `LOGIN_*`,
//! `AUTH_MAIL_LIMIT`) and the secrets (`JWT_SECRET`, `SECRETS_KEY`).

use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::reader::{Quota, Reader};

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `iss` and `aud` of access tokens; both are checked on every request.
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub password_min_length: usize,
    /// Attempts per account (and ten times that per client IP) within the window before
    /// further attempts are refused with `RATE_LIMITED`.
    pub login_max_failures: u64,
    pub login_failure_window: Duration,
    /// Mails a stranger can trigger (verification, reset, "already registered"), per kind and
    /// recipient.
    pub mail_limit: Quota,
}

impl AuthSettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        Self {
            access_token_ttl: r.duration("ACCESS_TOKEN_TTL", Duration::from_secs(15 * 60)),
            refresh_token_ttl: r.duration("REFRESH_TOKEN_TTL", Duration::from_secs(30 * 24 * 3600)),
            jwt_issuer: r.string("JWT_ISSUER", "multipult"),
            jwt_audience: r.string("JWT_AUDIENCE", "multipult"),
            password_min_length: r.number("PASSWORD_MIN_LENGTH", 10usize, 8, 128),
            login_max_failures: r.number("LOGIN_MAX_FAILURES", 5u64, 1, 1000),
            login_failure_window: r.duration("LOGIN_FAILURE_WINDOW", Duration::from_secs(15 * 60)),
            mail_limit: r.quota("AUTH_MAIL_LIMIT", "3/1h"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Secrets {
    /// HMAC key for access tokens (≥ 32 bytes).
    pub jwt_secret: SecretString,
    /// 32-byte AES-256-GCM key for secrets at rest, as given (base64 or hex).
    pub secrets_key: SecretString,
    /// Keys that sealed values before a rotation: they still open them (and still match API
    /// keys and fingerprints made with them) until `multipult secrets rotate` re-sealed
    /// everything.
    pub previous_secrets_keys: Vec<SecretString>,
}

impl Secrets {
    /// Missing secrets stay empty here outside production; `Settings::ensure_secrets` fills them.
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let jwt_secret = r.secret("JWT_SECRET");
        match &jwt_secret {
            Some(secret) if secret.expose_secret().len() < 32 => {
                r.fail("JWT_SECRET", "must be at least 32 bytes long");
            }
            None if production => r.fail("JWT_SECRET", "is required in production"),
            _ => {}
        }
        let secrets_key = r.secret("SECRETS_KEY");
        match &secrets_key {
            Some(key) if decode_secrets_key(key.expose_secret()).is_none() => r.fail(
                "SECRETS_KEY",
                "must be 32 bytes encoded as base64 or 64 hex digits (openssl rand -base64 32)",
            ),
            None if production => r.fail("SECRETS_KEY", "is required in production"),
            _ => {}
        }
        let mut previous_secrets_keys = Vec::new();
        if let Some(list) = r.secret("SECRETS_KEY_PREVIOUS") {
            for key in list.expose_secret().split(',').map(str::trim) {
                if key.is_empty() {
                    continue;
                }
                if decode_secrets_key(key).is_none() {
                    r.fail(
                        "SECRETS_KEY_PREVIOUS",
                        "must be a comma-separated list of 32-byte keys (base64 or hex)",
                    );
                }
                previous_secrets_keys.push(SecretString::from(key.to_owned()));
            }
        }
        Self {
            jwt_secret: jwt_secret.unwrap_or_else(|| SecretString::from(String::new())),
            secrets_key: secrets_key.unwrap_or_else(|| SecretString::from(String::new())),
            previous_secrets_keys,
        }
    }
}

/// Decodes a 32-byte key given as base64 (standard or URL-safe) or as 64 hex digits.
pub fn decode_secrets_key(value: &str) -> Option<[u8; 32]> {
    let value = value.trim();
    let bytes = if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(value).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .ok()?
    };
    bytes.try_into().ok()
}
