//! Routing: which pool serves a request, by host and path prefix, first match wins. Prefixes
//! are matched against the path normalized as nginx matches locations ([`routing_path`]).
//!
//! Host patterns are lower-cased once when the config is read; requests are compared
//! case-insensitively without allocating. The port of the request's host is ignored, and so is a
//! trailing dot (`example.com.` is `example.com`).

use std::borrow::Cow;
use std::sync::Arc;

use crate::upstream::Pool;

/// A route's `host`: an exact name, or `*.suffix` for any name below `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com` and `a.b.example.com`,
    /// not `example.com` itself (as nginx's `*.example.com`).
    Wildcard(String),
}

impl HostPattern {
    /// Parses a config host such as `"api.example.com"` or `"*.example.com"`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(format!(
                "{text:?} is not a host name or \"*.domain\" pattern (no port, no other '*')"
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether this is an exact name rather than a wildcard.
    pub fn is_exact(&self) -> bool {
        matches!(self, HostPattern::Exact(_))
    }

    /// Whether `host` (already stripped of its port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A route as the snapshot holds it, pointing at its pool.
#[derive(Debug)]
pub struct Route {
    host: Option<HostPattern>,
    path_prefix: Option<String>,
    pool: Arc<Pool>,
}

impl Route {
    pub fn new(host: Option<HostPattern>, path_prefix: Option<String>, pool: Arc<Pool>) -> Route {
        Route {
            host,
            path_prefix,
            pool,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Whether a request for `host` (port stripped; `None` when the request named none) and
    /// `path` takes this route.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(pattern), Some(host)) => pattern.matches(host),
            (Some(_), None) => false,
        };
        host_ok
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// The host part of a `Host` header or authority: port removed, IPv6 brackets kept, trailing
/// dot removed.
pub fn host_name(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The path routes match: the target's path with `%XX` escapes of unreserved characters decoded
/// (`%2e` is `.`; `%2F` stays, as in Envoy: it is data, not a separator), `.` and `..` segments
/// resolved (never above the root) and repeated slashes merged, as nginx matches its locations.
/// Matched raw, `/public/../admin` (or `/public/%2e%2e/admin`) took the `/public/` route while a
/// backend that normalizes served `/admin`. The request is still forwarded as received.
///
/// `None` for a path that backends read in different ways, so that any one reading could route
/// it past a prefix another backend would have kept it under; no client needs one, and it is
/// refused (400) rather than routed one way:
/// - an empty segment before a `..` (`/admin//../x` is `/x` once slashes merge, `/admin/x` by
///   RFC 3986 alone);
/// - a `..` segment beside an escaped slash or a backslash (`/public/..%2Fadmin` is `/admin` to
///   nginx, which decodes before it resolves dots, and to IIS with `\`);
/// - a `..` segment with `;parameters` (`/public/..;/admin` is `/admin` to Tomcat).
pub fn routing_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') || !needs_normalizing(path.as_bytes()) {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    let normal = resolve(&decoded)?;
    if read_otherwise(&decoded, &normal) {
        return None;
    }
    Some(Cow::Owned(normal))
}

/// `path` (starting with `/`) with `.` and `..` segments resolved and repeated slashes merged;
/// `None` when an empty segment comes before a `..`.
fn resolve(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    let mut empty_before = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "" => empty_before |= !last,
            "." => {}
            ".." if empty_before => return None,
            ".." => {
                kept.pop();
            }
            name => kept.push(name),
        }
        // `/a/`, `/a/.` and `/a/b/..` name a directory: the slash stays.
        trailing_slash = last && matches!(*segment, "" | "." | "..");
    }
    let mut normal = String::with_capacity(path.len());
    for name in &kept {
        normal.push('/');
        normal.push_str(name);
    }
    if trailing_slash || kept.is_empty() {
        normal.push('/');
    }
    Some(normal)
}

/// Whether `path` has an escape, a backslash, a dot segment's start or a repeated slash: one
/// pass, as most paths have none.
fn needs_normalizing(path: &[u8]) -> bool {
    let mut previous = 0;
    for &byte in path {
        if byte == b'%' || byte == b'\\' || (previous == b'/' && (byte == b'.' || byte == b'/')) {
            return true;
        }
        previous = byte;
    }
    false
}

/// Whether some backends resolve the dot segments of `decoded` (unreserved escapes decoded) to
/// another path than `normal`, routing's: those that first decode an escaped slash or read a
/// backslash as one (nginx, IIS), or strip `;parameters` from segments (Tomcat). Their reading
/// of `normal` must have no `..` left and resolve to what they make of `decoded`, or the `..`
/// segments cross what they change.
fn read_otherwise(decoded: &str, normal: &str) -> bool {
    let changed_by_theirs = decoded.contains("%2F")
        || decoded.contains("%5C")
        || decoded.contains('\\')
        || decoded.contains(';');
    if !changed_by_theirs {
        return false;
    }
    let theirs = |path: &str| -> String {
        let slashes = path
            .replace("%2F", "/")
            .replace("%5C", "/")
            .replace('\\', "/");
        slashes
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/")
    };
    let ours_read_theirs = theirs(normal);
    if ours_read_theirs.split('/').any(|segment| segment == "..") {
        return true;
    }
    resolve(&theirs(decoded)) != resolve(&ours_read_theirs)
}

/// `path` with the `%XX` escapes of unreserved characters (RFC 3986 section 2.3) decoded; every
/// other escape kept as written.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(byte) = crate::affinity::escaped_byte(bytes, i) {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                // Kept, in one case (RFC 3986 section 6.2.2.1): `%2f` is `%2F`.
                out.push('%');
                out.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
        } else {
            let width = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + width]);
            i += width;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Strategy;

    #[test]
    fn routing_paths_are_normalized_as_nginx_matches_locations() {
        for (raw, normal) in [
            ("/", "/"),
            ("/public/a.css", "/public/a.css"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/%61dmin", "/admin"),
            ("/public/a%2fb", "/public/a%2Fb"),
            ("/a;v=1/b", "/a;v=1/b"),
            ("/a\\b/./c", "/a\\b/c"),
            ("/public/.;x/admin", "/public/.;x/admin"),
            ("/a%2Fb/./c/../d;p", "/a%2Fb/d;p"),
            ("/a%2fb/x/../y", "/a%2Fb/y"),
            ("/a;v=1/../b", "/b"),
            ("//admin", "/admin"),
            ("/a//b/./c/", "/a/b/c/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/../../etc", "/etc"),
            ("/..", "/"),
            ("/a/.hidden/..b", "/a/.hidden/..b"),
            ("/caf%C3%A9/%20x", "/caf%C3%A9/%20x"),
            ("/café/./x", "/café/x"),
            ("/a%", "/a%"),
            ("/a%2", "/a%2"),
            ("*", "*"),
        ] {
            assert_eq!(routing_path(raw).as_deref(), Some(normal), "{raw}");
        }
        assert!(matches!(routing_path("/a/b.c/d"), Some(Cow::Borrowed(_))));
        // Slashes merged first, or dot segments first: two answers, so none.
        for ambiguous in [
            "/admin//../x",
            "/a//%2e%2e/",
            "/a//b/../..",
            "/public/..%2Fadmin/x",
            "/public/..%2fadmin/x",
            "/admin/x%2F..%2F..%2Fpublic",
            "/public\\..\\admin",
            "/public/..%5Cadmin",
            "/public/..;/admin",
            "/a%2Fb/../c",
            "/a/b%2F../c",
        ] {
            assert_eq!(routing_path(ambiguous), None, "{ambiguous}");
        }
        assert!(
            routing_path("/a/b//").is_some(),
            "a trailing empty segment is fine"
        );
    }

    fn route(host: Option<&str>, prefix: Option<&str>) -> Route {
        let policy = crate::upstream::Policy {
            retries: 0,
            fail_open: false,
            balance_factor: None,
            hash_key: None,
            sticky: None,
            outlier: crate::config::Outlier::default(),
            health: None,
        };
        let pool = Arc::new(Pool::new(
            "p",
            Strategy::RoundRobin,
            Vec::new(),
            Vec::new(),
            policy,
        ));
        Route::new(
            host.map(|h| HostPattern::parse(h).unwrap()),
            prefix.map(str::to_owned),
            pool,
        )
    }

    #[test]
    fn exact_host_is_case_insensitive() {
        let r = route(Some("API.example.com"), None);
        assert!(r.matches(Some("api.EXAMPLE.com"), "/"));
        assert!(!r.matches(Some("www.example.com"), "/"));
        assert!(!r.matches(None, "/"), "a host route needs a host");
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let r = route(Some("*.example.com"), None);
        assert!(r.matches(Some("a.example.com"), "/"));
        assert!(r.matches(Some("a.b.Example.com"), "/"));
        assert!(!r.matches(Some("example.com"), "/"));
        assert!(!r.matches(Some("badexample.com"), "/"));
    }

    #[test]
    fn prefix_and_host_must_both_match() {
        let r = route(Some("api.example.com"), Some("/v1/"));
        assert!(r.matches(Some("api.example.com"), "/v1/users"));
        assert!(!r.matches(Some("api.example.com"), "/v2/users"));
        assert!(!r.matches(Some("other.example.com"), "/v1/users"));
        assert!(route(None, None).matches(None, "/anything"));
    }

    #[test]
    fn host_name_strips_port_and_trailing_dot() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "",
            "*.",
            "a*.com",
            "*",
            "example.com:80",
            "ex ample.com",
            "**.a.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
