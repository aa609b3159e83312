//! Pure helpers over a request's path, shared by config validation and routing: the path routes
//! match ([`routing_path`], nginx's reading of it), and the byte a `%XX` escape stands for
//! ([`escaped_byte`], which affinity keys decode with too). No matching of routes here: that is
//! `proxy/route.rs`.

use std::borrow::Cow;

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
        if let Some(byte) = escaped_byte(bytes, i) {
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

/// The byte a `%XX` escape starting at `bytes[i]` stands for, if one starts there.
pub fn escaped_byte(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    match bytes.get(i..i + 3)? {
        [b'%', hi, lo] => Some((hex(*hi)? * 16 + hex(*lo)?) as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
