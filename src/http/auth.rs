//! Authentication: turns the request's credentials into an [`Authentication`] (once per request,
//! before anything that depends on the caller), and records where the request comes from.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::AppError;
use crate::features::auth::{Authentication, Caller, ClientInfo, service};
use crate::state::AppState;

pub async fn layer(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client = ClientInfo {
        ip: peer.map(|peer| {
            client_ip(
                peer,
                request.headers(),
                &app.settings.rate_limit.trusted_proxies,
            )
        }),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let authentication = authenticate_header(&app, request.headers()).await;
    if let Authentication::User(user) = &authentication {
        tracing::Span::current().record("user_id", user.id.to_string());
    }
    request.extensions_mut().insert(Caller {
        authentication,
        client,
    });
    next.run(request).await
}

/// `Authorization: Bearer <access token>`; no header is anonymous, anything else is invalid.
pub async fn authenticate_header(app: &AppState, headers: &HeaderMap) -> Authentication {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Authentication::Anonymous;
    };
    let Some(token) = value.to_str().ok().and_then(bearer_token) else {
        return Authentication::Invalid("use Authorization: Bearer <access token>".into());
    };
    authenticate_token(app, token).await
}

pub async fn authenticate_token(app: &AppState, token: &str) -> Authentication {
    match service::authenticate(app, token).await {
        Ok(user) => Authentication::User(Arc::new(user)),
        Err(AppError::Unauthenticated) => {
            Authentication::Invalid("the access token is invalid, expired or revoked".into())
        }
        Err(other) => {
            tracing::error!(error = %other, "authentication failed");
            Authentication::Invalid("authentication is unavailable; retry later".into())
        }
    }
}

/// The socket peer, unless it is a trusted proxy: then the right-most `X-Forwarded-For` entry that
/// is not a trusted proxy (entries further left are whatever the client claimed).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map_while(|entry| entry.parse::<IpAddr>().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| chain.first())
        .copied()
        .unwrap_or(peer)
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
