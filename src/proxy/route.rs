//! A route as the snapshot holds it ([`Route`]): what it matches, what serves its requests
//! ([`Target`]: a pool, a split, a redirect or a respond) and its own settings ([`Settings`]).
//! Matching is by host and path prefix, first match wins, and by the route's other conditions (an exact path, a path regex, methods, headers, query parameters:
//! [`Conditions`], all of which must hold). Paths are matched as normalized the way nginx matches
//! locations ([`crate::path::routing_path`]).
//!
//! Host patterns ([`HostPattern`], config's) are lower-cased once when the config is read;
//! requests are compared case-insensitively without allocating. The port of the request's host is
//! ignored, and so is a trailing dot (`example.com.` is `example.com`).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use super::header_rules::Rules;
use super::mirror::Mirror;
use super::rate_limit::Limiter;
use super::split::Split;
use crate::config::{
    Conditions, HeaderRules, HostPattern, PathRewrite, Priority, Redirect, Respond,
};
use crate::upstream::Pool;
use crate::upstream::affinity::percent_decode;

/// What a route's conditions read of a request besides its host and path.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
}

/// A route as the snapshot holds it, pointing at what serves its requests.
#[derive(Debug)]
pub struct Route {
    host: Option<HostPattern>,
    path_prefix: Option<String>,
    target: Target,
    priority: Priority,
    /// `None` when it has none: most routes, which then cost nothing more.
    conditions: Option<Box<Conditions>>,
    /// `strip_prefix` or `rewrite`.
    rewrite: Option<Box<PathRewrite>>,
    /// `request_headers` and `response_headers`, when it has either.
    header_rules: Option<Box<(Rules, Rules)>>,
    settings: Box<Settings>,
}

/// What serves a route's requests.
#[derive(Debug)]
pub enum Target {
    Pool(Arc<Pool>),
    Split(Box<Split>),
    Redirect(Box<Redirect>),
    Respond(Box<Respond>),
}

/// A route's own settings: its name, the limits that override the server's, its rate limit
/// and its mirror.
#[derive(Debug, Default)]
pub struct Settings {
    /// Metrics and rate limit headers name the route by it.
    pub name: Arc<str>,
    /// This route's `[timeouts] request`.
    pub timeout: Option<Duration>,
    /// This route's retries, instead of its pool's.
    pub retries: Option<u32>,
    /// This route's `[limits] max_body`.
    pub max_body: Option<u64>,
    /// Shared with the snapshots before and after that keep the route's name and limit.
    pub limiter: Option<Arc<Limiter>>,
    pub mirror: Option<Mirror>,
}

impl Route {
    pub fn new(
        host: Option<HostPattern>,
        path_prefix: Option<String>,
        target: Target,
        priority: Priority,
    ) -> Route {
        Route {
            host,
            path_prefix,
            target,
            priority,
            conditions: None,
            rewrite: None,
            header_rules: None,
            settings: Box::default(),
        }
    }

    /// The same route with these settings.
    pub fn with_settings(mut self, settings: Settings) -> Route {
        self.settings = Box::new(settings);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The host it takes, if it names one.
    pub fn host(&self) -> Option<&HostPattern> {
        self.host.as_ref()
    }

    /// The same route changing requests' and responses' headers as these say.
    pub fn with_header_rules(mut self, request: &HeaderRules, response: &HeaderRules) -> Route {
        self.header_rules = (!request.is_empty() || !response.is_empty())
            .then(|| Box::new((Rules::new(request), Rules::new(response))));
        self
    }

    /// Its `request_headers` and `response_headers`, if it has either.
    pub fn header_rules(&self) -> Option<&(Rules, Rules)> {
        self.header_rules.as_deref()
    }

    /// The same route changing the path as `rewrite` says.
    pub fn with_rewrite(mut self, rewrite: Option<&PathRewrite>) -> Route {
        self.rewrite = rewrite.cloned().map(Box::new);
        self
    }

    /// How it changes the path the backend receives, if it does.
    pub fn rewrite(&self) -> Option<&PathRewrite> {
        self.rewrite.as_deref()
    }

    /// The same route with `conditions` to hold too.
    pub fn with_conditions(mut self, conditions: &Conditions) -> Route {
        self.conditions = (!conditions.is_empty()).then(|| Box::new(conditions.clone()));
        self
    }

    /// The priority of its requests, unless their priority header changes it.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Whether a request for `host` (port stripped; `None` when the request named none) and
    /// `path` (normalized), with what else `asked` says of it, takes this route.
    pub fn matches(&self, host: Option<&str>, path: &str, asked: &Asked<'_>) -> bool {
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
            && self
                .conditions
                .as_deref()
                .is_none_or(|conditions| holds(conditions, path, asked))
    }
}

/// Whether every condition holds of the request.
fn holds(conditions: &Conditions, path: &str, asked: &Asked<'_>) -> bool {
    conditions.path.as_deref().is_none_or(|exact| path == exact)
        && conditions
            .path_regex
            .as_ref()
            .is_none_or(|regex| regex.is_match(path))
        && (conditions.methods.is_empty() || conditions.methods.contains(asked.method))
        && conditions.headers.iter().all(|(name, rule)| {
            asked
                .headers
                .get_all(name)
                .iter()
                .any(|value| rule.admits(value.as_bytes()))
        })
        && conditions.query.iter().all(|(name, rule)| {
            asked
                .query
                .into_iter()
                .flat_map(|query| query.split('&'))
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .any(|(key, value)| {
                    percent_decode(key) == *name && rule.admits(percent_decode(value).as_bytes())
                })
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;

    /// A plain GET, with no headers or query.
    fn asked() -> Asked<'static> {
        Asked {
            method: &Method::GET,
            headers: Box::leak(Box::new(HeaderMap::new())),
            query: None,
        }
    }

    fn route(host: Option<&str>, prefix: Option<&str>) -> Route {
        let policy = crate::upstream::Policy::default();
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
            Target::Pool(pool),
            Priority::Normal,
        )
    }

    #[test]
    fn exact_host_is_case_insensitive() {
        let r = route(Some("API.example.com"), None);
        assert!(r.matches(Some("api.EXAMPLE.com"), "/", &asked()));
        assert!(!r.matches(Some("www.example.com"), "/", &asked()));
        assert!(!r.matches(None, "/", &asked()), "a host route needs a host");
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let r = route(Some("*.example.com"), None);
        assert!(r.matches(Some("a.example.com"), "/", &asked()));
        assert!(r.matches(Some("a.b.Example.com"), "/", &asked()));
        assert!(!r.matches(Some("example.com"), "/", &asked()));
        assert!(!r.matches(Some("badexample.com"), "/", &asked()));
    }

    #[test]
    fn prefix_and_host_must_both_match() {
        let r = route(Some("api.example.com"), Some("/v1/"));
        assert!(r.matches(Some("api.example.com"), "/v1/users", &asked()));
        assert!(!r.matches(Some("api.example.com"), "/v2/users", &asked()));
        assert!(!r.matches(Some("other.example.com"), "/v1/users", &asked()));
        assert!(route(None, None).matches(None, "/anything", &asked()));
    }

    #[test]
    fn host_name_strips_port_and_trailing_dot() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
    }
}
