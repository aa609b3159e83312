//! Request affinity: the key a consistent-hash pool places a request by (`hash_key`), and sticky
//! sessions (a cookie that pins a client to the backend that first served it).
//!
//! The sticky cookie's value is an opaque token: a stable hash of the pool and the backend's
//! address, so it reveals no address, is the same on every Fulcrum instance, and survives reloads
//! that keep the backend. A value that names no backend of the pool is treated as absent.
//!
//! The settings themselves ([`HashKey`], [`Sticky`]) are plain config data
//! (`config/affinity.rs`); this is what they do with requests and responses.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};

use crate::config::{HashKey, Sticky};
use crate::path::escaped_byte;
use crate::upstream::balance::stable_hash;

impl HashKey {
    /// The request's key, hashed; `None` when the request does not carry it, or carries it
    /// empty (`x-user-id:`, `sid=`, `?uid=`): as in nginx's `hash` and HAProxy's `balance hdr`,
    /// an empty key is no key, or every anonymous client would share one backend.
    pub fn hash<B>(&self, request: &Request<B>, client: IpAddr) -> Option<u64> {
        match self {
            HashKey::Header(name) => request
                .headers()
                .get(name)
                .and_then(|value| nonempty_hash(value.as_bytes())),
            HashKey::Cookie(name) => {
                cookie(request.headers(), name).and_then(|v| nonempty_hash(v.as_bytes()))
            }
            HashKey::Query(name) => query_param(request.uri(), name)
                .and_then(|v| nonempty_hash(percent_decode(v).as_bytes())),
            HashKey::Path => Some(stable_hash(request.uri().path().as_bytes())),
            // The address as text, so the admin API's `?key=10.1.2.3` finds the same place.
            HashKey::ClientIp => Some(stable_hash(client.to_string().as_bytes())),
        }
    }
}

/// The hash of a key given as text, as the admin API's route lookup takes it; `None` for an
/// empty key, which places nothing (see [`HashKey::hash`]).
pub fn key_hash(key: &str) -> Option<u64> {
    nonempty_hash(key.as_bytes())
}

/// The key's hash, unless it is empty or only spaces and tabs.
fn nonempty_hash(key: &[u8]) -> Option<u64> {
    (!key.trim_ascii().is_empty()).then(|| stable_hash(key))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// The raw value of query parameter `name`.
fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Decodes `%XX` escapes (so `127.0.0.1%3A9003` names `127.0.0.1:9003`); `+` stays `+`.
pub fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(byte) = escaped_byte(bytes, i) {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Sticky {
    /// The token that names `backend` of `pool`.
    pub fn token(pool: &str, backend: &str) -> u64 {
        let mut material = Vec::with_capacity(pool.len() + backend.len() + 16);
        material.extend_from_slice(b"fulcrum-sticky\0");
        material.extend_from_slice(pool.as_bytes());
        material.push(0);
        material.extend_from_slice(backend.as_bytes());
        stable_hash(&material)
    }

    /// The token this request's cookie carries, if it carries a well-formed one.
    pub fn requested(&self, headers: &HeaderMap) -> Option<u64> {
        let value = cookie(headers, &self.cookie)?;
        if value.len() != 16 {
            return None;
        }
        u64::from_str_radix(value, 16).ok()
    }

    /// The `Set-Cookie` header that pins a client to the backend with `token`.
    pub fn set_cookie(&self, token: u64) -> HeaderValue {
        self.set_named(&self.cookie, &format!("{token:016x}"))
    }

    /// A `Set-Cookie` header for cookie `name` with `value` (both cookie tokens), with this
    /// cookie's attributes.
    pub fn set_named(&self, name: &str, value: &str) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path=/");
        if let Some(max_age) = self.max_age {
            cookie.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        if self.http_only {
            cookie.push_str("; HttpOnly");
        }
        if let Some(same_site) = self.same_site {
            cookie.push_str("; SameSite=");
            cookie.push_str(same_site.as_str());
        }
        HeaderValue::from_str(&cookie)
            .expect("validated cookie names and values form a valid header")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SameSite;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn each_source_finds_its_key() {
        let r = request(
            "/a/b?user=42&x&mail=u%40x.org",
            &[("x-user-id", "u1"), ("cookie", "a=1; sid=s9")],
        );
        let hash = |spec: &str| HashKey::parse(spec).unwrap().hash(&r, CLIENT);
        assert_eq!(hash("header:X-User-Id"), Some(stable_hash(b"u1")));
        assert_eq!(hash("cookie:sid"), Some(stable_hash(b"s9")));
        assert_eq!(hash("query:user"), Some(stable_hash(b"42")));
        assert_eq!(
            hash("query:mail"),
            Some(stable_hash(b"u@x.org")),
            "escapes are decoded"
        );
        assert_eq!(hash("path"), Some(stable_hash(b"/a/b")));
        assert_eq!(hash("client_ip"), Some(stable_hash(b"10.1.2.3")));
        assert_eq!(hash("header:x-missing"), None);
        assert_eq!(hash("cookie:missing"), None);
        assert_eq!(hash("query:missing"), None);
    }

    #[test]
    fn empty_keys_are_no_keys() {
        let r = request(
            "/a?uid=&blank=%20&x",
            &[
                ("x-user-id", ""),
                ("x-spaces", "  "),
                ("cookie", "sid=; b=\"\""),
            ],
        );
        let hash = |spec: &str| HashKey::parse(spec).unwrap().hash(&r, CLIENT);
        for spec in [
            "header:x-user-id",
            "header:x-spaces",
            "cookie:sid",
            "cookie:b",
            "query:uid",
            "query:blank",
            "query:x",
        ] {
            assert_eq!(hash(spec), None, "{spec}");
        }
        assert_eq!(key_hash(""), None);
        assert_eq!(key_hash(" a"), Some(stable_hash(b" a")));
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("127.0.0.1%3A9003"), "127.0.0.1:9003");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("plain"), "plain");
    }

    #[test]
    fn sticky_tokens_round_trip_and_forgeries_are_absent() {
        let sticky = Sticky {
            cookie: "fulcrum_affinity".into(),
            max_age: Some(Duration::from_secs(3600)),
            secure: true,
            http_only: true,
            same_site: None,
        };
        let token = Sticky::token("app", "127.0.0.1:9001");
        let set = sticky.set_cookie(token);
        let set = set.to_str().unwrap();
        assert!(
            !set.contains("127.0.0.1"),
            "the cookie must not reveal the address: {set}"
        );
        assert!(
            set.ends_with("; Path=/; Max-Age=3600; Secure; HttpOnly"),
            "{set}"
        );
        let value = set.split(';').next().unwrap();
        let back = request("/", &[("cookie", value)]);
        assert_eq!(sticky.requested(back.headers()), Some(token));
        let forged = request("/", &[("cookie", "fulcrum_affinity=127.0.0.1:9001")]);
        assert_eq!(sticky.requested(forged.headers()), None);

        let cross_site = Sticky {
            same_site: SameSite::parse("none"),
            ..sticky
        };
        let set = cross_site.set_cookie(token);
        assert!(
            set.to_str()
                .unwrap()
                .ends_with("; Secure; HttpOnly; SameSite=None"),
            "{set:?}"
        );
        assert_eq!(SameSite::parse("Lax"), Some(SameSite::Lax));
        assert_eq!(SameSite::parse("loose"), None);
    }
}
