//! A route's `strip_prefix` or `rewrite`: the path the backend receives, made from the request's
//! normalized path (the one routes match), its query kept as received.

use http::Uri;
use http::uri::PathAndQuery;

use crate::config::PathRewrite;

/// The target `uri` (origin form) with its path rewritten by `rule` from `normalized`; `None`
/// when the rule leaves it as it is.
pub(super) fn rewritten(rule: &PathRewrite, normalized: &str, uri: &Uri) -> Option<Uri> {
    let path = match rule {
        PathRewrite::StripPrefix(prefix) => {
            let rest = normalized.strip_prefix(prefix.as_str())?;
            // "/v1" strips "/v1" and "/v1/x", not "/v1x".
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            if rest.is_empty() {
                "/".to_owned()
            } else {
                rest.to_owned()
            }
        }
        PathRewrite::Regex { regex, to } => {
            if !regex.is_match(normalized) {
                return None;
            }
            regex.replace(normalized, to.as_str()).into_owned()
        }
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    PathAndQuery::try_from(target).ok().map(Uri::from)
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    fn strip(prefix: &str, normalized: &str, uri: &str) -> Option<String> {
        let rule = PathRewrite::StripPrefix(prefix.to_owned());
        rewritten(&rule, normalized, &uri.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn strip_prefix_keeps_the_query_and_a_leading_slash() {
        assert_eq!(
            strip("/v1", "/v1/users", "/v1/users?a=1").as_deref(),
            Some("/users?a=1")
        );
        assert_eq!(strip("/v1", "/v1", "/v1").as_deref(), Some("/"));
        assert_eq!(strip("/v1", "/v1x", "/v1x"), None, "not a segment boundary");
        assert_eq!(strip("/v1", "/v2/users", "/v2/users"), None);
        assert_eq!(
            strip("/v1", "/v1/b", "//v1/a/../b").as_deref(),
            Some("/b"),
            "from the normalized path"
        );
    }

    #[test]
    fn a_regex_rewrite_uses_its_groups() {
        let rule = PathRewrite::Regex {
            regex: Regex::new("^/old/(.*)$").unwrap(),
            to: "/new/$1".to_owned(),
        };
        let uri: Uri = "/old/a/b?x=1".parse().unwrap();
        assert_eq!(
            rewritten(&rule, "/old/a/b", &uri)
                .map(|u| u.to_string())
                .as_deref(),
            Some("/new/a/b?x=1")
        );
        assert_eq!(rewritten(&rule, "/other", &"/other".parse().unwrap()), None);
    }
}
