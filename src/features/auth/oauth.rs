//! OAuth2 sign-in (authorization code + PKCE + state) with Google, GitHub and a generic provider.
//!
//! `start` remembers the PKCE verifier and the frontend's return URL under a random `state` in the
//! shared store (single use, ten minutes), so any instance can finish the flow; `finish`
//! exchanges the code, reads the provider's user info and signs the user in.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _, TokenUrl,
};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument as _;
use url::Url;

use super::settings::{OAuthProvider, SocialSettings};
use super::social::{self, ExternalIdentity};
use crate::error::{AppError, AppResult};
use crate::identity::ClientInfo;
use crate::identity::sessions::Tokens;
use crate::state::AppState;

const STATE_TTL: Duration = Duration::from_secs(600);

type ConfiguredClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

#[derive(Serialize, Deserialize)]
struct PendingLogin {
    provider: String,
    verifier: String,
    redirect_uri: String,
}

fn state_key(state: &str) -> String {
    format!("oauth:state:{state}")
}

fn provider<'a>(state: &'a AppState, name: &str) -> AppResult<&'a OAuthProvider> {
    SocialSettings::of(state).oauth.get(name).ok_or_else(|| {
        AppError::NotFound(format!("no OAuth provider named {name:?} is configured"))
    })
}

fn callback_url(state: &AppState, name: &str) -> AppResult<Url> {
    state
        .settings
        .http
        .public_url
        .join(&format!("auth/oauth/{name}/callback"))
        .map_err(|e| AppError::Internal(e.into()))
}

fn client(state: &AppState, name: &str, config: &OAuthProvider) -> AppResult<ConfiguredClient> {
    let internal = |e: url::ParseError| AppError::Internal(e.into());
    Ok(BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(
            config.client_secret.expose_secret().to_owned(),
        ))
        .set_auth_uri(AuthUrl::from_url(config.auth_url.clone()))
        .set_token_uri(TokenUrl::from_url(config.token_url.clone()))
        .set_redirect_uri(
            RedirectUrl::new(callback_url(state, name)?.to_string()).map_err(internal)?,
        ))
}

/// Whether `candidate` is under one of the allowed frontend URLs (same origin, path prefix).
pub fn redirect_allowed(allowlist: &[Url], candidate: &str) -> Option<Url> {
    let url = Url::parse(candidate).ok()?;
    if url.fragment().is_some() || !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    allowlist
        .iter()
        .any(|allowed| {
            allowed.scheme() == url.scheme()
                && allowed.host_str() == url.host_str()
                && allowed.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(allowed.path())
        })
        .then_some(url)
}

/// Where to send the browser to sign in with `provider`.
///
/// # Errors
/// `NOT_FOUND` for an unknown provider, `BAD_USER_INPUT` for a `redirect_uri` outside the
/// allowlist.
#[tracing::instrument(name = "auth.oauth.start", skip_all, fields(provider = name))]
pub async fn start(state: &AppState, name: &str, redirect_uri: &str) -> AppResult<Url> {
    let config = provider(state, name)?;
    let Some(redirect) =
        redirect_allowed(&SocialSettings::of(state).redirect_allowlist, redirect_uri)
    else {
        return Err(AppError::invalid(
            "redirect_uri",
            "is not an allowed return URL",
        ));
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client(state, name, config)?
        .authorize_url(CsrfToken::new_random)
        .add_scopes(config.scopes.iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge)
        .url();
    let pending = PendingLogin {
        provider: name.to_owned(),
        verifier: verifier.secret().clone(),
        redirect_uri: redirect.to_string(),
    };
    let bytes = serde_json::to_vec(&pending).map_err(|e| AppError::Internal(e.into()))?;
    state
        .stores
        .kv
        .set(&state_key(csrf.secret()), &bytes, Some(STATE_TTL))
        .await?;
    Ok(url)
}

/// The frontend URL a callback returns to, once its `state` is known to be ours.
pub struct Finished {
    pub redirect_uri: Url,
    pub outcome: AppResult<Tokens>,
}

/// Completes the flow. `Err` means the `state` is unknown, used, expired or for another
/// provider: nothing can be trusted, not even the return URL.
///
/// # Errors
/// `BAD_USER_INPUT` (field `state`).
#[tracing::instrument(name = "auth.oauth.finish", skip_all, fields(provider = name))]
pub async fn finish(
    state: &AppState,
    name: &str,
    code: Option<&str>,
    state_param: &str,
    provider_error: Option<&str>,
    client_info: &ClientInfo,
) -> AppResult<Finished> {
    let invalid_state = || AppError::invalid("state", "is unknown, used or expired");
    let stored = state
        .stores
        .kv
        .take(&state_key(state_param))
        .await?
        .ok_or_else(invalid_state)?;
    let pending: PendingLogin = serde_json::from_slice(&stored).map_err(|_| invalid_state())?;
    if pending.provider != name {
        return Err(invalid_state());
    }
    let redirect_uri = Url::parse(&pending.redirect_uri).map_err(|_| invalid_state())?;
    let outcome = match (provider_error, code) {
        (Some(error), _) => Err(AppError::Forbidden(format!(
            "the provider refused: {error}"
        ))),
        (None, None) => Err(AppError::invalid("code", "is missing")),
        (None, Some(code)) => sign_in(state, name, code, pending.verifier, client_info).await,
    };
    Ok(Finished {
        redirect_uri,
        outcome,
    })
}

async fn sign_in(
    state: &AppState,
    name: &str,
    code: &str,
    verifier: String,
    client_info: &ClientInfo,
) -> AppResult<Tokens> {
    let config = provider(state, name)?;
    let token = client(state, name, config)?
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&state.http_client)
        .instrument(tracing::info_span!(
            "oauth.token_exchange",
            otel.kind = "client",
            provider = name
        ))
        .await
        .map_err(|e| {
            tracing::warn!(provider = name, error = %e, "OAuth code exchange failed");
            AppError::Unauthenticated
        })?;
    let access_token = token.access_token().secret();
    let identity = user_info(state, name, config, access_token).await?;
    social::sign_in(state, identity, client_info).await
}

async fn get_json(state: &AppState, url: &str, token: &str) -> AppResult<Value> {
    // The provider sees which trace called it.
    let mut traced = reqwest::header::HeaderMap::new();
    crate::telemetry::otel::inject(&mut traced);
    let response = state
        .http_client
        .get(url)
        .headers(traced)
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("user-agent", "multipult")
        .send()
        .await
        .map_err(|e| AppError::Unavailable(e.into()))?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "OAuth user info request failed");
        return Err(AppError::Unauthenticated);
    }
    response
        .json()
        .await
        .map_err(|e| AppError::Unavailable(e.into()))
}

/// Reads who signed in. Standard OpenID-style fields (`sub`, `email`, `email_verified`, `name`);
/// GitHub's numeric `id`, with the verified primary email from `/user/emails`.
async fn user_info(
    state: &AppState,
    name: &str,
    config: &OAuthProvider,
    access_token: &str,
) -> AppResult<ExternalIdentity> {
    let info = get_json(state, config.userinfo_url.as_str(), access_token).await?;
    let subject = match info.get("sub").or_else(|| info.get("id")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(AppError::Unauthenticated),
    };
    let flag = |v: Option<&Value>| match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let (email, email_verified) = if name == "github" {
        let emails = get_json(
            state,
            &format!("{}/emails", config.userinfo_url),
            access_token,
        )
        .await?;
        let primary = emails.as_array().and_then(|list| {
            list.iter()
                .find(|e| flag(e.get("primary")) && flag(e.get("verified")))
        });
        match primary {
            Some(entry) => (
                entry
                    .get("email")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                true,
            ),
            None => (
                info.get("email").and_then(Value::as_str).map(str::to_owned),
                false,
            ),
        }
    } else {
        (
            info.get("email").and_then(Value::as_str).map(str::to_owned),
            flag(info.get("email_verified")),
        )
    };
    let display_name = info
        .get("name")
        .or_else(|| info.get("login"))
        .and_then(Value::as_str)
        .and_then(|name| crate::text::clean_lossy(name, 100));
    Ok(ExternalIdentity {
        provider: name.to_owned(),
        subject,
        email,
        email_verified,
        display_name,
    })
}
