//! `APP_HOST`, `APP_PORT`, `PUBLIC_URL` and the HTTP server's limits.

use std::net::IpAddr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    pub public_url: Url,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Exact origins allowed by CORS; empty means no cross-origin access.
    pub cors_origins: Vec<String>,
    pub metrics_token: Option<SecretString>,
    pub health_check_timeout: Duration,
    /// How old a dependency check or scrape-time gauge may be when `/health/ready` or
    /// `/metrics` answers; probes that arrive while one runs share it.
    pub health_check_max_age: Duration,
    /// Connections the kernel queues for the accept loop (capped by `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// How long a client may take to send a request's head once it began (or, for the first
    /// request, from connecting).
    pub header_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Bytes of one request's head (request line and headers); beyond, 431.
    pub max_header_size: usize,
    /// Response compression (gzip, brotli), or `None` when it is off.
    pub compression: Option<CompressionSettings>,
}

/// When and how hard responses are compressed.
#[derive(Debug, Clone, Copy)]
pub struct CompressionSettings {
    /// Bodies smaller than this go as they are: they fit a packet or two anyway, and compressing
    /// them costs more CPU than the bytes it saves.
    pub min_size: usize,
    /// gzip 1–9, brotli 0–11 (one level for both; clamped to each one's range).
    pub level: u8,
    /// Bytes of GraphQL bodies kept compressed (`http::compression`), with their originals.
    pub cache_size: usize,
}

fn display_host(host: IpAddr) -> String {
    match host {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl HttpSettings {
    /// `None` only when a problem was recorded (the settings are then refused as a whole).
    pub fn read(r: &mut Reader<'_>, production: bool) -> Option<Self> {
        let host = r.parse(
            "APP_HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        );
        let port = r.parse("APP_PORT", 8080u16, "a port number from 0 to 65535");
        let default_url = format!("http://{}:{port}/", display_host(host));
        let public_url = r.http_url("PUBLIC_URL", Some(&default_url));
        let metrics_token = r.secret("METRICS_TOKEN");
        if production && metrics_token.is_none() {
            // Metrics name users' operations, routes and error rates: not for the public.
            r.fail(
                "METRICS_TOKEN",
                "is required in production (Prometheus sends it as a bearer token)",
            );
        }
        let cors_origins: Vec<String> = r
            .list("CORS_ORIGINS")
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        for origin in &cors_origins {
            let valid = origin != "*"
                && Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.has_host() && u.path() == "/"
                });
            if !valid {
                r.fail(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not an origin such as https://app.example.com"),
                );
            }
        }
        let body_limit = r.byte_size("HTTP_BODY_LIMIT", 1024 * 1024);
        let request_timeout = r.duration("HTTP_REQUEST_TIMEOUT", Duration::from_secs(30));
        let shutdown_timeout = r.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30));
        let health_check_timeout = r.duration("HEALTH_CHECK_TIMEOUT", Duration::from_secs(2));
        let health_check_max_age = r.duration_or_zero(
            "HEALTH_CHECK_MAX_AGE",
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        // Not the standard library's 128: a burst of clients (sockets reconnecting after a
        // deploy) would overflow it, and each dropped SYN costs its client a second or more.
        let listen_backlog = r.number("HTTP_LISTEN_BACKLOG", 4096u32, 16, 65535);
        let header_timeout = r.duration("HTTP_HEADER_TIMEOUT", Duration::from_secs(10));
        // Longer than the idle timeouts of common load balancers (60 s), which must close an
        // idle connection before the server does, or a request sent on it as it closes is lost.
        let idle_timeout = r.duration("HTTP_IDLE_TIMEOUT", Duration::from_secs(75));
        let max_connections = r.number("HTTP_MAX_CONNECTIONS", 10_000usize, 1, 1_000_000);
        let max_header_size = r.byte_size("HTTP_MAX_HEADER_SIZE", 64 * 1024);
        // hyper's HTTP/1 reader needs at least this much buffer.
        if !(8 * 1024..=16 * 1024 * 1024).contains(&max_header_size) {
            r.fail("HTTP_MAX_HEADER_SIZE", "must be from 8KiB to 16MiB");
        }
        let compression = r
            .boolean("HTTP_COMPRESSION", true)
            .then(|| CompressionSettings {
                min_size: r.byte_size("HTTP_COMPRESSION_MIN_SIZE", 1024),
                // Brotli's own default, 11, spends milliseconds on a response of a few KiB; 4 is
                // what CDNs use for dynamic content, and gzip 4 is close to its default 6 in size.
                level: r.number("HTTP_COMPRESSION_LEVEL", 4u8, 1, 11),
                cache_size: r.byte_size("HTTP_COMPRESSION_CACHE_SIZE", 16 * 1024 * 1024),
            });
        Some(Self {
            host,
            port,
            public_url: public_url?,
            body_limit,
            request_timeout,
            shutdown_timeout,
            cors_origins,
            metrics_token,
            health_check_timeout,
            health_check_max_age,
            listen_backlog,
            header_timeout,
            idle_timeout,
            max_connections,
            max_header_size,
            compression,
        })
    }
}
