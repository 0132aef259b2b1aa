//! Who is calling, and may they: the caller's credentials become an [`Authentication`] and the
//! request is counted against its rate limit — with one round trip to the shared store for both
//! (the user's cached state and the sliding window, batched). The WebSocket endpoint runs the same
//! step for every operation on a socket. On Redis, a `/graphql` request seen before also has its
//! response-cache entry read in that round trip (`super::prefetch`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::prefetch;
use super::rate_limit::{self, Principal};
use crate::identity::permissions::RATE_LIMIT_BYPASS;
use crate::identity::{Authentication, Caller, ClientInfo};
use crate::identity::{api_keys, authenticate};
use crate::infra::rate_limit::{Decision, RateLimiter};
use crate::infra::{Reply, StoreError};
use crate::state::AppState;

/// What [`identify`] concluded: the credentials' outcome and, when the request was counted, the
/// rate-limit decision.
pub struct Identified {
    pub authentication: Authentication,
    pub decision: Option<Decision>,
}

/// A credential as presented: none, unusable (`Invalid`), an access token or an API key.
pub enum Credential<'a> {
    None,
    Malformed(&'static str),
    Bearer(&'a str),
    ApiKey(&'a str),
}

impl<'a> Credential<'a> {
    /// A token as given in `Authorization: Bearer`, a WebSocket `connection_init` or
    /// `X-Api-Key`: an API key by its prefix, else an access token.
    pub fn from_token(token: &'a str) -> Self {
        if api_keys::is_api_key(token) {
            Self::ApiKey(token)
        } else {
            Self::Bearer(token)
        }
    }

    pub fn token(&self) -> Option<&'a str> {
        match self {
            Self::Bearer(token) | Self::ApiKey(token) => Some(token),
            Self::None | Self::Malformed(_) => None,
        }
    }
}

/// Whom a request counts against, as far as the credential says before it is checked.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// No usable credential: the client's address.
    Anonymous,
    User(uuid::Uuid),
    /// An API key, by its keyed hash.
    ApiKey(&'a str),
}

/// Who a request of a given subject is counted against (`None`: not counted).
pub type PrincipalFor<'a> = dyn Fn(Subject<'_>) -> Option<Principal> + Sync + 'a;

/// What a credential needs looked up in the shared store.
enum Checked {
    Nothing,
    Token(std::sync::Arc<crate::identity::tokens::Claims>),
    /// The key's hashes, the current one first.
    Key(Vec<String>),
}

/// Checks `credential` and, unless `limit` is `None`, counts a hit for the caller's principal —
/// one store round trip for both. A presented API key that turns out not to work is counted
/// against the client's address as well, so guessing keys is throttled like any anonymous call.
pub async fn identify(
    app: &AppState,
    credential: Credential<'_>,
    limit: Option<&PrincipalFor<'_>>,
) -> Identified {
    let checked = match credential {
        Credential::None => Ok(Checked::Nothing),
        Credential::Malformed(message) => Err(Authentication::Invalid(message.into())),
        Credential::Bearer(token) => authenticate::verify(app, token).map(Checked::Token),
        Credential::ApiKey(key) if api_keys::well_formed(key) => {
            Ok(Checked::Key(api_keys::hashes(app, key)))
        }
        Credential::ApiKey(_) => Err(Authentication::Invalid(
            "the API key is invalid, expired or revoked".into(),
        )),
    };
    let checked = match checked {
        Ok(checked) => checked,
        // Nothing to look up: the request counts against the client's address.
        Err(invalid) => {
            let decision = match limit.and_then(|l| l(Subject::Anonymous)) {
                Some(p) => Some(app.rate_limiter.hit(p.policy, &p.key, p.quota).await),
                None => None,
            };
            return Identified {
                authentication: invalid,
                decision,
            };
        }
    };
    let subject = match &checked {
        Checked::Nothing => Subject::Anonymous,
        Checked::Token(claims) => Subject::User(claims.sub),
        Checked::Key(hashes) => Subject::ApiKey(&hashes[0]),
    };
    let key_presented = matches!(subject, Subject::ApiKey(_));
    let principal = limit.and_then(|l| l(subject));
    let mut ops = Vec::with_capacity(2);
    match &checked {
        Checked::Nothing => {}
        Checked::Token(claims) => ops.push(authenticate::state_op(claims)),
        Checked::Key(hashes) => ops.push(api_keys::state_op(&hashes[0])),
    }
    let looked_up = !ops.is_empty();
    if let Some(principal) = &principal {
        ops.push(RateLimiter::op(&principal.key, principal.quota));
    }
    let replies: Result<Vec<Reply>, StoreError> = if ops.is_empty() {
        Ok(vec![])
    } else {
        crate::telemetry::otel::store_call(
            "store.batch",
            app.stores.backend,
            || {
                vec![opentelemetry::KeyValue::new(
                    "store.operations",
                    i64::try_from(ops.len()).unwrap_or(i64::MAX),
                )]
            },
            app.stores.kv.batch(&ops),
        )
        .await
    };
    let (cached, window) = match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            let cached = looked_up.then(|| match replies.next() {
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
            looked_up.then(|| Err(error.clone())),
            principal.as_ref().map(|_| Err(error)),
        ),
    };
    let authentication = match (checked, cached) {
        (Checked::Token(claims), Some(cached)) => authenticate::resolve(app, &claims, cached).await,
        (Checked::Key(hashes), Some(cached)) => api_keys::resolve(app, hashes, cached).await,
        _ => Authentication::Anonymous,
    };
    let bypass =
        matches!(&authentication, Authentication::User(user) if user.has(RATE_LIMIT_BYPASS));
    let mut decision = match (principal, window) {
        (Some(principal), Some(outcome)) if !bypass => Some(app.rate_limiter.decide(
            principal.policy,
            principal.quota,
            outcome,
        )),
        _ => None,
    };
    let key_refused = key_presented && matches!(authentication, Authentication::Invalid(_));
    if key_refused && let Some(p) = limit.and_then(|l| l(Subject::Anonymous)) {
        let by_address = app.rate_limiter.hit(p.policy, &p.key, p.quota).await;
        if matches!(by_address, Decision::Limited(_) | Decision::Unavailable) {
            decision = Some(by_address);
        }
    }
    Identified {
        authentication,
        decision,
    }
}

/// `Authorization: Bearer <access token or API key>`, or `X-Api-Key: <API key>` (one of them).
pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    let authorization = headers.get(header::AUTHORIZATION);
    let api_key = headers.get(API_KEY_HEADER);
    match (authorization, api_key) {
        (None, None) => Credential::None,
        (Some(_), Some(_)) => {
            Credential::Malformed("send either Authorization or X-Api-Key, not both")
        }
        (Some(value), None) => match value.to_str().ok().and_then(bearer_token) {
            Some(token) => Credential::from_token(token),
            None => Credential::Malformed("use Authorization: Bearer <access token or API key>"),
        },
        (None, Some(value)) => match value.to_str().ok().map(str::trim) {
            Some(key) if api_keys::is_api_key(key) => Credential::ApiKey(key),
            _ => Credential::Malformed("X-Api-Key takes an API key (mpk_…)"),
        },
    }
}

/// The header machine clients may send their key in instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The HTTP layer: identifies the caller, counts the request, answers 429 (or 503 when failing
/// closed) early, and puts the [`Caller`] on the request.
pub async fn layer(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let client = client_info(&app, &request);
    let path_limit = if is_graphiql_page(&request) {
        rate_limit::PathLimit::Exempt
    } else {
        rate_limit::PathLimit::of(&app, request.uri().path())
    };
    let limit =
        |subject: Subject<'_>| rate_limit::principal_for_path(&app, path_limit, &client, subject);
    // The response cache's read, sent with the caller's own when the request looks like one
    // seen before (`prefetch`).
    let presented = prefetch::wanted(&app, &request)
        .then(|| prefetch::credential_hash(&credential(request.headers())))
        .flatten();
    let (mut request, fingerprint) = match presented {
        // Boxed: only the Redis path reads ahead, and the embedded one should not carry its
        // state in every request's future.
        Some(presented) => match Box::pin(prefetch::fingerprint(&app, request, presented)).await {
            Ok(fingerprinted) => fingerprinted,
            Err(response) => return response,
        },
        None => (request, None),
    };
    let identifying = identify(&app, credential(request.headers()), Some(&limit));
    let (identified, speculation) = match fingerprint {
        Some(fingerprint) => {
            let (identified, speculation) =
                Box::pin(prefetch::alongside(&app, fingerprint, identifying)).await;
            (identified, Some(speculation))
        }
        None => (identifying.await, None),
    };
    if let Some(speculation) = speculation {
        request.extensions_mut().insert(speculation);
    }
    match &identified.authentication {
        Authentication::User(user) => {
            tracing::Span::current().record("user_id", user.id.to_string());
        }
        Authentication::ApiKey(key) => {
            tracing::Span::current().record("api_key_id", key.id.to_string());
        }
        _ => {}
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
    let rules = response
        .extensions_mut()
        .remove::<rate_limit::RuleWindows>()
        .filter(|rules| !rules.0.is_empty());
    match (window, rules) {
        (window, Some(rate_limit::RuleWindows(rules))) => {
            let windows: Vec<_> = window.into_iter().chain(rules).collect();
            rate_limit::add_headers(response.headers_mut(), &windows);
        }
        (Some(window), None) => {
            rate_limit::add_headers(response.headers_mut(), std::slice::from_ref(&window));
        }
        (None, None) => {}
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
    let ip = peer.map(|peer| {
        client_ip(
            peer,
            request.headers(),
            &app.settings.rate_limit.trusted_proxies,
        )
    });
    ClientInfo {
        ip,
        network: ip.map(|ip| ClientInfo::network_of(ip, app.settings.rate_limit.ipv6_prefix)),
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// The socket peer, unless it is a trusted proxy: then the right-most `X-Forwarded-For` entry that
/// is not a trusted proxy (entries further left are whatever the client claimed). IPv4-mapped
/// IPv6 addresses (`::ffff:10.0.0.5`, what a dual-stack listener on `::` sees of an IPv4 peer)
/// are taken as the IPv4 addresses they are, so IPv4 ranges in `TRUSTED_PROXIES` and the
/// allowlist match them.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
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
        .map(|ip| ip.to_canonical())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| chain.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::client_ip;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_are_their_ipv4_addresses() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse().unwrap();
        // A dual-stack listener sees the proxy as ::ffff:10.0.0.5: still the trusted proxy.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.5"), &forwarded("203.0.113.9"), &trusted),
            ip("203.0.113.9")
        );
        // Mapped entries are unwrapped, and a mapped proxy in the chain is skipped.
        assert_eq!(
            client_ip(
                ip("10.0.0.5"),
                &forwarded("::ffff:203.0.113.9, ::ffff:10.1.1.1"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // An untrusted mapped peer is the client, as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:198.51.100.7"), &forwarded("1.2.3.4"), &trusted),
            ip("198.51.100.7")
        );
    }
}
