//! Creating, listing, rotating and revoking API keys. The key is returned once, by the call that
//! makes it; afterwards only its prefix is known. Every change is audited (with the key's name
//! and prefix, never the key) and drops the key's cached state on every instance.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, Set,
};
use serde_json::json;
use uuid::Uuid;

use crate::entities::api_keys;
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::audit;
use crate::identity::api_keys::{self as keys, USAGE_FLUSH};
use crate::identity::{Actor, Stage, Tenant};
use crate::state::AppState;

/// At most this many keys (not revoked) per organization.
pub const MAX_KEYS: u64 = 100;
/// How long the old secret keeps working after a rotation, unless the call says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::hours(24);
/// The longest grace period a rotation may give.
pub const MAX_GRACE: Duration = Duration::days(7);
/// The furthest a key's expiry may lie ahead.
pub const MAX_LIFETIME: Duration = Duration::days(5 * 365);

const NAME: crate::text::Rules = crate::text::Rules::line(100);

/// What a new key is for.
pub struct NewKey<'a> {
    pub name: &'a str,
    pub environment: Stage,
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just made or rotated: the secret, shown this once.
pub struct Minted {
    pub key: String,
    pub row: api_keys::Model,
}

fn key_not_found() -> AppError {
    AppError::NotFound("no such API key".into())
}

/// Creates a key. Its scopes must be organization permissions the creator holds here.
///
/// # Errors
/// `BAD_USER_INPUT` (`name`, `scopes`, `expiresAt`), `FORBIDDEN` for API keys, `CONFLICT` past
/// [`MAX_KEYS`]; the database fails.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    input: NewKey<'_>,
) -> AppResult<Minted> {
    // Keys do not make keys: a leaked key must not be able to outlive its revocation.
    tenant.member()?;
    let mut errors = FieldErrors::default();
    let name = errors.text("name", input.name, NAME);
    let scopes = check_scopes(state, tenant, input.scopes, &mut errors);
    let now = Utc::now();
    if let Some(at) = input.expires_at {
        if at <= now {
            errors.add("expiresAt", "must be in the future");
        } else if at > now + MAX_LIFETIME {
            errors.add("expiresAt", "must be within 5 years");
        }
    }
    errors.into_result()?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let live = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(tenant.id()))
        .filter(api_keys::Column::RevokedAt.is_null())
        .count(&txn)
        .await?;
    if live >= MAX_KEYS {
        return Err(AppError::Conflict(format!(
            "an organization has at most {MAX_KEYS} API keys; revoke some first"
        )));
    }
    let (key, prefix) = keys::generate(input.environment);
    let row = api_keys::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(tenant.id()),
        environment: Set(input.environment.as_str().to_owned()),
        name: Set(name.unwrap_or_default()),
        prefix: Set(prefix),
        secret_hash: Set(keys::hash(state, &key)),
        previous_hash: Set(None),
        previous_expires_at: Set(None),
        scopes: Set(serde_json::to_string(&scopes).unwrap_or_else(|_| "[]".into())),
        created_by: Set(actor.id),
        expires_at: Set(input.expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "api_key.create",
        Some(("api_key", row.id.to_string())),
        json!({
            "name": row.name,
            "prefix": row.prefix,
            "environment": row.environment,
            "scopes": scopes,
            "expiresAt": row.expires_at,
        }),
    )
    .await?;
    txn.commit().await?;
    Ok(Minted { key, row })
}

/// The scopes asked for, checked: known organization permissions the creator holds.
fn check_scopes(
    state: &AppState,
    tenant: &Tenant,
    scopes: &[String],
    errors: &mut FieldErrors,
) -> BTreeSet<String> {
    let mut checked = BTreeSet::new();
    let most = state.catalogue.organization().len();
    if scopes.is_empty() {
        errors.add("scopes", "name at least one organization permission");
    } else if scopes.len() > most {
        errors.add("scopes", format!("name at most {most}, each once"));
        return checked;
    }
    for name in scopes {
        match state.catalogue.parse_organization(name.trim()) {
            None => errors.add(
                "scopes",
                format!("{name:?} is not an organization permission"),
            ),
            Some(permission) if !tenant.has(permission) => errors.add(
                "scopes",
                format!("you do not hold {permission} here, so a key of yours cannot"),
            ),
            Some(permission) => {
                checked.insert(permission.as_str().to_owned());
            }
        }
    }
    checked
}

/// The organization's keys, newest first, optionally of one environment.
///
/// # Errors
/// The database fails.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    environment: Option<Stage>,
) -> AppResult<Vec<api_keys::Model>> {
    let mut query = api_keys::Entity::find()
        .filter(api_keys::Column::OrganizationId.eq(tenant.id()))
        .order_by_desc(api_keys::Column::Id);
    if let Some(environment) = environment {
        query = query.filter(api_keys::Column::Environment.eq(environment.as_str()));
    }
    Ok(query.all(db).await?)
}

async fn find(db: &impl ConnectionTrait, tenant: &Tenant, id: Uuid) -> AppResult<api_keys::Model> {
    api_keys::Entity::find_by_id(id)
        .filter(api_keys::Column::OrganizationId.eq(tenant.id()))
        .one(db)
        .await?
        .ok_or_else(key_not_found)
}

/// Revokes a key (and the old secret of a rotation in progress): refused from the next
/// request on, on every instance. Revoking a revoked key changes nothing.
///
/// # Errors
/// `NOT_FOUND` for a key not of this organization; the database fails.
pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    id: Uuid,
) -> AppResult<api_keys::Model> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let key = find(&txn, tenant, id).await?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut row: api_keys::ActiveModel = key.clone().into();
    row.revoked_at = Set(Some(Utc::now()));
    let updated = row.update(&txn).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "api_key.revoke",
        Some(("api_key", key.id.to_string())),
        json!({ "name": key.name, "prefix": key.prefix }),
    )
    .await?;
    txn.commit().await?;
    let mut hashes = vec![key.secret_hash.as_str()];
    hashes.extend(key.previous_hash.as_deref());
    keys::key_changed(state, key.id, &hashes).await;
    Ok(updated)
}

/// Gives a key a new secret; the old one keeps working for `grace` (0 ends it at once). A
/// secret replaced by an earlier rotation stops now.
///
/// # Errors
/// `BAD_USER_INPUT` (`gracePeriodSeconds`), `NOT_FOUND`, `CONFLICT` for a revoked or expired key,
/// `FORBIDDEN` for API keys; the database fails.
pub async fn rotate(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    id: Uuid,
    grace: Duration,
) -> AppResult<Minted> {
    let now = Utc::now();
    let txn = crate::infra::db::begin(&state.db).await?;
    // What is not this organization's is not found, whoever asks.
    let key = find(&txn, tenant, id).await?;
    tenant.member()?;
    if grace < Duration::zero() || grace > MAX_GRACE {
        return Err(AppError::invalid(
            "gracePeriodSeconds",
            "must be from 0 to 604800 (7 days)",
        ));
    }
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::Conflict(
            "the key is revoked or expired; create a new one".into(),
        ));
    }
    let environment = Stage::parse(&key.environment).unwrap_or(Stage::Development);
    let (secret, prefix) = keys::generate(environment);
    let mut row: api_keys::ActiveModel = key.clone().into();
    row.prefix = Set(prefix);
    row.secret_hash = Set(keys::hash(state, &secret));
    row.previous_hash = Set((grace > Duration::zero()).then(|| key.secret_hash.clone()));
    row.previous_expires_at = Set((grace > Duration::zero()).then(|| now + grace));
    let updated = row.update(&txn).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "api_key.rotate",
        Some(("api_key", key.id.to_string())),
        json!({
            "name": key.name,
            "previousPrefix": key.prefix,
            "prefix": updated.prefix,
            "gracePeriodSeconds": grace.num_seconds(),
        }),
    )
    .await?;
    txn.commit().await?;
    // The old secret's cached state ends at the grace period now; an older one ends at once.
    let mut hashes = vec![key.secret_hash.as_str()];
    hashes.extend(key.previous_hash.as_deref());
    keys::key_changed(state, key.id, &hashes).await;
    Ok(Minted {
        key: secret,
        row: updated,
    })
}

/// Keys that work now (for system stats).
///
/// # Errors
/// The database fails.
pub async fn count_active(db: &impl ConnectionTrait) -> AppResult<u64> {
    let now = Utc::now();
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::RevokedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(api_keys::Column::ExpiresAt.is_null())
                .add(api_keys::Column::ExpiresAt.gt(now)),
        )
        .count(db)
        .await?)
}

/// Writes the `lastUsedAt` this instance noted, every [`USAGE_FLUSH`] and once more at
/// shutdown.
pub fn usage_task(state: AppState) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut tick = tokio::time::interval(USAGE_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                () = state.shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            if let Err(error) = keys::flush_usage(&state).await {
                error.report();
            }
            if stopping {
                return;
            }
        }
    })
}
