//! Who is calling, and may they: the caller's credentials become an [`Authentication`] and the
//! request is counted against its rate limit — with one round trip to the shared store for both
//! (the user's cached state and the sliding window, batched). The WebSocket endpoint runs the same
//! step for every operation on a socket.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::rate_limit::{self, Principal};
use crate::identity::authenticate;
use crate::identity::permissions::RATE_LIMIT_BYPASS;
use crate::identity::{Authentication, Caller, ClientInfo};
use crate::infra::rate_limit::{Decision, RateLimiter};
use crate::infra::{Reply, StoreError};
use crate::state::AppState;

/// What [`identify`] concluded: the credentials' outcome and, when the request was counted, the
/// rate-limit decision.
pub struct Identified {
    pub authentication: Authentication,
    pub decision: Option<Decision>,
}

/// A credential as presented: none, unusable (`Invalid`), or a token to check.
pub enum Credential<'a> {
    None,
    Malformed(&'static str),
    Bearer(&'a str),
}

/// Checks `credential` and, unless `limit` is `None`, counts a hit for the caller's principal —
/// one store round trip for both.
pub async fn identify(
    app: &AppState,
    credential: Credential<'_>,
    limit: Option<&(dyn Fn(Option<uuid::Uuid>) -> Option<Principal> + Sync)>,
) -> Identified {
    let checked = match credential {
        Credential::None => Ok(None),
        Credential::Malformed(message) => Err(Authentication::Invalid(message.into())),
        Credential::Bearer(token) => authenticate::verify(app, token).map(Some),
    };
    let claims = match checked {
        Ok(claims) => claims,
        // Nothing to look up: the request counts against the client's address.
        Err(invalid) => {
            let decision = match limit.and_then(|l| l(None)) {
                Some(p) => Some(app.rate_limiter.hit(&p.policy, &p.key, p.quota).await),
                None => None,
            };
            return Identified {
                authentication: invalid,
                decision,
            };
        }
    };
    let principal = limit.and_then(|l| l(claims.as_ref().map(|c| c.sub)));
    let mut ops = Vec::with_capacity(2);
    if let Some(claims) = &claims {
        ops.push(authenticate::state_op(claims));
    }
    if let Some(principal) = &principal {
        ops.push(RateLimiter::op(&principal.key, principal.quota));
    }
    let replies: Result<Vec<Reply>, StoreError> = if ops.is_empty() {
        Ok(vec![])
    } else {
        app.stores.kv.batch(&ops).await
    };
    let (cached, window) = match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            let cached = claims.as_ref().map(|_| match replies.next() {
                Some(Reply::Value(value)) => Ok(value),
                _ => Err(StoreError::Backend("unexpected reply".into())),
            });
            let window = principal.as_ref().map(|_| match replies.next() {
                Some(Reply::Window(outcome)) => Ok(outcome),
                _ => Err(StoreError::Backend("unexpected reply".into())),
            });
            (cached, window)
        }
        Err(error) => (
            claims.as_ref().map(|_| Err(clone_error(&error))),
            principal.as_ref().map(|_| Err(error)),
        ),
    };
    let authentication = match (&claims, cached) {
        (Some(claims), Some(cached)) => authenticate::resolve(app, claims, cached).await,
        _ => Authentication::Anonymous,
    };
    let bypass =
        matches!(&authentication, Authentication::User(user) if user.has(RATE_LIMIT_BYPASS));
    let decision = match (principal, window) {
        (Some(principal), Some(outcome)) if !bypass => Some(app.rate_limiter.decide(
            &principal.policy,
            principal.quota,
            outcome,
        )),
        _ => None,
    };
    Identified {
        authentication,
        decision,
    }
}

fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Timeout => StoreError::Timeout,
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::CircuitOpen => StoreError::CircuitOpen,
    }
}

/// `Authorization: Bearer <access token>`.
pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credential::None;
    };
    match value.to_str().ok().and_then(bearer_token) {
        Some(token) => Credential::Bearer(token),
        None => Credential::Malformed("use Authorization: Bearer <access token>"),
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The HTTP layer: identifies the caller, counts the request, answers 429 (or 503 when failing
/// closed) early, and puts the [`Caller`] on the request.
pub async fn layer(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let client = client_info(&app, &request);
    let path = request.uri().path().to_owned();
    let counted = !is_graphiql_page(&request);
    let limit = |user: Option<uuid::Uuid>| {
        counted
            .then(|| rate_limit::principal_for_path(&app, &path, &client, user))
            .flatten()
    };
    let identified = identify(&app, credential(request.headers()), Some(&limit)).await;
    if let Authentication::User(user) = &identified.authentication {
        tracing::Span::current().record("user_id", user.id.to_string());
    }
    let window = match identified.decision {
        Some(Decision::Limited(window)) => return rate_limit::limited_response(&window),
        Some(Decision::Unavailable) => return rate_limit::unavailable().into_response(),
        Some(Decision::Allowed(window)) => Some(window),
        Some(Decision::StoreDown) | None => None,
    };
    request.extensions_mut().insert(Caller {
        authentication: identified.authentication,
        client,
    });
    let mut response = next.run(request).await;
    // The default window, and the root-field rules the operation was counted against.
    let mut windows: Vec<_> = window.into_iter().collect();
    if let Some(rules) = response
        .extensions_mut()
        .remove::<rate_limit::RuleWindows>()
    {
        windows.extend(rules.0);
    }
    if !windows.is_empty() {
        response.headers_mut().extend(rate_limit::headers(&windows));
    }
    response
}

/// A browser opening GraphiQL (a plain navigation to `/graphql`): not an API call, not counted.
pub fn is_graphiql_page(request: &Request) -> bool {
    request.method() == axum::http::Method::GET
        && request.uri().path() == "/graphql"
        && request.uri().query().is_none()
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// Where a request comes from.
pub fn client_info(app: &AppState, request: &Request) -> ClientInfo {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    ClientInfo {
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
