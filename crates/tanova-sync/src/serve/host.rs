//! Which `Host` names the status server answers to, so a web page cannot read it through DNS rebinding.
//!
//! A page on `http://attacker.example` that rebinds its name to 127.0.0.1 can
//! make the browser fetch the status server, but the request still says
//! `Host: attacker.example`. Answering only to names the server is bound for
//! (loopback names, the configured address, `listen_hosts`) closes that hole.

use std::net::{IpAddr, SocketAddr};

/// The `Host` names a status server accepts.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// `listen_hosts`, lowercased, without a port.
    names: Vec<String>,
    /// The address it is bound to.
    bound: IpAddr,
}

impl AllowedHosts {
    /// Loopback names and addresses always; `bound` (the `listen` address);
    /// and `extra` (`listen_hosts`, names or addresses, a port is ignored).
    pub fn new(bound: SocketAddr, extra: &[String]) -> Self {
        AllowedHosts {
            names: extra
                .iter()
                .map(|h| normalize(split_port(h.trim())).to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            bound: bound.ip(),
        }
    }

    /// Whether a request with this `Host` header may be answered. No header
    /// at all (HTTP/1.0) comes from no browser, so it is not refused.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        let name = normalize(split_port(host.trim()));
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address as the Host cannot come from a rebound name: the page's
            // origin would be that address itself. Bound to every address
            // (0.0.0.0, listen_public), any of the machine's may be typed.
            if ip.is_loopback() || ip == self.bound || self.bound.is_unspecified() {
                return true;
            }
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn split_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        // One colon only: a port. Several: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// A fully qualified name's trailing dot means the same host.
fn normalize(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let loopback = AllowedHosts::new("127.0.0.1:9898".parse().unwrap(), &[]);
        let public = AllowedHosts::new(
            "0.0.0.0:9898".parse().unwrap(),
            &[
                "Files.Agency.Local".to_string(),
                "status.example:8080".to_string(),
            ],
        );
        let one_ip = AllowedHosts::new("192.168.1.5:9898".parse().unwrap(), &[]);
        let table: &[(&AllowedHosts, Option<&str>, bool)] = &[
            (&loopback, None, true),
            (&loopback, Some("localhost"), true),
            (&loopback, Some("LOCALHOST:9898"), true),
            (&loopback, Some("localhost.:9898"), true),
            (&loopback, Some("127.0.0.1:9898"), true),
            (&loopback, Some("127.0.0.1"), true),
            (&loopback, Some("[::1]:9898"), true),
            (&loopback, Some("[::1]"), true),
            (&loopback, Some("attacker.example"), false),
            (&loopback, Some("attacker.example:9898"), false),
            (&loopback, Some("localhost.attacker.example"), false),
            (&loopback, Some("192.168.1.5:9898"), false),
            (&loopback, Some(""), false),
            (&public, Some("files.agency.local:9898"), true),
            (&public, Some("status.example"), true),
            (&public, Some("10.0.0.7:9898"), true),
            (&public, Some("attacker.example"), false),
            (&one_ip, Some("192.168.1.5:9898"), true),
            (&one_ip, Some("192.168.1.6:9898"), false),
            (&one_ip, Some("attacker.example:9898"), false),
        ];
        for (allowed, host, want) in table {
            assert_eq!(allowed.allows(*host), *want, "{host:?} for {allowed:?}");
        }
    }
}
