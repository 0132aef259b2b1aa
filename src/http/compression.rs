//! Response compression for GraphQL bodies, compressed once per distinct body.
//!
//! The hottest GraphQL responses are the same bytes again and again (a cached list, the viewer),
//! and compressing a body of a few KiB costs tens of microseconds — more than answering it from
//! the response cache. So a body is compressed once per coding and the result kept in a memo
//! bounded in bytes, keyed by the body itself: a hit is a hash, a comparison of the bytes and a
//! reference count. Keyed by content, the memo needs no invalidation and can never hand one
//! caller another's data (a hash collision is compared away).
//!
//! Bodies under `HTTP_COMPRESSION_MIN_SIZE` go as they are; bodies too large for the memo are
//! compressed for their response alone. This is the only compression `/graphql` has: the
//! compression layer (`super::router`) is on every other route, not on this one. tower-http's
//! response body holds every coder's state inline (5.8 KiB), and the layers above moved and boxed
//! it for every response, compressed or not: about a tenth of the instructions of a 304
//! (docs/benchmarks.md).

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use lru::LruCache;

use crate::config::CompressionSettings;
use crate::infra::metrics::Metrics;

/// A content coding this module produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// The coding `Accept-Encoding` prefers among gzip and brotli (RFC 9110 §12.5.3: the highest
/// `q`, a listed coding over `*`, brotli on a tie), or `None` when it accepts neither.
pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    Qualities::of(headers).preferred()
}

/// Nothing this server sends is acceptable: `Accept-Encoding` refuses the identity coding
/// (`identity;q=0`, or `*;q=0` without identity listed) and accepts neither gzip nor brotli.
/// Answered with 406 (RFC 9110 §12.5.3), whether compression is on or off.
pub fn nothing_acceptable(headers: &HeaderMap) -> bool {
    if !headers.contains_key(header::ACCEPT_ENCODING) {
        return false;
    }
    let qualities = Qualities::of(headers);
    qualities.identity.or(qualities.any).unwrap_or(1.0) <= 0.0
        && qualities.brotli.or(qualities.any).unwrap_or(0.0) <= 0.0
        && qualities.gzip.or(qualities.any).unwrap_or(0.0) <= 0.0
}

/// The `q` of each coding `Accept-Encoding` names.
#[derive(Default)]
struct Qualities {
    brotli: Option<f32>,
    gzip: Option<f32>,
    identity: Option<f32>,
    any: Option<f32>,
}

impl Qualities {
    fn of(headers: &HeaderMap) -> Self {
        let mut qualities = Self::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or_default().trim();
                let mut q = 1.0_f32;
                for parameter in parts {
                    if let Some((key, value)) = parameter.split_once('=')
                        && key.trim().eq_ignore_ascii_case("q")
                    {
                        q = value.trim().parse().unwrap_or(0.0);
                    }
                }
                let slot = if name.eq_ignore_ascii_case("br") {
                    &mut qualities.brotli
                } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                    &mut qualities.gzip
                } else if name.eq_ignore_ascii_case("identity") {
                    &mut qualities.identity
                } else if name == "*" {
                    &mut qualities.any
                } else {
                    continue;
                };
                *slot = Some(q);
            }
        }
        qualities
    }

    fn preferred(&self) -> Option<Coding> {
        let brotli = self.brotli.or(self.any).unwrap_or(0.0);
        let gzip = self.gzip.or(self.any).unwrap_or(0.0);
        // A client that prefers no coding at all gets none.
        if self
            .identity
            .is_some_and(|identity| identity > brotli.max(gzip))
        {
            None
        } else if brotli > 0.0 && brotli >= gzip {
            Some(Coding::Brotli)
        } else if gzip > 0.0 {
            Some(Coding::Gzip)
        } else {
            None
        }
    }
}

struct Variant {
    body: Bytes,
    encoded: Bytes,
}

/// Compressed bodies, most recently used kept, within a budget of bytes (bodies and their
/// compressed forms counted).
pub struct CompressionMemo {
    settings: Option<CompressionSettings>,
    inner: Mutex<Memo>,
}

struct Memo {
    entries: LruCache<(u64, Coding), Arc<Variant>>,
    bytes: usize,
}

impl CompressionMemo {
    pub fn new(settings: Option<CompressionSettings>) -> Self {
        Self {
            settings,
            inner: Mutex::new(Memo {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// The largest body kept: a sixteenth of the budget (larger ones are compressed for their
    /// response alone).
    fn largest(&self) -> usize {
        self.settings.map_or(0, |s| s.cache_size / 16)
    }

    /// `response` with `body` compressed as the request asks, when it is a body this module
    /// compresses; otherwise `response` as it is. `representation`: `response` holds `body`
    /// (not a 304 or 412 answered in its place). Counted in
    /// `http_compression_total{result="kept|compressed"}`.
    ///
    /// A body that goes compressed has a weak `ETag`, and so have the 304 and 412 answered in
    /// its place: RFC 9110 §8.8.3 keeps a strong tag for one exact sequence of bytes, and the
    /// identity and compressed forms differ.
    pub fn compress(
        &self,
        request: &HeaderMap,
        body: &Bytes,
        mut response: Response,
        representation: bool,
        metrics: &Metrics,
    ) -> Response {
        let Some(settings) = self.settings else {
            return response;
        };
        if body.len() < settings.min_size
            || response.headers().contains_key(header::CONTENT_ENCODING)
        {
            return response;
        }
        let Some(coding) = negotiate(request) else {
            return response;
        };
        weaken_etag(response.headers_mut());
        if !representation || response.status() == StatusCode::NOT_MODIFIED {
            return response;
        }
        let compressed = if body.len() > self.largest() {
            encode_here(coding, settings.level, body).map(|encoded| (Bytes::from(encoded), false))
        } else {
            self.encoded(settings, coding, body)
        };
        let Some((encoded, kept)) = compressed else {
            return response;
        };
        metrics.count(
            "http_compression_total",
            "result",
            if kept { "kept" } else { "compressed" },
        );
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
        headers.remove(header::CONTENT_LENGTH);
        let varies = headers.get_all(header::VARY).iter().any(|v| {
            v.as_bytes()
                .windows(15)
                .any(|w| w.eq_ignore_ascii_case(b"accept-encoding"))
        });
        if !varies {
            headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        *response.body_mut() = Body::from(encoded);
        response
    }

    /// The compressed body, and whether it was kept from before.
    fn encoded(
        &self,
        settings: CompressionSettings,
        coding: Coding,
        body: &Bytes,
    ) -> Option<(Bytes, bool)> {
        let key = (xxhash_rust::xxh3::xxh3_64(body), coding);
        let found = self.with(|memo| memo.entries.get(&key).cloned());
        if let Some(variant) = found
            && variant.body == *body
        {
            return Some((variant.encoded.clone(), true));
        }
        let encoded = Bytes::from(encode_here(coding, settings.level, body)?);
        let variant = Arc::new(Variant {
            body: body.clone(),
            encoded: encoded.clone(),
        });
        let size = variant.body.len() + variant.encoded.len();
        self.with(|memo| {
            if let Some(old) = memo.entries.put(key, variant) {
                memo.bytes = memo
                    .bytes
                    .saturating_sub(old.body.len() + old.encoded.len());
            }
            memo.bytes += size;
            while memo.bytes > settings.cache_size {
                let Some((_, old)) = memo.entries.pop_lru() else {
                    break;
                };
                memo.bytes = memo
                    .bytes
                    .saturating_sub(old.body.len() + old.encoded.len());
            }
        });
        Some((encoded, false))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Memo) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A body from this size on is compressed with the worker's other tasks handed to another thread.
const OFF_THE_WORKER: usize = 256 * 1024;

/// [`encode`] on a request's task: from [`OFF_THE_WORKER`] bytes on (milliseconds of work) with
/// the worker's other connections handed to another thread meanwhile.
fn encode_here(coding: Coding, level: u8, body: &[u8]) -> Option<Vec<u8>> {
    if body.len() >= OFF_THE_WORKER {
        off_the_worker(|| encode(coding, level, body))
    } else {
        encode(coding, level, body)
    }
}

/// Runs `work` with this worker's other tasks handed to another thread meanwhile (on the
/// multi-threaded runtime the server runs on; elsewhere, a test's single-threaded runtime, just
/// runs it).
fn off_the_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// `"tag"` → `W/"tag"`.
fn weaken_etag(headers: &mut HeaderMap) {
    let weak = headers
        .get(header::ETAG)
        .filter(|tag| !tag.as_bytes().starts_with(b"W/"))
        .and_then(|tag| HeaderValue::from_bytes(&[b"W/", tag.as_bytes()].concat()).ok());
    if let Some(weak) = weak {
        headers.insert(header::ETAG, weak);
    }
}

/// `body` in `coding` at `level` (brotli 1–11, gzip 1–9), with a brotli window no larger than
/// the body needs (the default 4 MiB window is set up, and zeroed, for each body).
fn encode(coding: Coding, level: u8, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    match coding {
        Coding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: i32::from(level.min(11)),
                lgwin: window_bits(body.len()),
                size_hint: body.len(),
                ..Default::default()
            };
            brotli::enc::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
        }
        Coding::Gzip => {
            let level = flate2::Compression::new(u32::from(level.min(9)));
            let mut encoder = flate2::write::GzEncoder::new(out, level);
            encoder.write_all(body).ok()?;
            out = encoder.finish().ok()?;
        }
    }
    Some(out)
}

/// The brotli window (log2 of its bytes, 10–22) that holds `len` bytes.
fn window_bits(len: usize) -> i32 {
    let bits = usize::BITS - len.max(1).leading_zeros();
    i32::try_from(bits).unwrap_or(22).clamp(10, 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn negotiation_follows_the_quality_values() {
        assert_eq!(
            negotiate(&accept("gzip, deflate, br, zstd")),
            Some(Coding::Brotli)
        );
        assert_eq!(negotiate(&accept("gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("br;q=0.5, gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("br;q=0, *")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("*")), Some(Coding::Brotli));
        assert_eq!(
            negotiate(&accept("BR;Q=0.9, x-gzip;q=0.1")),
            Some(Coding::Brotli)
        );
        assert_eq!(negotiate(&accept("identity")), None);
        assert_eq!(negotiate(&accept("gzip;q=0.5, identity")), None);
        assert_eq!(
            negotiate(&accept("gzip, identity;q=0.5")),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate(&accept("gzip;q=0, br;q=0")), None);
        assert_eq!(negotiate(&accept("deflate, zstd")), None);
        assert_eq!(negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn only_a_refused_identity_with_no_coding_accepted_is_unacceptable() {
        for refusing in [
            "identity;q=0",
            "*;q=0",
            "gzip;q=0, br;q=0, identity;q=0",
            "deflate, identity;q=0",
        ] {
            assert!(nothing_acceptable(&accept(refusing)), "{refusing}");
        }
        for accepting in [
            "identity",
            "*",
            "gzip, identity;q=0",
            "*;q=0, identity",
            "br;q=0",
            "",
            "deflate",
        ] {
            assert!(!nothing_acceptable(&accept(accepting)), "{accepting}");
        }
        assert!(!nothing_acceptable(&HeaderMap::new()));
    }

    /// A large body is compressed alike on the server's multi-threaded runtime (with the
    /// worker's other tasks handed off meanwhile) and on a single-threaded one (in place).
    #[test]
    fn a_large_body_is_compressed_off_the_worker_on_either_runtime() {
        use std::io::Read as _;
        let body: Vec<u8> = (0..OFF_THE_WORKER + 1).map(|i| (i % 251) as u8).collect();
        let runtimes = [
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build(),
            tokio::runtime::Builder::new_current_thread().build(),
        ];
        for runtime in runtimes {
            let runtime = runtime.unwrap();
            let input = body.clone();
            let task =
                runtime.spawn(async move { off_the_worker(|| encode(Coding::Gzip, 4, &input)) });
            let encoded = runtime.block_on(task).unwrap().unwrap();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&encoded[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, body);
        }
    }

    #[test]
    fn the_window_holds_the_body() {
        assert_eq!(window_bits(0), 10);
        assert_eq!(window_bits(1500), 11);
        assert_eq!(window_bits(5000), 13);
        assert_eq!(window_bits(usize::MAX), 22);
    }

    #[test]
    fn the_memo_stays_within_its_budget_and_compares_bodies() {
        let settings = CompressionSettings {
            min_size: 1,
            level: 4,
            cache_size: 64 * 1024,
        };
        let memo = CompressionMemo::new(Some(settings));
        for i in 0..200 {
            let body = Bytes::from(format!("{{\"data\":{{\"n\":{i}}}}}").repeat(200));
            let (first, kept) = memo.encoded(settings, Coding::Gzip, &body).unwrap();
            assert!(!kept);
            let (again, kept) = memo.encoded(settings, Coding::Gzip, &body).unwrap();
            assert!(kept);
            assert_eq!(first, again);
            let bytes = memo.with(|m| m.bytes);
            assert!(bytes <= settings.cache_size, "{bytes} bytes kept");
        }
        // A kept variant serves only the body it was made from, even under the same key.
        let body = Bytes::from_static(b"{\"data\":{\"a\":1}}");
        let key = (xxhash_rust::xxh3::xxh3_64(&body), Coding::Gzip);
        memo.with(|m| {
            m.entries.put(
                key,
                Arc::new(Variant {
                    body: Bytes::from_static(b"something else"),
                    encoded: Bytes::from_static(b"not it"),
                }),
            )
        });
        let (encoded, kept) = memo.encoded(settings, Coding::Gzip, &body).unwrap();
        assert!(!kept);
        assert_ne!(&encoded[..], b"not it");
    }
}
