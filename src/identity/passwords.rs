//! Password hashing (argon2id) and policy.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

use crate::error::{AppError, AppResult};

pub const MAX_LENGTH: usize = 128;

/// Verified against when no account matches, so an unknown email costs as much as a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_blocking("not-a-real-password").ok());

fn hash_blocking(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Hashes off the async runtime (argon2 is deliberately slow).
///
/// # Errors
/// The hasher fails (internal).
pub async fn hash(password: &str) -> AppResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("password hashing failed: {e}")))
}

/// Checks `password` against `hash`, or against a dummy hash when there is none, taking
/// comparable time either way.
pub async fn verify(password: &str, hash: Option<&str>) -> bool {
    let password = password.to_owned();
    let (hash, real) = match hash {
        Some(hash) => (hash.to_owned(), true),
        None => (DUMMY_HASH.clone().unwrap_or_default(), false),
    };
    tokio::task::spawn_blocking(move || verify_blocking(&password, &hash) && real)
        .await
        .unwrap_or(false)
}

/// The policy: length bounds, and not the email (or its local part).
pub fn policy_violation(password: &str, email: &str, min_length: usize) -> Option<String> {
    let length = password.chars().count();
    if length < min_length {
        return Some(format!("must be at least {min_length} characters"));
    }
    if length > MAX_LENGTH {
        return Some(format!("must be at most {MAX_LENGTH} characters"));
    }
    let lower = password.to_lowercase();
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lower == email || (local.len() >= 4 && lower.contains(local)) {
        return Some("must not contain your email address".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hash = hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&hash)).await);
        assert!(!verify("wrong", Some(&hash)).await);
        assert!(!verify("not-a-real-password", None).await);
    }

    #[test]
    fn the_policy_refuses_short_long_and_email_like_passwords() {
        assert!(policy_violation("short", "a@b.c", 10).is_some());
        assert!(policy_violation(&"x".repeat(129), "a@b.c", 10).is_some());
        assert!(policy_violation("alice.smith-2024", "alice.smith@example.com", 10).is_some());
        assert!(policy_violation("a long and fine passphrase", "alice@example.com", 10).is_none());
    }
}
