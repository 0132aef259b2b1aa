//! Reads variables from a snapshot of the environment, records every one it reads (name, value
//! as `check-config` shows it, secret or not) and every failure, instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A variable as read: what `check-config` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub name: String,
    /// The effective value, rendered; secrets and URL passwords masked.
    pub value: String,
    pub secret: bool,
}

/// A number per window (`100/1m`, `5/30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub window: Duration,
}

impl Quota {
    pub fn parse(text: &str) -> Option<Self> {
        let (limit, window) = text.trim().split_once('/')?;
        let limit: u64 = limit.trim().parse().ok().filter(|l| *l > 0)?;
        let window = humantime::parse_duration(window.trim())
            .ok()
            .filter(|w| !w.is_zero())?;
        Some(Self { limit, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }
}

pub const UNSET: &str = "(unset)";
const MASK: &str = "********";

/// Masks the password of a URL (`postgres://app:********@db/app`).
pub fn mask_url(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(MASK));
            url.to_string()
        }
        _ => value.to_owned(),
    }
}

/// A duration as settings write it: `500ms`, `30s`, `5m`, `1h 30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).ok()
}

pub struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    errors: Vec<ConfigError>,
    read: Vec<Read>,
}

impl<'a> Reader<'a> {
    pub fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Self {
            vars,
            errors: Vec::new(),
            read: Vec::new(),
        }
    }

    /// Everything read and every failure.
    pub fn finish(self) -> (Vec<Read>, Vec<ConfigError>) {
        (self.read, self.errors)
    }

    /// The raw, trimmed value, without recording it (for the typed readers below).
    fn raw(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether a variable is set (recorded by the reader that then reads it).
    pub fn is_set(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// Records how a variable is shown by `check-config`; a later record of the same name wins.
    pub fn record(&mut self, name: &str, value: impl Into<String>, secret: bool) {
        let value = value.into();
        if let Some(existing) = self.read.iter_mut().find(|r| r.name == name) {
            existing.value = value;
            existing.secret = secret;
        } else {
            self.read.push(Read {
                name: name.to_owned(),
                value,
                secret,
            });
        }
    }

    pub fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: name.to_owned(),
            message: message.into(),
        });
    }

    /// A string, or `default`.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        let value = self.raw(name).unwrap_or(default).to_owned();
        self.record(name, value.clone(), false);
        value
    }

    /// A string, or nothing.
    pub fn optional(&mut self, name: &str) -> Option<String> {
        let value = self.raw(name).map(str::to_owned);
        self.record(name, value.clone().unwrap_or_else(|| UNSET.into()), false);
        value
    }

    /// A secret: never shown.
    pub fn secret(&mut self, name: &str) -> Option<SecretString> {
        let value = self.raw(name).map(|v| SecretString::from(v.to_owned()));
        self.record(name, if value.is_some() { MASK } else { UNSET }, true);
        value
    }

    /// A URL that may carry a password: shown masked.
    pub fn url(&mut self, name: &str) -> Option<String> {
        let value = self.raw(name).map(str::to_owned);
        let shown = value.as_deref().map_or_else(|| UNSET.into(), mask_url);
        self.record(name, shown, false);
        value
    }

    pub fn parse<T: FromStr + fmt::Display>(&mut self, name: &str, default: T, what: &str) -> T {
        let value = match self.raw(name) {
            None => default,
            Some(value) => match value.parse() {
                Ok(parsed) => parsed,
                Err(_) => {
                    self.fail(name, format!("must be {what}, got {value:?}"));
                    default
                }
            },
        };
        self.record(name, value.to_string(), false);
        value
    }

    pub fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let what = format!("a whole number from {min} to {max}");
        let value = self.parse(name, default, &what);
        if value < min || value > max {
            self.fail(name, format!("must be {what}, got {value}"));
            self.record(name, default.to_string(), false);
            return default;
        }
        value
    }

    pub fn boolean(&mut self, name: &str, default: bool) -> bool {
        let value = match self.raw(name).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.fail(name, format!("must be true or false, got {other:?}"));
                default
            }
        };
        self.record(name, value.to_string(), false);
        value
    }

    /// A positive duration (`500ms`, `30s`, `5m`, or bare seconds).
    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        let value = match self.raw(name) {
            None => default,
            Some(value) => match parse_duration(value) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.fail(
                        name,
                        format!(
                            "must be a positive duration such as 30s, 500ms or 60 (seconds), got {value:?}"
                        ),
                    );
                    default
                }
            },
        };
        self.record(name, humantime::format_duration(value).to_string(), false);
        value
    }

    /// A duration that may be zero (`0`, `0s`), within `max`.
    pub fn duration_or_zero(&mut self, name: &str, default: Duration, max: Duration) -> Duration {
        let value = match self.raw(name) {
            None => default,
            Some(value) => match parse_duration(value) {
                Some(d) if d <= max => d,
                _ => {
                    self.fail(
                        name,
                        format!(
                            "must be a duration from 0 to {} such as 60s, 5m or 300 (seconds), got {value:?}",
                            humantime::format_duration(max)
                        ),
                    );
                    default
                }
            },
        };
        self.record(name, humantime::format_duration(value).to_string(), false);
        value
    }

    pub fn byte_size(&mut self, name: &str, default: usize) -> usize {
        let value = match self.raw(name) {
            None => default,
            Some(value) => {
                let lower = value.to_ascii_lowercase();
                let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
                    Some(i) => lower.split_at(i),
                    None => (lower.as_str(), ""),
                };
                let factor = match unit.trim() {
                    "" | "b" => Some(1),
                    "k" | "kb" | "kib" => Some(1024),
                    "m" | "mb" | "mib" => Some(1024 * 1024),
                    _ => None,
                };
                match (digits.parse::<usize>(), factor) {
                    (Ok(n), Some(f)) if n > 0 => n.saturating_mul(f),
                    _ => {
                        self.fail(
                            name,
                            format!(
                                "must be a size such as 1048576, 512KiB or 1MiB, got {value:?}"
                            ),
                        );
                        default
                    }
                }
            }
        };
        self.record(name, value.to_string(), false);
        value
    }

    /// A number per window (`3/1h`).
    pub fn quota(&mut self, name: &str, default: &str) -> Quota {
        let text = self.raw(name).unwrap_or(default).to_owned();
        let fallback = || {
            Quota::parse(default).unwrap_or(Quota {
                limit: 1,
                window: Duration::from_secs(60),
            })
        };
        let value = Quota::parse(&text).unwrap_or_else(|| {
            self.fail(
                name,
                format!("must be count/window such as 100/1m, got {text:?}"),
            );
            fallback()
        });
        self.record(name, value.to_string(), false);
        value
    }

    /// A quota, or `off`.
    pub fn optional_quota(&mut self, name: &str, default: &str) -> Option<Quota> {
        let text = self.raw(name).unwrap_or(default).to_owned();
        let value = if text.eq_ignore_ascii_case("off") {
            None
        } else {
            Quota::parse(&text).or_else(|| {
                self.fail(
                    name,
                    format!("must be points/window such as 5000/1h, or off, got {text:?}"),
                );
                None
            })
        };
        self.record(
            name,
            value.map_or_else(|| "off".to_owned(), |q| q.to_string()),
            false,
        );
        value
    }

    /// A comma-separated list of trimmed, non-empty items.
    pub fn list(&mut self, name: &str) -> Vec<String> {
        let items: Vec<String> = self
            .raw(name)
            .unwrap_or_default()
            .split(',')
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect();
        self.record(name, items.join(","), false);
        items
    }

    /// Comma-separated IP addresses or CIDRs.
    pub fn cidrs(&mut self, name: &str) -> Vec<ipnet::IpNet> {
        let mut out = vec![];
        for entry in self.list(name) {
            let parsed = entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net),
                Err(_) => self.fail(
                    name,
                    format!("{entry:?} is not an IP address or CIDR such as 10.0.0.0/8"),
                ),
            }
        }
        out
    }

    /// An absolute http(s) URL, or `default`.
    pub fn http_url(&mut self, name: &str, default: Option<&str>) -> Option<Url> {
        let value = self.raw(name).or(default);
        let parsed = value.and_then(|v| {
            Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        });
        if value.is_some() && parsed.is_none() {
            self.fail(name, "must be an absolute http(s) URL");
        }
        self.record(
            name,
            parsed
                .as_ref()
                .map_or_else(|| UNSET.to_owned(), Url::to_string),
            false,
        );
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn every_read_is_recorded_and_secrets_are_masked() {
        let vars = BTreeMap::from([
            ("A_SECRET".to_owned(), "hunter2".to_owned()),
            ("A_URL".to_owned(), "postgres://u:hunter2@db/x".to_owned()),
        ]);
        let mut r = Reader::new(&vars);
        r.secret("A_SECRET");
        r.url("A_URL");
        r.boolean("A_FLAG", true);
        let (read, errors) = r.finish();
        assert!(errors.is_empty());
        let text = format!("{read:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            read.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["A_SECRET", "A_URL", "A_FLAG"]
        );
    }
}
