//! Sign-in through external identities: OAuth2 providers and the Telegram Login Widget. An
//! identity is found by provider + subject; a new one is linked to an existing account only when
//! the provider vouches for the email (verified), otherwise a new account is made.

use std::collections::BTreeMap;

use chrono::Utc;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::entities::{linked_accounts, users};
use crate::error::{AppError, AppResult};
use crate::identity::ClientInfo;
use crate::identity::accounts as users_service;
use crate::identity::permissions::USER_ROLE;
use crate::identity::sessions::{self, Tokens};
use crate::state::AppState;

/// What a provider tells about the person signing in.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
}

/// Signs in the user behind an external identity, linking or creating the account.
///
/// # Errors
/// `FORBIDDEN` for a disabled or banned account, `CONFLICT` when an unverified email belongs to
/// an existing account.
#[tracing::instrument(name = "auth.social_sign_in", skip_all, fields(provider = %identity.provider))]
pub async fn sign_in(
    state: &AppState,
    identity: ExternalIdentity,
    client: &ClientInfo,
) -> AppResult<Tokens> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let linked = linked_accounts::Entity::find()
        .filter(linked_accounts::Column::Provider.eq(&identity.provider))
        .filter(linked_accounts::Column::Subject.eq(&identity.subject))
        .one(&txn)
        .await?;
    let user = match linked {
        Some(link) => users_service::find_by_id(&txn, link.user_id)
            .await?
            .ok_or(AppError::Unauthenticated)?,
        None => {
            let email = identity
                .email
                .as_deref()
                .map(users_service::normalize_email);
            let existing = match &email {
                Some(email) => users_service::find_by_email(&txn, email).await?,
                None => None,
            };
            let user = match existing {
                Some(user) if identity.email_verified => user,
                Some(_) => {
                    return Err(AppError::Conflict(
                        "an account with this email exists; sign in to it first".into(),
                    ));
                }
                None => create_user(&txn, &identity, email).await?,
            };
            linked_accounts::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user.id),
                provider: Set(identity.provider.clone()),
                subject: Set(identity.subject.clone()),
                email: Set(identity.email.clone()),
                created_at: Set(Utc::now()),
            }
            .insert(&txn)
            .await?;
            user
        }
    };
    if !user.is_active {
        return Err(AppError::Forbidden("this account is disabled".into()));
    }
    if user.is_banned_at(Utc::now()) {
        return Err(AppError::AccountBanned {
            until: user.banned_until,
        });
    }
    let mut active: users::ActiveModel = user.into();
    active.last_login_at = Set(Some(Utc::now()));
    let user = active.update(&txn).await?;
    let tokens = sessions::start(state, &txn, user, Uuid::now_v7(), client).await?;
    txn.commit().await?;
    // `lastLoginAt` is part of the cached profile.
    crate::identity::profile_touched(state, tokens.user.id).await;
    Ok(tokens)
}

async fn create_user(
    txn: &sea_orm::DatabaseTransaction,
    identity: &ExternalIdentity,
    email: Option<String>,
) -> AppResult<users::Model> {
    // Identities without an email get a placeholder in the reserved .invalid domain.
    let (email, verified) = match email {
        Some(email) => (email, identity.email_verified),
        None => {
            let subject: String = identity
                .subject
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(64)
                .collect();
            (
                format!(
                    "{}-{subject}@{}.invalid",
                    identity.provider, identity.provider
                ),
                false,
            )
        }
    };
    users_service::insert(
        txn,
        users_service::Profile {
            email,
            username: None,
            display_name: identity
                .display_name
                .as_deref()
                .and_then(|n| crate::text::clean_lossy(n, 100)),
            password_hash: None,
            verified,
        },
        &[USER_ROLE],
    )
    .await
}

/// Checks a Telegram Login Widget payload: the HMAC-SHA256 of its fields (sorted `key=value`
/// lines, keyed with SHA-256 of the bot token) and the freshness of `auth_date`.
///
/// # Errors
/// `BAD_REQUEST` when Telegram login is not configured, `UNAUTHENTICATED` for a bad signature or a
/// stale payload.
pub fn verify_telegram(
    state: &AppState,
    data: &BTreeMap<String, serde_json::Value>,
) -> AppResult<ExternalIdentity> {
    let social = super::settings::SocialSettings::of(state);
    let Some(bot_token) = &social.telegram_bot_token else {
        return Err(AppError::BadRequest(
            "Telegram login is not configured".into(),
        ));
    };
    let invalid = || AppError::Unauthenticated;
    let hash = data
        .get("hash")
        .and_then(|h| h.as_str())
        .ok_or_else(invalid)?;
    let expected = hex::decode(hash).map_err(|_| invalid())?;
    let check_string = data
        .iter()
        .filter(|(key, _)| key.as_str() != "hash")
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => format!("{key}={s}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let secret = Sha256::digest(bot_token.expose_secret().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hmac: {e}")))?;
    mac.update(check_string.as_bytes());
    mac.verify_slice(&expected).map_err(|_| invalid())?;

    let auth_date = data
        .get("auth_date")
        .and_then(|d| d.as_i64().or_else(|| d.as_str()?.parse().ok()))
        .ok_or_else(invalid)?;
    let age = Utc::now().timestamp() - auth_date;
    let max_age = i64::try_from(social.telegram_max_age.as_secs()).unwrap_or(i64::MAX);
    if !(-60..=max_age).contains(&age) {
        return Err(invalid());
    }
    let field = |name: &str| data.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let subject = match data.get("id") {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => return Err(invalid()),
    };
    let name = [field("first_name"), field("last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(ExternalIdentity {
        provider: "telegram".into(),
        subject,
        email: None,
        email_verified: false,
        display_name: Some(name)
            .filter(|n| !n.is_empty())
            .or_else(|| field("username")),
    })
}
