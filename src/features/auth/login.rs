//! Signing in with email and password (and a second factor when it is on).
//!
//! Throttling reserves before it verifies: each attempt first counts itself against the account
//! (`LOGIN_MAX_FAILURES`) and the client IP (ten times that) in one atomic store step, and only
//! attempts within the limit are checked at all — so a burst of concurrent guesses cannot all be
//! evaluated before the first failure is recorded. A successful sign-in gives its reservation back.

use chrono::Utc;
use sea_orm::{ActiveModelTrait as _, Set};
use serde_json::json;
use uuid::Uuid;

use super::notices::{self, Notice};
use super::two_factor;
use crate::entities::users;
use crate::error::{AppError, AppResult};
use crate::features::audit::service as audit;
use crate::identity::sessions::{self, Tokens};
use crate::identity::{Actor, ClientInfo, accounts, passwords};
use crate::infra::{Op, Reply};
use crate::state::AppState;

/// The attempt counters one sign-in is counted against, and whether they were.
struct Reservation {
    /// `(key, limit)`: the account first, then the client IP.
    keys: Vec<(String, u64)>,
    counted: bool,
}

impl Reservation {
    fn new(state: &AppState, email: &str, client: &ClientInfo) -> Self {
        let max = state.settings.auth.login_max_failures;
        let mut keys = vec![(format!("auth:fail:account:{email}"), max)];
        if client.network.is_some() {
            keys.push((
                format!("auth:fail:ip:{}", client.address_key()),
                max.saturating_mul(10),
            ));
        }
        Self {
            keys,
            counted: false,
        }
    }

    /// Counts this attempt; refuses it when a counter is over its limit. A store outage lets it
    /// through uncounted (throttling fails open: it must not lock everyone out).
    async fn take(&mut self, state: &AppState) -> AppResult<()> {
        let window = state.settings.auth.login_failure_window;
        let ops: Vec<Op> = self
            .keys
            .iter()
            .map(|(key, _)| Op::Increment {
                key: key.clone(),
                delta: 1,
                ttl: Some(window),
            })
            .collect();
        let replies = match state.stores.kv.batch(&ops).await {
            Ok(replies) => replies,
            Err(error) => {
                error.log("login throttle unavailable");
                return Ok(());
            }
        };
        self.counted = true;
        for ((key, limit), reply) in self.keys.iter().zip(replies) {
            let Reply::Count(count) = reply else { continue };
            if u64::try_from(count).unwrap_or(u64::MAX) > *limit {
                let retry = state
                    .stores
                    .kv
                    .ttl(key)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(window);
                return Err(AppError::RateLimited {
                    retry_after_secs: retry.as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// A successful sign-in: the account's failures are forgiven, and this attempt no longer
    /// counts against the IP.
    async fn give_back(&self, state: &AppState) {
        if !self.counted {
            return;
        }
        let mut keys = self.keys.iter();
        if let Some((account, _)) = keys.next()
            && let Err(error) = state.stores.kv.delete(account).await
        {
            error.log("cannot reset the login throttle");
        }
        for (key, _) in keys {
            if let Err(error) = state.stores.kv.increment(key, -1, None).await {
                error.log("cannot reset the login throttle");
            }
        }
    }
}

/// Signs in with email and password. Unknown email and wrong password answer identically;
/// repeated failures per account and per client IP are refused with `RATE_LIMITED` for a while.
///
/// # Errors
/// `UNAUTHENTICATED` for bad credentials, `FORBIDDEN` for a disabled account, `ACCOUNT_BANNED`,
/// `TWO_FACTOR_REQUIRED`, `RATE_LIMITED`.
#[tracing::instrument(name = "auth.login", skip_all)]
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    two_factor_code: Option<&str>,
    client: &ClientInfo,
    actor: &Actor,
) -> AppResult<Tokens> {
    let result = Box::pin(attempt(
        state,
        email,
        password,
        two_factor_code,
        client,
        actor,
    ))
    .await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(AppError::InvalidCredentials) => "invalid_credentials",
        Err(AppError::TwoFactorRequired) => "two_factor_required",
        Err(AppError::InvalidTwoFactorCode) => "invalid_two_factor_code",
        Err(AppError::AccountBanned { .. }) => "banned",
        Err(AppError::Forbidden(_)) => "disabled",
        Err(AppError::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    state.metrics.record(|| {
        metrics::counter!("auth_logins_total", "method" => "password", "outcome" => outcome)
            .increment(1);
    });
    result
}

async fn attempt(
    state: &AppState,
    email: &str,
    password: &str,
    two_factor_code: Option<&str>,
    client: &ClientInfo,
    actor: &Actor,
) -> AppResult<Tokens> {
    let email = accounts::normalize_email(email);
    let mut reservation = Reservation::new(state, &email, client);
    reservation.take(state).await?;

    let user = if accounts::is_deliverable_email(&email) {
        accounts::find_by_email(&state.db, &email).await?
    } else {
        None
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    if !passwords::verify(password, hash).await {
        audit_failure(state, actor, &email, user.as_ref(), "password").await;
        return Err(AppError::InvalidCredentials);
    }
    let Some(user) = user else {
        return Err(AppError::InvalidCredentials);
    };
    if !user.is_active {
        return Err(AppError::Forbidden("this account is disabled".into()));
    }
    if user.is_banned_at(Utc::now()) {
        return Err(AppError::AccountBanned {
            until: user.banned_until,
        });
    }
    if accounts::two_factor_enabled(&state.db, user.id).await? {
        let Some(code) = two_factor_code.filter(|c| !c.trim().is_empty()) else {
            reservation.give_back(state).await;
            return Err(AppError::TwoFactorRequired);
        };
        if !two_factor::verify_second_factor(state, &user, code).await? {
            audit_failure(state, actor, &email, Some(&user), "two_factor").await;
            return Err(AppError::InvalidTwoFactorCode);
        }
    }
    reservation.give_back(state).await;

    let txn = crate::infra::db::begin(&state.db).await?;
    let new_device = notices::is_new_device(&txn, user.id, client).await?;
    let mut active: users::ActiveModel = user.into();
    active.last_login_at = Set(Some(Utc::now()));
    let user = active.update(&txn).await?;
    let tokens = sessions::start(state, &txn, user, Uuid::now_v7(), client).await?;
    let notice = if new_device {
        let actor = actor.as_user(tokens.user.id, &tokens.user.email);
        Some(
            notices::send(
                state,
                &txn,
                tokens.user.id,
                &Notice::NewSignIn(client),
                &actor,
            )
            .await?,
        )
    } else {
        None
    };
    audit::record(
        &txn,
        &actor.as_user(tokens.user.id, &tokens.user.email),
        "auth.login",
        Some(("user", tokens.user.id.to_string())),
        json!({ "method": "password", "sessionId": tokens.session_id }),
    )
    .await?;
    txn.commit().await?;
    // `lastLoginAt` is part of the cached profile.
    crate::identity::profile_touched(state, tokens.user.id).await;
    if let Some(notice) = notice {
        notice.publish(state).await;
    }
    Ok(tokens)
}

/// Failed sign-ins are audited outside any transaction (there is no change to roll back). What
/// was typed as the email is kept only when it is an email address — anything else (a password
/// typed into the wrong field) is kept as a keyed fingerprint, enough to group attempts.
async fn audit_failure(
    state: &AppState,
    actor: &Actor,
    email: &str,
    user: Option<&users::Model>,
    stage: &str,
) {
    let target = user.map(|u| ("user", u.id.to_string()));
    let typed = if accounts::is_deliverable_email(email) {
        json!({ "email": email })
    } else {
        json!({ "emailFingerprint": state.secret_box.fingerprint(email.as_bytes()) })
    };
    let mut metadata = typed;
    metadata["stage"] = json!(stage);
    if let Err(error) = audit::record(&state.db, actor, "auth.login_failed", target, metadata).await
    {
        error.report();
    }
}

/// Ends every session of the user, on every device, and every access token issued so far.
///
/// # Errors
/// The database fails.
pub async fn logout_everywhere(state: &AppState, user_id: Uuid, actor: &Actor) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    sessions::end_all_in(&txn, user_id).await?;
    audit::record(
        &txn,
        actor,
        "auth.logout_all",
        Some(("user", user_id.to_string())),
        json!({}),
    )
    .await?;
    txn.commit().await?;
    crate::identity::sessions_ended(
        state,
        user_id,
        crate::identity::SessionEnd::SignedOutEverywhere,
    )
    .await;
    Ok(())
}
