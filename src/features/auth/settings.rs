//! The auth feature's settings: OAuth providers (`OAUTH_<NAME>_*`), where tokens may be handed
//! back (`OAUTH_REDIRECT_ALLOWLIST`), and Telegram (`TELEGRAM_*`).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::config::{Environment, Reader, Section};
use crate::state::AppState;

/// One OAuth2 provider's client registration.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_url: Url,
    pub token_url: Url,
    pub userinfo_url: Url,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SocialSettings {
    /// By name: `google`, `github`, `generic`.
    pub oauth: BTreeMap<String, OAuthProvider>,
    /// Frontend URLs tokens may be handed back to (exact scheme, host, port and path prefix).
    pub redirect_allowlist: Vec<Url>,
    pub telegram_bot_token: Option<SecretString>,
    pub telegram_max_age: Duration,
}

impl SocialSettings {
    /// The running application's (none configured when the section was not read).
    pub fn of(state: &AppState) -> &Self {
        static NONE: std::sync::LazyLock<SocialSettings> =
            std::sync::LazyLock::new(SocialSettings::default);
        state.settings.section::<Self>().unwrap_or(&NONE)
    }
}

/// A provider's built-in endpoints: authorize, token, user info, scopes.
type Endpoints = (&'static str, &'static str, &'static str, &'static str);

/// The providers with built-in endpoints, and the generic one that needs its own.
const PROVIDERS: [(&str, Option<Endpoints>); 3] = [
    (
        "google",
        Some((
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            "https://openidconnect.googleapis.com/v1/userinfo",
            "openid email profile",
        )),
    ),
    (
        "github",
        Some((
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            "https://api.github.com/user",
            "read:user user:email",
        )),
    ),
    ("generic", None),
];

fn read(r: &mut Reader<'_>, _environment: Environment) -> Arc<dyn Any + Send + Sync> {
    let mut oauth = BTreeMap::new();
    for (name, defaults) in PROVIDERS {
        let upper = name.to_ascii_uppercase();
        let var = |suffix: &str| format!("OAUTH_{upper}_{suffix}");
        let Some(client_id) = r.optional(&var("CLIENT_ID")) else {
            continue;
        };
        let Some(client_secret) = r.secret(&var("CLIENT_SECRET")) else {
            r.fail(
                &var("CLIENT_SECRET"),
                format!("is required with {}", var("CLIENT_ID")),
            );
            continue;
        };
        let mut url = |suffix: &str, default: Option<&str>| -> Option<Url> {
            let name = var(suffix);
            if default.is_none() && !r.is_set(&name) {
                r.fail(&name, format!("is required with {}", var("CLIENT_ID")));
                return None;
            }
            r.http_url(&name, default)
        };
        let (auth, token, userinfo) = (
            url("AUTH_URL", defaults.map(|d| d.0)),
            url("TOKEN_URL", defaults.map(|d| d.1)),
            url("USERINFO_URL", defaults.map(|d| d.2)),
        );
        let scopes = r
            .string(
                &var("SCOPES"),
                defaults.map_or("openid email profile", |d| d.3),
            )
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let (Some(auth_url), Some(token_url), Some(userinfo_url)) = (auth, token, userinfo) {
            oauth.insert(
                name.to_owned(),
                OAuthProvider {
                    client_id,
                    client_secret,
                    auth_url,
                    token_url,
                    userinfo_url,
                    scopes,
                },
            );
        }
    }
    let mut redirect_allowlist = Vec::new();
    for entry in r.list("OAUTH_REDIRECT_ALLOWLIST") {
        match Url::parse(&entry) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                redirect_allowlist.push(url);
            }
            _ => r.fail(
                "OAUTH_REDIRECT_ALLOWLIST",
                format!("{entry:?} is not an absolute http(s) URL"),
            ),
        }
    }
    if !oauth.is_empty() && redirect_allowlist.is_empty() {
        r.fail(
            "OAUTH_REDIRECT_ALLOWLIST",
            "is required when an OAuth provider is configured (where may tokens be handed back?)",
        );
    }
    Arc::new(SocialSettings {
        oauth,
        redirect_allowlist,
        telegram_bot_token: r.secret("TELEGRAM_BOT_TOKEN"),
        telegram_max_age: r.duration("TELEGRAM_AUTH_MAX_AGE", Duration::from_secs(3600)),
    })
}

pub const SECTION: Section = Section { name: "auth", read };
