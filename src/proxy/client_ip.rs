//! Who the client is: the connection's peer, or, when the peer is one of `[server]
//! trusted_proxies`, the address its `X-Forwarded-For` names, as nginx's `real_ip_recursive on`
//! finds it. That address is the client everywhere: rate limits, hashing, header templates,
//! priority rules, the access log.
//!
//! The chain is read from its right end, where the nearest proxy wrote: each trusted address is
//! skipped, and the first untrusted one is the client. A chain of trusted addresses only names
//! its leftmost; an entry that is not an address stops the walk at the last good one.
//!
//! With `trusted_proxies` set, an untrusted peer's `X-Forwarded-For` is not passed on (the
//! backend gets the peer alone); without it, every chain is extended, as nginx's
//! `$proxy_add_x_forwarded_for` does.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The client of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The client, as `trusted_proxies` lets the chain name it.
    pub ip: IpAddr,
    /// Whether the peer's `X-Forwarded-For` is passed on (extended by the peer).
    pub keep_chain: bool,
    /// The client connected over TLS.
    pub tls: bool,
}

impl ClientAddr {
    /// The client of a request from `peer` with these `headers`.
    pub fn resolve(trusted: &[IpNet], peer: SocketAddr, tls: bool, headers: &HeaderMap) -> Self {
        let direct = ClientAddr {
            peer,
            ip: peer.ip(),
            keep_chain: true,
            tls,
        };
        if trusted.is_empty() {
            return direct;
        }
        if !is_trusted(trusted, peer.ip()) {
            return ClientAddr {
                keep_chain: false,
                ..direct
            };
        }
        ClientAddr {
            ip: named(trusted, headers).unwrap_or(peer.ip()),
            ..direct
        }
    }

    /// The client's address with the peer's port, as the access log writes it.
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.peer.port())
    }
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client the `X-Forwarded-For` chain names, walking from its right end.
fn named(trusted: &[IpNet], headers: &HeaderMap) -> Option<IpAddr> {
    let fields: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|field| field.as_bytes())
        .collect();
    let mut last_good = None;
    for entry in fields
        .iter()
        .rev()
        .flat_map(|field| field.rsplit(|&b| b == b','))
    {
        let Some(ip) = std::str::from_utf8(entry)
            .ok()
            .and_then(|e| address(e.trim()))
        else {
            break;
        };
        if !is_trusted(trusted, ip) {
            return Some(ip);
        }
        last_good = Some(ip);
    }
    last_good
}

/// An address as proxies write them: bare, or with a port (`1.2.3.4:80`, `[::1]:80`).
fn address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn resolve(trusted: &[&str], peer: &str, chain: &[&str]) -> ClientAddr {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let mut headers = HeaderMap::new();
        for field in chain {
            headers.append("x-forwarded-for", HeaderValue::from_str(field).unwrap());
        }
        ClientAddr::resolve(&trusted, peer.parse().unwrap(), false, &headers)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_trusted_peer_names_the_first_untrusted_address_from_the_right() {
        let client = resolve(
            &["10.0.0.0/8"],
            "10.0.0.1:5000",
            &["6.6.6.6, 1.2.3.4, 10.0.0.2"],
        );
        assert_eq!(
            client.ip,
            ip("1.2.3.4"),
            "6.6.6.6 is the client's own claim"
        );
        assert!(client.keep_chain);
        let split = resolve(&["10.0.0.0/8"], "10.0.0.1:5000", &["1.2.3.4", "10.9.9.9"]);
        assert_eq!(
            split.ip,
            ip("1.2.3.4"),
            "the chain may come in several fields"
        );
        let ported = resolve(&["10.0.0.0/8"], "10.0.0.1:5000", &["[2001:db8::1]:443"]);
        assert_eq!(ported.ip, ip("2001:db8::1"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_chain_is_dropped() {
        let client = resolve(&["10.0.0.0/8"], "192.0.2.7:5000", &["1.2.3.4"]);
        assert_eq!(client.ip, ip("192.0.2.7"));
        assert!(!client.keep_chain);
        let none = resolve(&[], "192.0.2.7:5000", &["1.2.3.4"]);
        assert_eq!(none.ip, ip("192.0.2.7"));
        assert!(
            none.keep_chain,
            "without trusted_proxies every chain is extended"
        );
    }

    #[test]
    fn odd_chains_stop_at_the_last_good_address() {
        let all_trusted = resolve(&["10.0.0.0/8"], "10.0.0.1:1", &["10.1.1.1, 10.2.2.2"]);
        assert_eq!(all_trusted.ip, ip("10.1.1.1"));
        let garbage = resolve(&["10.0.0.0/8"], "10.0.0.1:1", &["1.2.3.4, junk, 10.2.2.2"]);
        assert_eq!(garbage.ip, ip("10.2.2.2"));
        let empty = resolve(&["10.0.0.0/8"], "10.0.0.1:1", &[]);
        assert_eq!(empty.ip, ip("10.0.0.1"));
        let mapped = resolve(&["10.0.0.0/8"], "[::ffff:10.0.0.1]:1", &["1.2.3.4"]);
        assert_eq!(
            mapped.ip,
            ip("1.2.3.4"),
            "an IPv4-mapped peer is trusted as IPv4"
        );
    }
}
