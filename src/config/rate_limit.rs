//! Request rate limits (`RATE_LIMIT_*`, `TRUSTED_PROXIES`) and the grammar of their rules.

use super::reader::{Quota, Reader};

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// A GraphQL root field (`login`): operations selecting it count against the rule.
    Field(String),
    /// A path prefix (`/auth/oauth`).
    Path(String),
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub user: Quota,
    pub anonymous: Quota,
    /// Per API key (machine clients).
    pub api_key: Quota,
    pub rules: Vec<(RuleTarget, Quota)>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The network size an IPv6 client is counted as (`RATE_LIMIT_IPV6_PREFIX`, bits).
    pub ipv6_prefix: u8,
    /// Clients never limited.
    pub allowlist: Vec<ipnet::IpNet>,
    /// Refuse (503) instead of letting requests through when the store is unreachable.
    pub fail_closed: bool,
}

/// One rule: `login=5/1m` (a root field) or `path:/auth/oauth=10/1m` (a path prefix).
pub fn parse_rule(entry: &str) -> Option<(RuleTarget, Quota)> {
    let (target, quota) = entry.split_once('=')?;
    let target = target.trim();
    let target = match target.strip_prefix("path:") {
        Some(path) if path.starts_with('/') => RuleTarget::Path(path.to_owned()),
        Some(_) => return None,
        None if !target.is_empty()
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            RuleTarget::Field(target.to_owned())
        }
        None => return None,
    };
    Quota::parse(quota).map(|q| (target, q))
}

/// The rules on by default: the fields a password guesser or a mail bomber would call.
pub const DEFAULT_RULES: &str = "login=5/1m,register=5/1m,requestPasswordReset=5/1m";

impl RateLimitSettings {
    /// Production defaults are strict (20/1m anonymous, 100/1m signed in, 300/1m per API key); development ones
    /// generous, so exploring the API in GraphiQL is not throttled.
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let enabled = r.boolean("RATE_LIMIT_ENABLED", true);
        let (user, anonymous) = if production {
            ("100/1m", "20/1m")
        } else {
            ("1000/1m", "600/1m")
        };
        let user = r.quota("RATE_LIMIT_USER", user);
        let anonymous = r.quota("RATE_LIMIT_ANONYMOUS", anonymous);
        let api_key = r.quota(
            "RATE_LIMIT_API_KEY",
            if production { "300/1m" } else { "1000/1m" },
        );
        let mut rules = vec![];
        let text = r.string("RATE_LIMIT_RULES", DEFAULT_RULES);
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_rule(entry) {
                Some(rule) => rules.push(rule),
                None => r.fail(
                    "RATE_LIMIT_RULES",
                    format!("{entry:?} is not field=N/window or path:/prefix=N/window"),
                ),
            }
        }
        Self {
            enabled,
            user,
            anonymous,
            api_key,
            rules,
            trusted_proxies: r.cidrs("TRUSTED_PROXIES"),
            ipv6_prefix: r.number("RATE_LIMIT_IPV6_PREFIX", 64u8, 32, 128),
            allowlist: r.cidrs("RATE_LIMIT_ALLOWLIST"),
            fail_closed: r.boolean("RATE_LIMIT_FAIL_CLOSED", false),
        }
    }
}
