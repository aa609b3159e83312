//! A pool's affinity settings as the config holds them: where a consistent-hash pool finds a
//! request's key (`hash_key`), and the sticky-session cookie (`[pool.NAME.sticky]`). Plain data,
//! parsed and checked here; computing a request's key and reading or writing the cookie are
//! `upstream/affinity.rs`'s, in `impl` blocks of its own.

use std::time::Duration;

use http::header::HeaderName;

/// `hash_key`: where a request's placement key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `header:NAME`
    Header(HeaderName),
    /// `cookie:NAME`
    Cookie(String),
    /// `query:NAME`: the parameter's value, `%XX` escapes decoded (`+` kept as is).
    Query(String),
    /// `path`: the path without the query.
    Path,
    /// `client_ip`: the client connection's address (as text: `10.1.2.3`, `::1`).
    ClientIp,
}

impl HashKey {
    /// What `hash_key` accepts, for error messages.
    pub const FORMS: &'static str = "header:NAME, cookie:NAME, query:NAME, path or client_ip";

    /// Parses a config value such as `"header:x-user-id"`.
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let invalid = || format!("hash_key {text:?} is not one of {}", HashKey::FORMS);
        match text.split_once(':') {
            None if text == "path" => Ok(HashKey::Path),
            None if text == "client_ip" => Ok(HashKey::ClientIp),
            Some((_, "")) | None => Err(invalid()),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| invalid()),
            Some(("cookie", name)) => Ok(HashKey::Cookie(name.to_owned())),
            Some(("query", name)) => Ok(HashKey::Query(name.to_owned())),
            Some(_) => Err(invalid()),
        }
    }
}

/// `[pool.NAME.sticky]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    pub cookie: String,
    /// `Max-Age`, whole seconds, at least one; a session cookie when `None`.
    pub max_age: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
    /// `SameSite`; the browser's default (`Lax` in current browsers) when `None`.
    pub same_site: Option<SameSite>,
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    /// Sent on cross-site requests too (iframes, SSO POST-backs); browsers require `Secure`.
    None,
}

impl SameSite {
    /// What `same_site` accepts, for error messages.
    pub const FORMS: &'static str = "\"Strict\", \"Lax\" or \"None\"";

    /// Parses a config value, in any case.
    pub fn parse(text: &str) -> Option<SameSite> {
        [SameSite::Strict, SameSite::Lax, SameSite::None]
            .into_iter()
            .find(|value| value.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

impl Sticky {
    /// The default cookie name.
    pub const DEFAULT_COOKIE: &'static str = "fulcrum_affinity";
}

/// Whether `name` is a valid cookie name (an RFC 6265 token).
pub fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(crate::http1::fields::is_tchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_hash_keys_are_rejected() {
        for bad in [
            "",
            "header:",
            "header",
            "cookie:",
            "ip",
            "body:x",
            "header:bad name",
        ] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
