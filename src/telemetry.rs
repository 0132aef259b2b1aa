//! Process-wide logging for the binary: JSON lines in production, readable text in development.
//! Tests never install a global subscriber.
//!
//! Every line passes through [`Redacting`], so a field named like a credential (password, token,
//! secret, authorization, cookie, api key) never reaches the log, whoever logs it.

use std::io::{self, Write};

use serde_json::Value;
use tokio::task::futures::TaskLocalFuture;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, Settings};

pub mod otel;

/// The id of the HTTP request (or WebSocket connection) a piece of work belongs to.
///
/// Shared, not copied: the request's extensions, its task and its GraphQL context each hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub std::sync::Arc<str>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

tokio::task_local! {
    static CURRENT_REQUEST: RequestId;
}

/// Runs `work` as part of request `id`: error bodies built inside it carry the id.
///
/// A plain function, not an `async fn`: that would keep `work` twice (as its argument and as
/// the future it awaits), which long-lived work like a WebSocket would pay for all its life.
pub fn in_request<F: Future>(id: RequestId, work: F) -> TaskLocalFuture<RequestId, F> {
    CURRENT_REQUEST.scope(id, work)
}

/// The id of the request the current task works for, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST.try_with(|id| id.as_str().to_owned()).ok()
}

const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
];
const REDACTED: &str = "[REDACTED]";

/// Where log lines go: the server logs to stdout (one stream for a container's collector); other
/// commands log to stderr, so their results on stdout can be piped without log lines in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    fn writer(self) -> Box<dyn Write> {
        match self {
            Self::Stdout => Box::new(io::stdout()),
            Self::Stderr => Box::new(io::stderr()),
        }
    }
}

/// Installs the global subscriber writing to `stream` (and, when `OTEL_*` says so, exporting
/// traces). A second call is a no-op.
pub fn init(settings: &Settings, stream: LogStream) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let tracing = match otel::build(&settings.telemetry) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("traces are off: {error:#}");
            None
        }
    };
    let Some(tracing) = tracing else {
        // Traces off: the plain formatter, exactly as before traces existed (no layer to skip).
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_span_events(FmtSpan::NONE)
            .with_target(true);
        let _ = match settings.log_format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(Redacting::new(move || stream.writer(), LogFormat::Json))
                .try_init(),
            LogFormat::Pretty => builder
                .compact()
                .with_writer(Redacting::new(move || stream.writer(), LogFormat::Pretty))
                .try_init(),
        };
        return;
    };
    // `LOG_LEVEL` filters the lines written, not the spans traced: each layer has its own
    // filter, so a server logging only warnings still exports its (INFO) spans.
    let otel_layer = otel::layer(&tracing).with_filter(LevelFilter::INFO);
    otel::install_global(tracing);
    let fmt = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(otel_layer);
    let _ = match settings.log_format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(Redacting::new(move || stream.writer(), LogFormat::Json))
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt.compact()
                    .with_writer(Redacting::new(move || stream.writer(), LogFormat::Pretty))
                    .with_filter(filter),
            )
            .try_init(),
    };
}

fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|word| key.contains(word))
}

fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_sensitive(key) {
                    *value = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// Redacts `key=value` pairs of the text format (values end at the next space).
fn redact_text(line: &str) -> String {
    line.split(' ')
        .map(|token| match token.split_once('=') {
            Some((key, _)) if is_sensitive(key) => format!("{key}={REDACTED}"),
            _ => token.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Redacts one formatted log record (one or more lines).
pub fn redact(record: &str, format: LogFormat) -> String {
    record
        .split_inclusive('\n')
        .map(|line| {
            let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
            let redacted = match format {
                LogFormat::Json => match serde_json::from_str::<Value>(body) {
                    Ok(mut value) => {
                        redact_json(&mut value);
                        value.to_string()
                    }
                    Err(_) => redact_text(body),
                },
                LogFormat::Pretty => redact_text(body),
            };
            format!("{redacted}{end}")
        })
        .collect()
}

/// A `MakeWriter` whose writers redact each record before it reaches `inner`.
pub struct Redacting<F> {
    make_inner: F,
    format: LogFormat,
}

impl<F> Redacting<F> {
    pub fn new(make_inner: F, format: LogFormat) -> Self {
        Self { make_inner, format }
    }
}

impl<'a, F, W> MakeWriter<'a> for Redacting<F>
where
    F: Fn() -> W + 'static,
    W: Write,
{
    type Writer = RedactingWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: (self.make_inner)(),
            format: self.format,
        }
    }
}

pub struct RedactingWriter<W> {
    inner: W,
    format: LogFormat,
}

impl<W: Write> Write for RedactingWriter<W> {
    /// The formatter writes each record with one call, so a call is a whole record.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(redact(&text, self.format).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_named_like_credentials_are_redacted_at_any_depth() {
        let line = r#"{"message":"x","password":"hunter2","span":{"access_token":"abc","user_id":"u1"},"list":[{"Cookie":"c"}]}"#;
        let out = redact(&format!("{line}\n"), LogFormat::Json);
        assert!(out.ends_with('\n'));
        for secret in ["hunter2", "abc", "\"c\""] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("u1"));
    }

    #[test]
    fn text_pairs_named_like_credentials_are_redacted() {
        let out = redact(
            "INFO x: login api_key=k1 user=bob client_secret=s2\n",
            LogFormat::Pretty,
        );
        assert_eq!(
            out,
            "INFO x: login api_key=[REDACTED] user=bob client_secret=[REDACTED]\n"
        );
    }
}
