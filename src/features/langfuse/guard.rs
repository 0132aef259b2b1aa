//! Where a Langfuse check may connect: the host's shape (https; http only to loopback outside
//! production) and, where private hosts are blocked, the addresses it resolves to — checked when
//! settings are saved **and again at connect time** by the client's own resolver, so a name that
//! resolves to a public address at save time and to `169.254.169.254` later (DNS rebinding)
//! still cannot be reached. The test button is no SSRF probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::config::LangfuseConfig;

/// Whether an address is one a public service has: not loopback, private, link-local (cloud
/// metadata lives there), carrier-grade NAT, unspecified, broadcast, multicast, documentation or
/// unique-local.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

/// The address policy of one configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    block_private: bool,
    allowed_hosts: Vec<String>,
    allowed_nets: Vec<ipnet::IpNet>,
}

impl Policy {
    pub fn new(config: &LangfuseConfig) -> Self {
        let (nets, hosts): (Vec<&String>, Vec<&String>) =
            config.host_allowlist.iter().partition(|entry| {
                entry.parse::<ipnet::IpNet>().is_ok() || entry.parse::<IpAddr>().is_ok()
            });
        Self {
            block_private: config.block_private_hosts,
            allowed_hosts: hosts.into_iter().cloned().collect(),
            allowed_nets: nets
                .into_iter()
                .filter_map(|entry| {
                    entry
                        .parse::<ipnet::IpNet>()
                        .ok()
                        .or_else(|| entry.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
                })
                .collect(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|h| h == &host.to_ascii_lowercase())
    }

    /// Whether `ip` may be connected to for `host`.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        !self.block_private
            || is_public(ip)
            || self.host_allowed(host)
            || self.allowed_nets.iter().any(|net| net.contains(&ip))
    }

    /// Resolves `url`'s host now and refuses it unless every address is allowed (at save
    /// time; the client checks again at connect time).
    ///
    /// # Errors
    /// The message to show for the `host` field.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), String> {
        if !self.block_private {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            _ => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.map(|a| a.ip()).collect(),
                Err(_) => return Err("does not resolve".into()),
            },
        };
        if addresses.is_empty() {
            return Err("does not resolve".into());
        }
        if addresses.iter().all(|ip| self.allows(host, *ip)) {
            Ok(())
        } else {
            Err(
                "resolves to a private, loopback, link-local or metadata address; \
                 list it in LANGFUSE_HOST_ALLOWLIST to allow it"
                    .into(),
            )
        }
    }
}

/// The client's resolver: the system's, keeping only the addresses the policy allows (an
/// empty answer fails the connection).
pub struct GuardedResolver(pub Arc<Policy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| policy.allows(&host, address.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves to no address Langfuse checks may reach",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addresses: Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "35.190.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
