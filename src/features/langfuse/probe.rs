//! One connection check against a Langfuse host: `GET /api/public/health` (no auth), then
//! `GET /api/public/projects` with HTTP Basic (public key as user, secret key as password).
//! Bounded: a timeout for the whole check, a cap on each response body, no redirects, and the
//! address guard of [`super::guard`] at connect time. Every outcome is a [`Checked`] — never an
//! error — with a message a person can act on, and never the secret.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_graphql::Enum;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use super::config::LangfuseConfig;
use super::guard::{GuardedResolver, Policy};

/// The largest response body a check reads.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "LangfuseCheckStatus")]
pub enum CheckStatus {
    Ok,
    /// 401: wrong keys, or keys of another region/host.
    InvalidCredentials,
    /// 403: an organization-level key where a project key is needed.
    OrganizationKey,
    /// 429 (see `retryAfterSeconds`).
    RateLimited,
    /// 5xx.
    ServerError,
    /// No connection: refused, unresolvable, or an address the guard refuses.
    Unreachable,
    Timeout,
    TlsError,
    /// Not Langfuse's answer: not JSON, too large, a redirect, an unexpected status.
    InvalidResponse,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::OrganizationKey => "ORGANIZATION_KEY",
            Self::RateLimited => "RATE_LIMITED",
            Self::ServerError => "SERVER_ERROR",
            Self::Unreachable => "UNREACHABLE",
            Self::Timeout => "TIMEOUT",
            Self::TlsError => "TLS_ERROR",
            Self::InvalidResponse => "INVALID_RESPONSE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Ok,
            Self::InvalidCredentials,
            Self::OrganizationKey,
            Self::RateLimited,
            Self::ServerError,
            Self::Unreachable,
            Self::Timeout,
            Self::TlsError,
            Self::InvalidResponse,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub status: CheckStatus,
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    pub project_name: Option<String>,
    pub langfuse_version: Option<String>,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
    pub checked_at: DateTime<Utc>,
}

/// What to check.
pub struct Target<'a> {
    pub host: &'a Url,
    pub public_key: &'a str,
    pub secret_key: &'a SecretString,
}

/// The feature's HTTP client, built once per application from its settings.
#[derive(Default)]
pub struct Client(OnceLock<Option<(reqwest::Client, Arc<Policy>)>>);

impl Client {
    fn get(&self, config: &LangfuseConfig) -> Option<&(reqwest::Client, Arc<Policy>)> {
        self.0
            .get_or_init(|| {
                let policy = Arc::new(Policy::new(config));
                reqwest::Client::builder()
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
                    .user_agent(concat!("multipult/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .ok()
                    .map(|client| (client, policy))
            })
            .as_ref()
    }
}

#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct Projects {
    data: Vec<Project>,
}

#[derive(Deserialize)]
struct Project {
    name: String,
}

struct Failure(CheckStatus, Option<u16>, String, Option<u64>);

/// Runs one check.
pub async fn check(client: &Client, config: &LangfuseConfig, target: Target<'_>) -> Checked {
    let started = Instant::now();
    let outcome = match client.get(config) {
        None => Err(Failure(
            CheckStatus::Unreachable,
            None,
            "the HTTP client cannot be built".into(),
            None,
        )),
        Some((http, policy)) => {
            use tracing::Instrument as _;
            let span = tracing::info_span!(
                "langfuse.check",
                otel.name = "GET langfuse",
                otel.kind = "client",
                server.address = target.host.host_str().unwrap_or_default(),
            );
            let checked = run(http, policy, &target).instrument(span);
            match tokio::time::timeout(config.timeout, checked).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure(
                    CheckStatus::Timeout,
                    None,
                    format!(
                        "Langfuse did not answer within {}",
                        humantime::format_duration(config.timeout)
                    ),
                    None,
                )),
            }
        }
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok((project, version)) => Checked {
            status: CheckStatus::Ok,
            http_status: Some(200),
            latency_ms,
            message: format!("connected to the project {project}"),
            project_name: Some(project),
            langfuse_version: version,
            retry_after_seconds: None,
            checked_at: Utc::now(),
        },
        Err(Failure(status, http_status, message, retry_after_seconds)) => Checked {
            status,
            http_status,
            latency_ms,
            project_name: None,
            langfuse_version: None,
            message,
            retry_after_seconds,
            checked_at: Utc::now(),
        },
    }
}

async fn run(
    http: &reqwest::Client,
    policy: &Policy,
    target: &Target<'_>,
) -> Result<(String, Option<String>), Failure> {
    // An address given literally never reaches the resolver: check it here.
    let literal = match target.host.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !policy.allows(&ip.to_string(), ip)
    {
        return Err(Failure(
            CheckStatus::Unreachable,
            None,
            "the host is a private, loopback, link-local or metadata address".into(),
            None,
        ));
    }
    // Langfuse sees which trace called it.
    let mut traced = reqwest::header::HeaderMap::new();
    crate::telemetry::otel::inject(&mut traced);
    let health_url = endpoint(target.host, "api/public/health");
    let response = http
        .get(health_url)
        .headers(traced.clone())
        .send()
        .await
        .map_err(transport)?;
    let (status, body) = read(response).await?;
    if status != 200 {
        return Err(by_status(status, None));
    }
    let health: Health = serde_json::from_slice(&body).map_err(|_| invalid(status))?;

    let projects_url = endpoint(target.host, "api/public/projects");
    let response = http
        .get(projects_url)
        .headers(traced)
        .basic_auth(target.public_key, Some(target.secret_key.expose_secret()))
        .send()
        .await
        .map_err(transport)?;
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (status, body) = read(response).await?;
    if status != 200 {
        return Err(by_status(status, retry_after));
    }
    let projects: Projects = serde_json::from_slice(&body).map_err(|_| invalid(status))?;
    match projects.data.as_slice() {
        [project] => Ok((project.name.clone(), health.version)),
        [] => Err(Failure(
            CheckStatus::InvalidResponse,
            Some(status),
            "the keys reach no project".into(),
            None,
        )),
        _ => Err(Failure(
            CheckStatus::OrganizationKey,
            Some(status),
            "these keys reach several projects: use a project's API keys, not an organization's"
                .into(),
            None,
        )),
    }
}

fn endpoint(host: &Url, path: &str) -> Url {
    let mut base = host.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path).unwrap_or_else(|_| host.clone())
}

/// The status and at most [`MAX_BODY`] bytes of the body (more is an invalid response).
async fn read(mut response: reqwest::Response) -> Result<(u16, Vec<u8>), Failure> {
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        return Err(Failure(
            CheckStatus::InvalidResponse,
            Some(status),
            "Langfuse answered with a redirect, which checks do not follow: use the final URL as \
             the host"
                .into(),
            None,
        ));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY as u64)
    {
        return Err(too_large(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large(status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

fn too_large(status: u16) -> Failure {
    Failure(
        CheckStatus::InvalidResponse,
        Some(status),
        format!("the response is larger than {} KiB", MAX_BODY / 1024),
        None,
    )
}

fn invalid(status: u16) -> Failure {
    Failure(
        CheckStatus::InvalidResponse,
        Some(status),
        "the answer is not Langfuse's JSON: is the host a Langfuse server?".into(),
        None,
    )
}

fn by_status(status: u16, retry_after: Option<u64>) -> Failure {
    let (kind, message) = match status {
        401 => (
            CheckStatus::InvalidCredentials,
            "Langfuse refused the keys: check that they belong to this host's region (EU \
             cloud.langfuse.com, US us.cloud.langfuse.com, or your own) and were copied whole"
                .to_owned(),
        ),
        403 => (
            CheckStatus::OrganizationKey,
            "these are organization-level keys: create API keys in the project's settings"
                .to_owned(),
        ),
        429 => (
            CheckStatus::RateLimited,
            match retry_after {
                Some(seconds) => format!("Langfuse is rate limiting: retry in {seconds} s"),
                None => "Langfuse is rate limiting: retry later".to_owned(),
            },
        ),
        500..=599 => (
            CheckStatus::ServerError,
            format!("Langfuse answered {status}: a server error on its side"),
        ),
        _ => (
            CheckStatus::InvalidResponse,
            format!("Langfuse answered {status}, which a check does not expect"),
        ),
    };
    Failure(kind, Some(status), message, retry_after)
}

fn transport(error: reqwest::Error) -> Failure {
    if error.is_timeout() {
        return Failure(
            CheckStatus::Timeout,
            None,
            "Langfuse did not answer in time".into(),
            None,
        );
    }
    let chain = {
        let mut text = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            text.push_str(&e.to_string().to_ascii_lowercase());
            text.push(' ');
            source = e.source();
        }
        text
    };
    // rustls' errors, as their messages read (the type is not ours to name).
    const TLS: [&str; 6] = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
        "peer sent",
    ];
    if TLS.iter().any(|marker| chain.contains(marker)) {
        return Failure(
            CheckStatus::TlsError,
            None,
            "the TLS handshake failed: the host's certificate is invalid, expired or not for \
             this name"
                .into(),
            None,
        );
    }
    if chain.contains("no address langfuse checks may reach") {
        return Failure(
            CheckStatus::Unreachable,
            None,
            "the host resolves to a private, loopback, link-local or metadata address".into(),
            None,
        );
    }
    Failure(
        CheckStatus::Unreachable,
        None,
        "cannot connect to the host (refused, unresolvable or unreachable)".into(),
        None,
    )
}
