//! GraphQL (`GRAPHQL_*`, cost budgets), WebSocket (`WS_*`), HTTP caching (`CACHE_*`), CSRF
//! prevention (`CSRF_*`) and persisted queries (`PERSISTED_QUERIES*`, `APQ_*`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::reader::{Quota, Reader};

#[derive(Debug, Clone)]
pub struct GraphqlSettings {
    /// Bytes of one document's text.
    pub max_document_size: usize,
    /// Lexical tokens of one document.
    pub max_tokens: usize,
    /// Field selections after expanding fragments (`__typename` included).
    pub max_selections: usize,
    /// Fragment definitions in one document.
    pub max_fragments: usize,
    /// Fragment spreads in one selection set.
    pub max_spreads: usize,
    /// Errors in one response (the rest are summarised in one more).
    pub max_errors: usize,
    /// An operation (query or mutation) still running after this is stopped.
    pub execution_timeout: Duration,
    pub max_depth: usize,
    pub max_complexity: usize,
    /// The ceiling for callers holding `admin:read`.
    pub admin_max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    /// Operations costlier than this are logged with their cost, name, user and request id.
    pub cost_warn_threshold: usize,
    /// Report `extensions.cost {requested, limit}` on every response.
    pub cost_extension: bool,
    /// Points per window an authenticated caller may spend (each operation costs its complexity).
    pub user_budget: Option<Quota>,
    pub anonymous_budget: Option<Quota>,
    pub api_key_budget: Option<Quota>,
    pub introspection: bool,
    pub graphiql: bool,
    /// Maximum operations in one batched (JSON array) request; 0 disables batching.
    pub max_batch_size: usize,
}

impl GraphqlSettings {
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        Self {
            max_document_size: r.byte_size("GRAPHQL_MAX_DOCUMENT_SIZE", 32 * 1024),
            max_tokens: r.number("GRAPHQL_MAX_TOKENS", 10_000usize, 10, 1_000_000),
            max_selections: r.number("GRAPHQL_MAX_SELECTIONS", 2_000usize, 1, 1_000_000),
            max_fragments: r.number("GRAPHQL_MAX_FRAGMENTS", 100usize, 0, 10_000),
            max_spreads: r.number("GRAPHQL_MAX_SPREADS", 50usize, 1, 10_000),
            max_errors: r.number("GRAPHQL_MAX_ERRORS", 20usize, 1, 1_000),
            execution_timeout: r.duration("GRAPHQL_EXECUTION_TIMEOUT", Duration::from_secs(10)),
            max_depth: r.number("GRAPHQL_MAX_DEPTH", 15usize, 1, 1000),
            max_complexity: r.number("GRAPHQL_MAX_COMPLEXITY", 1000usize, 1, 1_000_000),
            admin_max_complexity: r.number(
                "GRAPHQL_ADMIN_MAX_COMPLEXITY",
                10_000usize,
                1,
                10_000_000,
            ),
            max_aliases: r.number("GRAPHQL_MAX_ALIASES", 30usize, 1, 10_000),
            max_root_fields: r.number("GRAPHQL_MAX_ROOT_FIELDS", 20usize, 1, 10_000),
            cost_warn_threshold: r.number("GRAPHQL_COST_WARN_THRESHOLD", 500usize, 1, 10_000_000),
            cost_extension: r.boolean("GRAPHQL_COST_EXTENSION", false),
            user_budget: r.optional_quota("COST_BUDGET_USER", "5000/1h"),
            anonymous_budget: r.optional_quota("COST_BUDGET_ANONYMOUS", "500/1h"),
            api_key_budget: r.optional_quota("COST_BUDGET_API_KEY", "20000/1h"),
            introspection: r.boolean("GRAPHQL_INTROSPECTION", !production),
            graphiql: r.boolean("GRAPHIQL", !production),
            max_batch_size: r.number("GRAPHQL_MAX_BATCH_SIZE", 0usize, 0, 100),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    pub connection_init_timeout: Duration,
    pub keepalive_interval: Duration,
    pub max_message_size: usize,
    pub max_subscriptions: usize,
    /// An authenticated socket re-checks its session at least this often (it also does on every
    /// operation and whenever its user changes).
    pub reauth_interval: Duration,
    /// Authenticated sockets one user may hold open on one instance (4429 beyond).
    pub max_connections_per_user: usize,
    /// Anonymous sockets one client network may hold open on one instance (4429 beyond).
    pub max_anonymous_per_address: usize,
    /// A socket whose client does not take a message within this time is dropped (1013).
    pub send_timeout: Duration,
    /// Messages per second a socket's client may send (each KiB counts as one more), with bursts
    /// of twice as many; beyond, its socket is read more slowly.
    pub max_message_rate: u32,
    /// Sockets open at once on one instance (an upgraded socket leaves `HTTP_MAX_CONNECTIONS`);
    /// beyond, upgrades are refused with 503.
    pub max_connections: usize,
}

impl WebSocketSettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        Self {
            connection_init_timeout: r
                .duration("WS_CONNECTION_INIT_TIMEOUT", Duration::from_secs(10)),
            keepalive_interval: r.duration("WS_KEEPALIVE_INTERVAL", Duration::from_secs(15)),
            max_message_size: r.byte_size("WS_MAX_MESSAGE_SIZE", 64 * 1024),
            max_subscriptions: r.number("WS_MAX_SUBSCRIPTIONS", 100usize, 1, 10_000),
            reauth_interval: r.duration("WS_REAUTH_INTERVAL", Duration::from_secs(60)),
            max_connections_per_user: r.number(
                "WS_MAX_CONNECTIONS_PER_USER",
                20usize,
                1,
                1_000_000,
            ),
            max_anonymous_per_address: r.number(
                "WS_MAX_ANONYMOUS_PER_ADDRESS",
                50usize,
                1,
                1_000_000,
            ),
            send_timeout: r.duration("WS_SEND_TIMEOUT", Duration::from_secs(10)),
            max_message_rate: r.number("WS_MAX_MESSAGE_RATE", 100u32, 1, 1_000_000),
            max_connections: r.number("WS_MAX_CONNECTIONS", 10_000usize, 1, 1_000_000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `max-age` in seconds for anonymous query responses without a schema hint.
    pub public_max_age: u32,
    /// `max-age` in seconds for authenticated query responses (always `private`).
    pub private_max_age: u32,
    /// The server-side response cache (`docs/caching.md`).
    pub responses: bool,
    /// Entries the response cache holds at most (least recently used evicted).
    pub response_max_entries: usize,
    /// Whether query responses say what the response cache did (`extensions.cache`).
    pub response_extensions: bool,
}

impl CacheSettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let seconds = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Self {
            public_max_age: seconds(r.duration_or_zero(
                "CACHE_PUBLIC_MAX_AGE",
                Duration::ZERO,
                YEAR,
            )),
            private_max_age: seconds(r.duration_or_zero(
                "CACHE_PRIVATE_MAX_AGE",
                Duration::ZERO,
                YEAR,
            )),
            responses: r.boolean("RESPONSE_CACHE", true),
            response_max_entries: r.number(
                "RESPONSE_CACHE_MAX_ENTRIES",
                10_000usize,
                1,
                10_000_000,
            ),
            response_extensions: r.boolean("RESPONSE_CACHE_EXTENSIONS", false),
        }
    }
}

/// Which requests CSRF prevention guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfMode {
    Off,
    /// Requests a browser could send cross-site *with credentials it attaches by itself*
    /// (cookies, HTTP Basic, the configured ambient headers). Bearer tokens and anonymous calls
    /// are not ambient: a cross-site page cannot make the browser add them.
    Ambient,
    /// Every request a browser could send cross-site without a preflight (Apollo Router's rule).
    Strict,
}

#[derive(Debug, Clone)]
pub struct CsrfSettings {
    pub mode: CsrfMode,
    /// Any of these (non-empty) marks a request as not sendable cross-site without a preflight.
    pub headers: Vec<String>,
    /// Headers a deployment's infrastructure attaches by itself (a client certificate forwarded
    /// by the proxy, say): their presence makes a request's credentials ambient.
    pub ambient_headers: Vec<String>,
}

impl CsrfSettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let text = r.string("CSRF_PREVENTION", "ambient").to_ascii_lowercase();
        let mode = match text.as_str() {
            "ambient" | "true" | "on" => CsrfMode::Ambient,
            "strict" => CsrfMode::Strict,
            "off" | "false" => CsrfMode::Off,
            other => {
                r.fail(
                    "CSRF_PREVENTION",
                    format!("must be ambient, strict or off, got {other:?}"),
                );
                CsrfMode::Ambient
            }
        };
        let mut headers = vec![
            "apollo-require-preflight".to_owned(),
            "x-apollo-operation-name".to_owned(),
        ];
        headers.extend(
            r.list("CSRF_REQUIRED_HEADERS")
                .into_iter()
                .map(|h| h.to_ascii_lowercase()),
        );
        let ambient_headers = r
            .list("CSRF_AMBIENT_HEADERS")
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self {
            mode,
            headers,
            ambient_headers,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistedQueryMode {
    Off,
    /// Apollo automatic persisted queries: any document may be registered by its hash.
    Apq,
    /// Only documents from the manifest run.
    Safelist,
}

#[derive(Debug, Clone)]
pub struct PersistedQuerySettings {
    pub mode: PersistedQueryMode,
    /// hash → document, from `PERSISTED_QUERIES_MANIFEST` (required for `safelist`).
    pub manifest: Arc<BTreeMap<String, String>>,
    pub manifest_path: Option<PathBuf>,
    /// How long a registered APQ document is kept after its last use.
    pub apq_ttl: Duration,
    /// Registered documents kept at most (least recently used evicted first).
    pub max_entries: usize,
    /// Registrations per principal and window.
    pub registrations: Quota,
}

impl PersistedQuerySettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let text = r.string("PERSISTED_QUERIES", "apq").to_ascii_lowercase();
        let mode = match text.as_str() {
            "apq" => PersistedQueryMode::Apq,
            "off" => PersistedQueryMode::Off,
            "safelist" => PersistedQueryMode::Safelist,
            other => {
                r.fail(
                    "PERSISTED_QUERIES",
                    format!("must be off, apq or safelist, got {other:?}"),
                );
                PersistedQueryMode::Apq
            }
        };
        let manifest_path = r.optional("PERSISTED_QUERIES_MANIFEST").map(PathBuf::from);
        let manifest = match &manifest_path {
            Some(path) => {
                let loaded = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|text| {
                        parse_manifest(&text).map_err(|p| format!("{}: {p}", path.display()))
                    });
                match loaded {
                    Ok(manifest) => {
                        r.record(
                            "PERSISTED_QUERIES_MANIFEST",
                            format!("{} ({} documents)", path.display(), manifest.len()),
                            false,
                        );
                        manifest
                    }
                    Err(problem) => {
                        r.fail("PERSISTED_QUERIES_MANIFEST", problem);
                        BTreeMap::new()
                    }
                }
            }
            None => {
                if mode == PersistedQueryMode::Safelist {
                    r.fail(
                        "PERSISTED_QUERIES_MANIFEST",
                        "is required with PERSISTED_QUERIES=safelist",
                    );
                }
                BTreeMap::new()
            }
        };
        Self {
            mode,
            manifest: Arc::new(manifest),
            manifest_path,
            apq_ttl: r.duration("APQ_TTL", Duration::from_secs(24 * 3600)),
            max_entries: r.number("APQ_MAX_ENTRIES", 2_000usize, 1, 1_000_000),
            registrations: r.quota("APQ_REGISTRATIONS", "30/1m"),
        }
    }
}

/// Reads a manifest: Apollo's `{"format":"apollo-persisted-query-manifest","operations":[{"id",
/// "body"}]}` or a plain `{"<sha256>": "<document>"}` map (graphql-codegen's client preset). Every
/// id must be the SHA-256 of its document.
///
/// # Errors
/// What is wrong with the manifest.
pub fn parse_manifest(text: &str) -> Result<BTreeMap<String, String>, String> {
    use sha2::{Digest as _, Sha256};
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    if let Some(operations) = value.get("operations").and_then(|o| o.as_array()) {
        for operation in operations {
            let id = operation.get("id").and_then(|v| v.as_str());
            let body = operation.get("body").and_then(|v| v.as_str());
            match (id, body) {
                (Some(id), Some(body)) => {
                    out.insert(id.to_ascii_lowercase(), body.to_owned());
                }
                _ => return Err("has an operation without id and body".into()),
            }
        }
    } else if let Some(map) = value.as_object() {
        for (id, body) in map {
            let body = body
                .as_str()
                .ok_or("maps a hash to something other than a document")?;
            out.insert(id.to_ascii_lowercase(), body.to_owned());
        }
    } else {
        return Err("is neither an Apollo manifest nor a hash → document map".into());
    }
    for (id, body) in &out {
        if hex::encode(Sha256::digest(body.as_bytes())) != *id {
            return Err(format!("lists {id} with a document whose SHA-256 differs"));
        }
    }
    Ok(out)
}
