//! What a route matches besides host and path prefix ([`Conditions`]): an exact path, a path
//! regex, methods, headers and query parameters; and their validation. Every condition given
//! must hold. Matching them is `proxy/route.rs`'s.

use std::collections::BTreeMap;

use http::{HeaderName, Method};
use regex::Regex;
use toml::Spanned;

use super::validate::Source;
use super::{ConfigError, wire};

/// What a header or query parameter must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueRule {
    /// `"*"`: present, whatever its value.
    Present,
    /// This value exactly.
    Exact(String),
}

impl ValueRule {
    fn from(text: &str) -> ValueRule {
        match text {
            "*" => ValueRule::Present,
            value => ValueRule::Exact(value.to_owned()),
        }
    }

    /// Whether `value` satisfies it.
    pub fn admits(&self, value: &[u8]) -> bool {
        match self {
            ValueRule::Present => true,
            ValueRule::Exact(wanted) => wanted.as_bytes() == value,
        }
    }
}

/// A route's conditions besides host and path prefix; empty, they hold for every request.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `path`: the normalized path, exactly.
    pub path: Option<String>,
    /// `path_regex`, over the normalized path (the regex crate: linear time).
    pub path_regex: Option<Regex>,
    /// `methods`: one of these.
    pub methods: Vec<Method>,
    /// `headers`: each present, with the value given unless `"*"`.
    pub headers: Vec<(HeaderName, ValueRule)>,
    /// `query`: each parameter present (name and value percent-decoded), as `headers`.
    pub query: Vec<(String, ValueRule)>,
}

impl PartialEq for Conditions {
    fn eq(&self, other: &Conditions) -> bool {
        self.path == other.path
            && self.path_regex.as_ref().map(Regex::as_str)
                == other.path_regex.as_ref().map(Regex::as_str)
            && self.methods == other.methods
            && self.headers == other.headers
            && self.query == other.query
    }
}

impl Eq for Conditions {}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

impl Source<'_> {
    /// A route's `path`, `path_regex`, `methods`, `headers` and `query`.
    pub(super) fn conditions(&self, route: &wire::Route) -> Result<Conditions, ConfigError> {
        let paths = [
            route.path_prefix.as_ref(),
            route.path.as_ref(),
            route.path_regex.as_ref(),
        ];
        if let Some(second) = paths.iter().flatten().nth(1) {
            return Err(self.error_at(
                second,
                "a route takes one of path_prefix, path and path_regex",
            ));
        }
        let path = match &route.path {
            None => None,
            Some(path) => Some(self.normalized("path", path)?),
        };
        let path_regex = match &route.path_regex {
            None => None,
            Some(text) => Some(self.regex("path_regex", text)?),
        };
        let methods = match &route.methods {
            None => Vec::new(),
            Some(methods) => methods
                .get_ref()
                .iter()
                .map(|name| {
                    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
                    Method::from_bytes(name.as_bytes())
                        .ok()
                        .filter(|_| valid)
                        .ok_or_else(|| {
                            self.error_at(
                                methods,
                                format!("route methods: {name:?} is not a method such as \"GET\""),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let headers = match &route.headers {
            None => Vec::new(),
            Some(headers) => headers
                .get_ref()
                .iter()
                .map(|(name, value)| {
                    let parsed = HeaderName::try_from(name.as_str()).map_err(|_| {
                        self.error_at(
                            headers,
                            format!("route headers: {name:?} is not a header name"),
                        )
                    })?;
                    Ok((parsed, ValueRule::from(value)))
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        let query = route
            .query
            .as_ref()
            .map(|query| by_name(query.get_ref()))
            .unwrap_or_default();
        Ok(Conditions {
            path,
            path_regex,
            methods,
            headers,
            query,
        })
    }

    /// A route's regex (`key` names it in errors).
    pub(super) fn regex(&self, key: &str, text: &Spanned<String>) -> Result<Regex, ConfigError> {
        Regex::new(text.get_ref()).map_err(|err| {
            // The regex crate's message ends with the reason, after a drawing of the pattern.
            let reason = err.to_string();
            let reason = reason.lines().last().unwrap_or("").trim();
            self.error_at(
                text,
                format!(
                    "route {key} {:?} does not compile: {reason}",
                    text.get_ref()
                ),
            )
        })
    }

    /// A path a route names, which must be normalized as requests' paths are matched.
    pub(super) fn normalized(
        &self,
        key: &str,
        path: &Spanned<String>,
    ) -> Result<String, ConfigError> {
        let written = path.get_ref();
        if !written.starts_with('/') {
            return Err(self.error_at(path, format!("route {key} {written:?} must start with '/'")));
        }
        // Requests are matched by their normalized path: one that normalizes to something else
        // could never match.
        if crate::path::routing_path(written).as_deref() != Some(written.as_str()) {
            return Err(self.error_at(
                path,
                format!(
                    "route {key} {written:?} must be a normalized path (no '.' or '..' \
                     segments, no repeated '/', no %XX escapes of letters, digits or -._~): \
                     requests are matched by theirs"
                ),
            ));
        }
        Ok(written.clone())
    }
}

fn by_name(table: &BTreeMap<String, String>) -> Vec<(String, ValueRule)> {
    table
        .iter()
        .map(|(name, value)| (name.clone(), ValueRule::from(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(route: &str) -> Result<Config, String> {
        let text = format!("[pool.api]\n[[route]]\npool = \"api\"\n{route}");
        Config::parse(&text, Path::new("r.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_condition() {
        let config = check(
            "path_regex = \"^/users/[0-9]+$\"\nmethods = [\"GET\", \"HEAD\"]\n\
             headers = { \"x-canary\" = \"1\", \"x-tenant\" = \"*\" }\nquery = { \"debug\" = \"1\" }\n",
        )
        .unwrap();
        let conditions = &config.routes[0].conditions;
        assert!(
            conditions
                .path_regex
                .as_ref()
                .unwrap()
                .is_match("/users/42")
        );
        assert_eq!(conditions.methods, [Method::GET, Method::HEAD]);
        assert_eq!(
            conditions.headers,
            [
                (
                    HeaderName::from_static("x-canary"),
                    ValueRule::Exact("1".into())
                ),
                (HeaderName::from_static("x-tenant"), ValueRule::Present),
            ]
        );
        assert_eq!(
            conditions.query,
            [("debug".into(), ValueRule::Exact("1".into()))]
        );
        let exact = check("path = \"/health\"\n").unwrap();
        assert_eq!(exact.routes[0].conditions.path.as_deref(), Some("/health"));
    }

    #[test]
    fn faults_name_their_line_and_key() {
        for (route, expected) in [
            (
                "path_regex = \"^/users/([0-9]+$\"\n",
                "r.toml:4: route path_regex \"^/users/([0-9]+$\" does not compile",
            ),
            (
                "path_prefix = \"/a\"\npath = \"/b\"\n",
                "r.toml:5: a route takes one of path_prefix, path and path_regex",
            ),
            (
                "path = \"b\"\n",
                "r.toml:4: route path \"b\" must start with '/'",
            ),
            (
                "path = \"/a/../b\"\n",
                "r.toml:4: route path \"/a/../b\" must be a normalized path",
            ),
            (
                "methods = [\"get\"]\n",
                "r.toml:4: route methods: \"get\" is not a method",
            ),
            (
                "headers = { \"x y\" = \"1\" }\n",
                "r.toml:4: route headers: \"x y\" is not a header name",
            ),
        ] {
            let error = check(route).unwrap_err();
            assert!(error.starts_with(expected), "{route:?}: got {error}");
        }
    }
}
