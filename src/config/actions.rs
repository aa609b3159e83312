//! What a route does to a request besides choosing its pool: `strip_prefix` or `rewrite` of the
//! path ([`PathRewrite`]), and their validation. Applying them is `proxy/rewrite.rs`'s.

use regex::Regex;
use toml::Spanned;

use super::validate::Source;
use super::{ConfigError, wire};

/// How a route changes the path the backend receives (the query is kept).
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// `strip_prefix = "/v1"`: `/v1/users` becomes `/users`; an empty rest becomes `/`.
    StripPrefix(String),
    /// `rewrite = { regex = "^/old/(.*)$", to = "/new/$1" }`: the first match replaced, `$1`
    /// and `${name}` naming groups; a path the regex does not match is left as it is.
    Regex { regex: Regex, to: String },
}

impl PartialEq for PathRewrite {
    fn eq(&self, other: &PathRewrite) -> bool {
        match (self, other) {
            (PathRewrite::StripPrefix(a), PathRewrite::StripPrefix(b)) => a == b,
            (PathRewrite::Regex { regex: a, to: x }, PathRewrite::Regex { regex: b, to: y }) => {
                a.as_str() == b.as_str() && x == y
            }
            _ => false,
        }
    }
}

impl Eq for PathRewrite {}

impl Source<'_> {
    /// A route's `strip_prefix` or `rewrite`.
    pub(super) fn path_rewrite(
        &self,
        route: &wire::Route,
    ) -> Result<Option<PathRewrite>, ConfigError> {
        match (&route.strip_prefix, &route.rewrite) {
            (None, None) => Ok(None),
            (Some(_), Some(rewrite)) => {
                Err(self.error_at(rewrite, "a route takes one of strip_prefix and rewrite"))
            }
            (Some(prefix), None) => {
                let prefix_text = prefix.get_ref().trim_end_matches('/');
                let trimmed = Spanned::new(prefix.span(), prefix_text.to_owned());
                let normalized = self.normalized("strip_prefix", &trimmed)?;
                Ok(Some(PathRewrite::StripPrefix(normalized)))
            }
            (None, Some(rewrite)) => {
                let table = rewrite.get_ref();
                let regex = self.regex("rewrite regex", &table.regex)?;
                if !table.to.get_ref().starts_with('/') {
                    return Err(self.error_at(
                        &table.to,
                        format!(
                            "route rewrite to {:?} must start with '/'",
                            table.to.get_ref()
                        ),
                    ));
                }
                Ok(Some(PathRewrite::Regex {
                    regex,
                    to: table.to.get_ref().clone(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn check(route: &str) -> Result<Config, String> {
        let text = format!("[pool.api]\n[[route]]\npool = \"api\"\n{route}");
        Config::parse(&text, Path::new("a.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn faults_name_their_line_and_key() {
        for (route, expected) in [
            (
                "strip_prefix = \"/v1\"\nrewrite = { regex = \"^/a\", to = \"/b\" }\n",
                "a.toml:5: a route takes one of strip_prefix and rewrite",
            ),
            (
                "rewrite = { regex = \"^/a(\", to = \"/b\" }\n",
                "a.toml:4: route rewrite regex \"^/a(\" does not compile",
            ),
            (
                "rewrite = { regex = \"^/a\", to = \"b\" }\n",
                "a.toml:4: route rewrite to \"b\" must start with '/'",
            ),
            (
                "strip_prefix = \"v1\"\n",
                "a.toml:4: route strip_prefix \"v1\" must start with '/'",
            ),
        ] {
            let error = check(route).unwrap_err();
            assert!(error.starts_with(expected), "{route:?}: got {error}");
        }
    }
}
