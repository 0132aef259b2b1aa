//! Langfuse settings per organization and environment: validated, the secret sealed and never
//! returned, every change audited without it; connection tests (saved or unsaved settings),
//! rate limited per organization; the SDK snippet.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set,
};
use secrecy::SecretString;
use serde_json::json;
use url::Url;
use uuid::Uuid;

use super::config::LangfuseConfig;
use super::entity::{checks, settings};
use super::guard::Policy;
use super::probe::{self, Checked, Target};
use crate::config::Environment;
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::audit;
use crate::identity::{Actor, Stage, Tenant};
use crate::state::AppState;

/// Langfuse Cloud (EU): the host when none is given.
pub const DEFAULT_HOST: &str = "https://cloud.langfuse.com";
/// Results kept per setting.
pub const HISTORY: u64 = 100;
const MAX_TAGS: usize = 20;

/// The feature's settings (always read at start; the defaults when a test built settings
/// without the section).
pub fn config(state: &AppState) -> &LangfuseConfig {
    static DEFAULT: std::sync::LazyLock<LangfuseConfig> =
        std::sync::LazyLock::new(LangfuseConfig::for_tests);
    state
        .settings
        .section::<LangfuseConfig>()
        .unwrap_or(&DEFAULT)
}

/// The settings as a client gives them (the secret optional on updates: kept when omitted).
pub struct Input {
    pub environment: Stage,
    pub host: Option<String>,
    pub public_key: String,
    pub secret_key: Option<SecretString>,
    pub enabled: bool,
    pub sample_rate: f64,
    pub release: Option<String>,
    pub tags: Vec<String>,
}

/// Credentials to test without saving them.
pub struct Credentials {
    pub host: Option<String>,
    pub public_key: String,
    pub secret_key: SecretString,
}

/// `sk-lf-…abcd`: what every read shows of a secret key.
pub fn mask(last4: &str) -> String {
    format!("sk-lf-…{last4}")
}

fn check_key(errors: &mut FieldErrors, field: &str, key: &str, prefix: &str) -> bool {
    let ok = key.starts_with(prefix)
        && (prefix.len() + 8..=100).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        errors.add(
            field,
            format!("must start with {prefix} and be up to 100 characters of a-z, 0-9, - and _"),
        );
    }
    ok
}

/// The host as stored: https (http only to loopback outside production), no credentials,
/// query or fragment, no trailing slash.
fn check_host(state: &AppState, host: Option<&str>, errors: &mut FieldErrors) -> Option<Url> {
    let text = host.map_or(DEFAULT_HOST, str::trim);
    let invalid = |errors: &mut FieldErrors, message: &str| {
        errors.add("host", message);
        None
    };
    if text.len() > 255 {
        return invalid(errors, "must be at most 255 characters");
    }
    let Ok(mut url) = Url::parse(text) else {
        return invalid(errors, "must be a URL such as https://cloud.langfuse.com");
    };
    if url.host_str().is_none_or(str::is_empty) {
        return invalid(errors, "must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(errors, "must not carry credentials");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid(errors, "must not have a query or fragment");
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let production = state.settings.environment == Environment::Production;
    match url.scheme() {
        "https" => {}
        "http" if loopback && !production => {}
        "http" => {
            return invalid(
                errors,
                "must use https (http only to a loopback host outside production)",
            );
        }
        _ => return invalid(errors, "must be an https URL"),
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Some(url)
}

/// The stored form of a host URL (no trailing slash).
fn host_text(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

async fn validate_host(
    state: &AppState,
    url: Option<Url>,
    errors: &mut FieldErrors,
) -> Option<Url> {
    let url = url?;
    let policy = Policy::new(config(state));
    match policy.check_resolved(&url).await {
        Ok(()) => Some(url),
        Err(message) => {
            errors.add("host", message);
            None
        }
    }
}

/// The organization's settings, by environment.
///
/// # Errors
/// The database fails.
pub async fn list(db: &impl ConnectionTrait, tenant: &Tenant) -> AppResult<Vec<settings::Model>> {
    Ok(settings::Entity::find()
        .filter(settings::Column::OrganizationId.eq(tenant.id()))
        .order_by_asc(settings::Column::Environment)
        .all(db)
        .await?)
}

/// One environment's settings.
///
/// # Errors
/// `NOT_FOUND` when the environment has none; the database fails.
pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &Tenant,
    environment: Stage,
) -> AppResult<settings::Model> {
    settings::Entity::find()
        .filter(settings::Column::OrganizationId.eq(tenant.id()))
        .filter(settings::Column::Environment.eq(environment.as_str()))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("no Langfuse settings for this environment".into()))
}

/// Creates or replaces one environment's settings.
///
/// # Errors
/// `BAD_USER_INPUT` naming each invalid field; the database fails.
pub async fn upsert(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    input: Input,
) -> AppResult<settings::Model> {
    let mut errors = FieldErrors::default();
    let url = check_host(state, input.host.as_deref(), &mut errors);
    check_key(&mut errors, "publicKey", input.public_key.trim(), "pk-lf-");
    if let Some(secret) = &input.secret_key {
        use secrecy::ExposeSecret as _;
        check_key(
            &mut errors,
            "secretKey",
            secret.expose_secret().trim(),
            "sk-lf-",
        );
    }
    if !(0.0..=1.0).contains(&input.sample_rate) || input.sample_rate.is_nan() {
        errors.add("sampleRate", "must be from 0 to 1");
    }
    let release = match input.release.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => errors.text("release", text, crate::text::Rules::line(100)),
    };
    if input.tags.len() > MAX_TAGS
        || input.tags.iter().any(|t| {
            t.is_empty()
                || t.len() > 50
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        })
    {
        errors.add(
            "tags",
            format!("at most {MAX_TAGS}, each 1–50 characters of a-z, 0-9 and - _ . : /"),
        );
    }
    let url = validate_host(state, url, &mut errors).await;
    let existing = settings::Entity::find()
        .filter(settings::Column::OrganizationId.eq(tenant.id()))
        .filter(settings::Column::Environment.eq(input.environment.as_str()))
        .one(&state.db)
        .await?;
    if existing.is_none() && input.secret_key.is_none() {
        errors.add("secretKey", "is required for new settings");
    }
    errors.into_result()?;
    let url = url.ok_or_else(|| AppError::invalid("host", "is invalid"))?;

    let sealed = match &input.secret_key {
        Some(secret) => {
            use secrecy::ExposeSecret as _;
            let secret = secret.expose_secret().trim();
            let last4: String = secret
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Some((state.secret_box.encrypt(secret.as_bytes())?, last4))
        }
        None => None,
    };
    let now = Utc::now();
    let tags = serde_json::to_string(&input.tags).unwrap_or_else(|_| "[]".into());
    let txn = crate::infra::db::begin(&state.db).await?;
    let created = existing.is_none();
    let row = match existing {
        Some(row) => {
            // A new host, new keys or a toggle deserve a fresh verdict from the monitor.
            let reconfigured = row.host != host_text(&url)
                || row.public_key != input.public_key.trim()
                || sealed.is_some()
                || row.enabled != input.enabled;
            let mut active: settings::ActiveModel = row.into();
            if reconfigured {
                active.status = Set("UNKNOWN".into());
                active.consecutive_failures = Set(0);
                active.status_changed_at = Set(Some(now));
            }
            active.host = Set(host_text(&url));
            active.public_key = Set(input.public_key.trim().to_owned());
            if let Some((sealed, last4)) = sealed {
                active.secret_encrypted = Set(sealed);
                active.secret_key_id = Set(state.secret_box.key_id().to_owned());
                active.secret_last4 = Set(last4);
            }
            active.enabled = Set(input.enabled);
            active.sample_rate = Set(input.sample_rate);
            active.release = Set(release.clone());
            active.tags = Set(tags);
            active.updated_at = Set(now);
            active.update(&txn).await?
        }
        None => {
            let (sealed, last4) = sealed.unwrap_or_default();
            settings::ActiveModel {
                id: Set(Uuid::now_v7()),
                organization_id: Set(tenant.id()),
                environment: Set(input.environment.as_str().to_owned()),
                host: Set(host_text(&url)),
                public_key: Set(input.public_key.trim().to_owned()),
                secret_encrypted: Set(sealed),
                secret_key_id: Set(state.secret_box.key_id().to_owned()),
                secret_last4: Set(last4),
                enabled: Set(input.enabled),
                sample_rate: Set(input.sample_rate),
                release: Set(release.clone()),
                tags: Set(tags),
                status: Set("UNKNOWN".into()),
                consecutive_failures: Set(0),
                last_checked_at: Set(None),
                status_changed_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?
        }
    };
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        if created {
            "langfuse.settings_create"
        } else {
            "langfuse.settings_update"
        },
        Some(("langfuse_settings", row.id.to_string())),
        json!({
            "environment": row.environment,
            "host": row.host,
            "publicKey": row.public_key,
            "secretKeyChanged": input.secret_key.is_some(),
            "enabled": row.enabled,
            "sampleRate": row.sample_rate,
        }),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// Deletes one environment's settings (with their history).
///
/// # Errors
/// `NOT_FOUND` when there are none; the database fails.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    environment: Stage,
) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let row = find(&txn, tenant, environment).await?;
    checks::Entity::delete_many()
        .filter(checks::Column::SettingsId.eq(row.id))
        .exec(&txn)
        .await?;
    settings::Entity::delete_by_id(row.id).exec(&txn).await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "langfuse.settings_delete",
        Some(("langfuse_settings", row.id.to_string())),
        json!({ "environment": row.environment, "host": row.host }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Counts a connection test against the organization's `LANGFUSE_TEST_LIMIT`.
async fn count_test(state: &AppState, tenant: &Tenant) -> AppResult<()> {
    let quota = config(state).test_limit;
    match state
        .stores
        .kv
        .sliding_window(
            &format!("langfuse:test:{}", tenant.id()),
            quota.limit,
            quota.window,
        )
        .await
    {
        Ok(outcome) if outcome.allowed => Ok(()),
        Ok(outcome) => Err(AppError::RateLimited {
            retry_after_secs: outcome.retry_after.as_secs().max(1),
        }),
        Err(error) => {
            error.log("Langfuse test limit unavailable; testing");
            Ok(())
        }
    }
}

/// Checks a setting (the secret opened only for the request) and records the result.
///
/// # Errors
/// `NOT_FOUND`, `RATE_LIMITED`; the secret cannot be opened; the database fails.
pub async fn test_saved(
    state: &AppState,
    tenant: &Tenant,
    environment: Stage,
) -> AppResult<Checked> {
    let row = find(&state.db, tenant, environment).await?;
    count_test(state, tenant).await?;
    let checked = check_row(state, &row).await?;
    super::monitor::record(state, &row, &checked, false).await?;
    Ok(checked)
}

/// Checks credentials without saving them.
///
/// # Errors
/// `BAD_USER_INPUT` for invalid fields, `RATE_LIMITED`.
pub async fn test_unsaved(
    state: &AppState,
    tenant: &Tenant,
    credentials: Credentials,
) -> AppResult<Checked> {
    use secrecy::ExposeSecret as _;
    let mut errors = FieldErrors::default();
    let url = check_host(state, credentials.host.as_deref(), &mut errors);
    check_key(
        &mut errors,
        "publicKey",
        credentials.public_key.trim(),
        "pk-lf-",
    );
    check_key(
        &mut errors,
        "secretKey",
        credentials.secret_key.expose_secret().trim(),
        "sk-lf-",
    );
    let url = validate_host(state, url, &mut errors).await;
    errors.into_result()?;
    let url = url.ok_or_else(|| AppError::invalid("host", "is invalid"))?;
    count_test(state, tenant).await?;
    let secret = SecretString::from(credentials.secret_key.expose_secret().trim().to_owned());
    Ok(probe::check(
        &state.local::<probe::Client>(),
        config(state),
        Target {
            host: &url,
            public_key: credentials.public_key.trim(),
            secret_key: &secret,
        },
    )
    .await)
}

/// Runs one check of a stored setting.
///
/// # Errors
/// The secret cannot be opened (wrong `SECRETS_KEY`).
pub async fn check_row(state: &AppState, row: &settings::Model) -> AppResult<Checked> {
    let secret = state.secret_box.decrypt(&row.secret_encrypted)?;
    let secret = SecretString::from(String::from_utf8_lossy(&secret).into_owned());
    let url = Url::parse(&row.host).map_err(|_| AppError::invalid("host", "is invalid"))?;
    Ok(probe::check(
        &state.local::<probe::Client>(),
        config(state),
        Target {
            host: &url,
            public_key: &row.public_key,
            secret_key: &secret,
        },
    )
    .await)
}

/// The newest results of a setting, newest first.
///
/// # Errors
/// The database fails.
pub async fn history(
    db: &impl ConnectionTrait,
    settings_id: Uuid,
    limit: u64,
) -> AppResult<Vec<checks::Model>> {
    Ok(checks::Entity::find()
        .filter(checks::Column::SettingsId.eq(settings_id))
        .order_by_desc(checks::Column::Id)
        .limit(limit.min(HISTORY))
        .all(db)
        .await?)
}

/// What the SDK snippet is for.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "LangfuseSdkFormat")]
pub enum SdkFormat {
    /// Environment variables (`.env`).
    Env,
    /// The Python SDK.
    Python,
    /// The JS/TS SDK.
    Node,
}

/// A ready-to-paste configuration: everything but the secret, which is a placeholder.
pub fn sdk_config(row: &settings::Model, format: SdkFormat) -> String {
    const SECRET: &str = "<your secret key: sk-lf-…>";
    let release = row.release.clone().unwrap_or_default();
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match format {
        SdkFormat::Env => format!(
            "LANGFUSE_HOST={}\nLANGFUSE_PUBLIC_KEY={}\nLANGFUSE_SECRET_KEY={SECRET}\nLANGFUSE_SAMPLE_RATE={}\nLANGFUSE_RELEASE={}\nLANGFUSE_TRACING_ENVIRONMENT={}\n",
            row.host,
            row.public_key,
            row.sample_rate,
            release,
            row.environment.to_lowercase(),
        ),
        SdkFormat::Python => format!(
            "from langfuse import Langfuse\n\nlangfuse = Langfuse(\n    host={},\n    public_key={},\n    secret_key=os.environ[\"LANGFUSE_SECRET_KEY\"],  # {SECRET}\n    sample_rate={},\n    release={},\n    environment={},\n)\n",
            quote(&row.host),
            quote(&row.public_key),
            row.sample_rate,
            quote(&release),
            quote(&row.environment.to_lowercase()),
        ),
        SdkFormat::Node => format!(
            "import {{ Langfuse }} from \"langfuse\";\n\nexport const langfuse = new Langfuse({{\n  baseUrl: {},\n  publicKey: {},\n  secretKey: process.env.LANGFUSE_SECRET_KEY, // {SECRET}\n  sampleRate: {},\n  release: {},\n  environment: {},\n}});\n",
            quote(&row.host),
            quote(&row.public_key),
            row.sample_rate,
            quote(&release),
            quote(&row.environment.to_lowercase()),
        ),
    }
}

/// Re-seals every stored secret key that is not sealed with the current `SECRETS_KEY`
/// (`multipult secrets rotate`).
pub fn reseal(state: AppState) -> futures_util::future::BoxFuture<'static, AppResult<(u64, u64)>> {
    Box::pin(async move {
        let rows = settings::Entity::find().all(&state.db).await?;
        let total = rows.len() as u64;
        let mut resealed = 0;
        for row in rows {
            if !state.secret_box.is_stale(&row.secret_encrypted) {
                continue;
            }
            let sealed = state.secret_box.reseal(&row.secret_encrypted)?;
            settings::Entity::update_many()
                .col_expr(
                    settings::Column::SecretEncrypted,
                    sea_orm::sea_query::Expr::value(sealed),
                )
                .col_expr(
                    settings::Column::SecretKeyId,
                    sea_orm::sea_query::Expr::value(state.secret_box.key_id()),
                )
                .filter(settings::Column::Id.eq(row.id))
                .filter(settings::Column::SecretEncrypted.eq(row.secret_encrypted))
                .exec(&state.db)
                .await?;
            resealed += 1;
        }
        Ok((resealed, total))
    })
}
