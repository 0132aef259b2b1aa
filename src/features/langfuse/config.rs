//! The feature's settings (`LANGFUSE_*`).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Environment, Quota, Reader, Section};
use crate::features::audit::settings::schedule;
use crate::infra::scheduler::Every;

#[derive(Debug, Clone)]
pub struct LangfuseConfig {
    /// How often every enabled setting is checked (an interval or a cron expression).
    pub check_interval: Every,
    /// Consecutive failed checks that turn a setting `DOWN`.
    pub alert_after: u32,
    /// Checks run at once by the monitor.
    pub concurrency: usize,
    /// The whole of one check (health, then projects).
    pub timeout: Duration,
    /// Refuse hosts that resolve to loopback, private, link-local or metadata addresses (on by
    /// default in production), at save time and at connect time.
    pub block_private_hosts: bool,
    /// Hosts (names, or CIDRs of addresses) allowed even so: a self-hosted Langfuse inside the
    /// network.
    pub host_allowlist: Vec<String>,
    /// Connection tests per organization.
    pub test_limit: Quota,
}

impl LangfuseConfig {
    pub fn for_tests() -> Self {
        Self {
            check_interval: Every::Interval(Duration::from_secs(300)),
            alert_after: 3,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            block_private_hosts: false,
            host_allowlist: vec![],
            test_limit: Quota {
                limit: 10,
                window: Duration::from_secs(60),
            },
        }
    }
}

fn read(r: &mut Reader<'_>, environment: Environment) -> Arc<dyn Any + Send + Sync> {
    let production = environment == Environment::Production;
    let host_allowlist = r
        .string("LANGFUSE_HOST_ALLOWLIST", "")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    Arc::new(LangfuseConfig {
        check_interval: schedule(r, "LANGFUSE_CHECK_INTERVAL", "5m"),
        alert_after: r.number("LANGFUSE_ALERT_AFTER", 3u32, 1, 100),
        concurrency: r.number("LANGFUSE_CHECK_CONCURRENCY", 8usize, 1, 64),
        timeout: r.duration("LANGFUSE_TIMEOUT", Duration::from_secs(10)),
        block_private_hosts: r.boolean("LANGFUSE_BLOCK_PRIVATE_HOSTS", production),
        host_allowlist,
        test_limit: r.quota("LANGFUSE_TEST_LIMIT", "10/1m"),
    })
}

pub const SECTION: Section = Section {
    name: "langfuse",
    read,
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read_in(environment: Environment, vars: &[(&str, &str)]) -> LangfuseConfig {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut reader = Reader::new(&vars);
        let value = read(&mut reader, environment);
        value
            .downcast_ref::<LangfuseConfig>()
            .cloned()
            .expect("a LangfuseConfig")
    }

    #[test]
    fn private_hosts_are_blocked_by_default_in_production_only() {
        assert!(read_in(Environment::Production, &[]).block_private_hosts);
        assert!(!read_in(Environment::Development, &[]).block_private_hosts);
        assert!(
            !read_in(
                Environment::Production,
                &[("LANGFUSE_BLOCK_PRIVATE_HOSTS", "false")]
            )
            .block_private_hosts
        );
        let allowed = read_in(
            Environment::Production,
            &[("LANGFUSE_HOST_ALLOWLIST", "Langfuse.internal, 10.1.0.0/16")],
        );
        assert_eq!(allowed.host_allowlist, ["langfuse.internal", "10.1.0.0/16"]);
    }
}
