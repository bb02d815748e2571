//! The SSRF guard: webhooks must not become a way into the platform's own
//! network.
//!
//! - Only `https` URLs, unless dev mode allows `http`.
//! - Host names are resolved and refused if any address is loopback,
//!   private (RFC 1918, RFC 4193), link-local, CGNAT, unspecified,
//!   multicast, broadcast, reserved or documentation space, including the
//!   same addresses wrapped in IPv6 (IPv4-mapped, IPv4-compatible, NAT64,
//!   6to4) — unless `allow_private` (development and tests).
//! - The HTTP client resolves through [`GuardedResolver`], so a request
//!   connects only to addresses that passed the check at connection time (a
//!   DNS answer that changes between check and connect does not matter).
//!   IP-literal hosts, which skip the resolver, are checked before sending.
//! - Redirects are not followed: a 3xx is a failed attempt. Receivers answer
//!   webhooks directly, and not following means no hop can lead elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::Error;

/// Which URLs webhooks may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    /// Allow loopback, private and other internal addresses.
    pub allow_private: bool,
    /// Allow plain `http` (dev mode).
    pub allow_http: bool,
}

impl UrlPolicy {
    /// Parse and check a URL, resolving its host (for creating an
    /// endpoint; every connection is checked again by the resolver).
    pub async fn check(&self, url: &str) -> Result<Url, Error> {
        let parsed = self.check_without_dns(url)?;
        if let Some(Host::Domain(domain)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            let addrs = resolve(domain, port).await?;
            self.check_addrs(domain, &addrs)?;
        }
        Ok(parsed)
    }

    /// The checks that need no DNS: syntax, scheme, and IP-literal hosts.
    pub fn check_without_dns(&self, url: &str) -> Result<Url, Error> {
        let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl {
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Error::UrlRefused {
                    reason: "https is required".into(),
                });
            }
            other => {
                return Err(Error::InvalidUrl {
                    reason: format!("unsupported scheme {other:?}"),
                });
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::InvalidUrl {
                reason: "credentials in the URL are not allowed".into(),
            });
        }
        let ip = match parsed.host() {
            None => {
                return Err(Error::InvalidUrl {
                    reason: "no host".into(),
                });
            }
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        };
        if let Some(ip) = ip
            && !self.allow_private
            && is_forbidden(ip)
        {
            return Err(Error::UrlRefused {
                reason: format!("{ip} is not a public address"),
            });
        }
        Ok(parsed)
    }

    fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), Error> {
        if self.allow_private {
            return Ok(());
        }
        match addrs.iter().find(|a| is_forbidden(a.ip())) {
            Some(bad) => Err(Error::UrlRefused {
                reason: format!("{host} resolves to {}, not a public address", bad.ip()),
            }),
            None => Ok(()),
        }
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Unresolvable {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Unresolvable {
            host: host.to_owned(),
            reason: "no addresses".into(),
        });
    }
    Ok(addrs)
}

/// The HTTP client's resolver: resolves, then refuses the name if any
/// address is forbidden by the policy.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str();
            // Port 0: reqwest puts in the URL's port.
            let addrs = resolve(host, 0).await?;
            policy.check_addrs(host, &addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// True for addresses a webhook must not reach (see the module docs).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // CGNAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // IPv4 wrapped in IPv6: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match segments {
        // IPv4-compatible (deprecated), ::a.b.c.d; also covers :: and ::1.
        [0, 0, 0, 0, 0, 0, hi, lo] => return hi == 0 || is_forbidden_v4(embedded(hi, lo)),
        // NAT64, 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return is_forbidden_v4(embedded(hi, lo)),
        // 6to4, 2002:a.b.c.d::/48.
        [0x2002, hi, lo, ..] => return is_forbidden_v4(embedded(hi, lo)),
        _ => {}
    }
    let first = segments[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7 (RFC 4193)
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || ip.is_multicast()
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation, 2001:db8::/32
        || (first == 0x2001 && segments[1] == 0) // Teredo, 2001::/32
        || (first == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only, 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:c0a8:0101::1",
            "fec0::1",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn scheme_and_literals_without_dns() {
        let strict = UrlPolicy::default();
        for url in [
            "http://example.com/",
            "https://127.0.0.1:8443/",
            "https://[::ffff:10.0.0.1]/",
        ] {
            let refused = strict.check_without_dns(url);
            assert!(matches!(refused, Err(Error::UrlRefused { .. })), "{url}");
        }
        for url in ["ftp://example.com/", "https://user:pw@example.com/"] {
            let invalid = strict.check_without_dns(url);
            assert!(matches!(invalid, Err(Error::InvalidUrl { .. })), "{url}");
        }
        assert!(strict.check_without_dns("https://example.com/hook").is_ok());
        let dev = UrlPolicy {
            allow_private: true,
            allow_http: true,
        };
        assert!(dev.check_without_dns("http://127.0.0.1:9/").is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let strict = UrlPolicy::default();
        let err = strict.check("https://localhost/hook").await.unwrap_err();
        assert!(matches!(err, Error::UrlRefused { .. }), "{err:?}");
        let lenient = UrlPolicy {
            allow_private: true,
            allow_http: false,
        };
        assert!(lenient.check("https://localhost/hook").await.is_ok());
    }
}
