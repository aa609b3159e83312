//! From the file as written to a [`Config`]: every rule, and a line-numbered message for each fault.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use toml::Spanned;

use super::units::parse_duration;
use super::wire;
use super::{
    AccessFormat, AccessPath, Admin, Config, ConfigError, DEFAULT_LISTEN, DEFAULT_SHUTDOWN_GRACE,
    Log, PoolConfig, RouteConfig, Server, TlsConfig,
};
use super::{HostPattern, Priority, Target};

/// Parses and checks `text`, read from `path`.
pub fn validate(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let src = Source { text, path };
    let file: wire::File = toml::from_str(text).map_err(|err| src.syntax(&err))?;
    let pools = file
        .pool
        .iter()
        .map(|(name, pool)| src.pool(name, pool))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = src.routes(&file.route, &pools)?;
    let server = src.server(&file.server)?;
    let admin = match &file.admin {
        None => None,
        Some(admin) => Some(src.admin(admin)?),
    };
    let tls = match &file.tls {
        None => None,
        Some(tls) => Some(src.tls(tls)?),
    };
    src.listeners_apart(&file, &server, admin.as_ref(), tls.as_ref())?;
    let registry = match &file.registry {
        None => None,
        Some(registry) => src.registry(registry)?,
    };
    if let (Some(_), Some(admin), Some(wire_admin)) = (&registry, &admin, &file.admin)
        && admin.state_file.is_some()
        && let Some(state_file) = &wire_admin.get_ref().state_file
    {
        return Err(src.error_at(
            state_file,
            "admin.state_file and registry.etcd: registrations live in one place; keep etcd \
             (shared by every instance) or the state file (this instance alone)",
        ));
    }
    if let Some(redirect) = &file.server.redirect_https
        && *redirect.get_ref()
        && tls.is_none()
    {
        return Err(src.error_at(
            redirect,
            "server.redirect_https = true needs a [tls] listener to redirect to",
        ));
    }
    Ok(Config {
        path: path.to_path_buf(),
        server,
        timeouts: src.timeouts(&file.timeouts)?,
        pools,
        routes,
        admin,
        log: src.log(&file.log)?,
        limits: src.limits(&file.limits)?,
        tls,
        registry,
    })
}

/// The text being validated, for turning spans into line-numbered errors.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
}

impl Source<'_> {
    pub fn error_at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.text, spanned.span().start, message)
    }

    /// A TOML or type error, worded for an operator and naming the key when it can.
    fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        let message = err
            .message()
            .trim_end()
            .replace("expected i64", "expected an integer")
            .replace("expected bool", "expected true or false");
        match err.span() {
            Some(span) => {
                let key = key_before(self.text, span.start);
                let message = match key {
                    Some(key) => format!("{key}: {message}"),
                    // toml's span is the repeated key itself (`web` of a second `[pool.web]`).
                    None if message == "duplicate key" => {
                        let repeated = self.text.get(span.clone()).unwrap_or("").trim();
                        format!("duplicate key {repeated:?}: it is already defined above")
                    }
                    None => message,
                };
                ConfigError::at(self.path, self.text, span.start, message)
            }
            None => ConfigError::whole_file(self.path, message),
        }
    }

    fn server(&self, server: &wire::Server) -> Result<Server, ConfigError> {
        let listen = match &server.listen {
            None => vec![
                DEFAULT_LISTEN
                    .parse()
                    .expect("the default listen address parses"),
            ],
            Some(listen) => self.listen("server.listen", listen)?,
        };
        let workers = match &server.workers {
            None => None,
            Some(w) if (1..=1024).contains(w.get_ref()) => Some(*w.get_ref() as usize),
            Some(w) => {
                return Err(self.error_at(
                    w,
                    format!("server.workers = {}: expected 1 to 1024", w.get_ref()),
                ));
            }
        };
        let shutdown_grace = self.duration_or_zero(
            "server.shutdown_grace",
            &server.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        Ok(Server {
            listen,
            workers,
            shutdown_grace,
            redirect_https: server
                .redirect_https
                .as_ref()
                .is_some_and(|redirect| *redirect.get_ref()),
            underscores_in_headers: server.underscores_in_headers.unwrap_or(false),
            priority: self.priority_rules(server)?,
            trusted_proxies: self.ranges("server.trusted_proxies", &server.trusted_proxies)?,
        })
    }

    fn admin(&self, admin: &Spanned<wire::Admin>) -> Result<Admin, ConfigError> {
        let table = admin.get_ref();
        let listen: SocketAddr = table.listen.get_ref().parse().map_err(|_| {
            self.error_at(
                &table.listen,
                format!(
                    "admin.listen: {:?} is not an address such as \"127.0.0.1:9901\"",
                    table.listen.get_ref()
                ),
            )
        })?;
        let token = match &table.token {
            Some(token) if token.get_ref().trim().is_empty() => {
                return Err(self.error_at(token, "admin.token is empty"));
            }
            Some(token) => Some(token.get_ref().clone()),
            None => None,
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(self.error_at(
                &table.listen,
                format!("admin.listen = \"{listen}\" is not loopback: set admin.token, or listen on 127.0.0.1"),
            ));
        }
        Ok(Admin {
            listen,
            token,
            state_file: table
                .state_file
                .as_ref()
                .map(|path| std::path::PathBuf::from(path.get_ref())),
        })
    }

    fn log(&self, log: &wire::Log) -> Result<Log, ConfigError> {
        let access = match &log.access {
            None => Some(AccessFormat::Json),
            Some(format) => match format.get_ref().as_str() {
                "json" => Some(AccessFormat::Json),
                "common" => Some(AccessFormat::Common),
                "off" => None,
                other => {
                    return Err(self.error_at(
                        format,
                        format!("log.access = {other:?}: expected \"json\", \"common\" or \"off\""),
                    ));
                }
            },
        };
        let access_path = match &log.access_path {
            None => AccessPath::Stdout,
            Some(path) if path.get_ref() == "-" => AccessPath::Stdout,
            Some(path) if path.get_ref().trim().is_empty() => {
                return Err(self.error_at(
                    path,
                    "log.access_path is empty: give a file path, or \"-\" for standard output",
                ));
            }
            Some(path) => {
                let file = PathBuf::from(path.get_ref());
                // The file is created at startup if missing; its directory must already be there.
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
                    && !dir.is_dir()
                {
                    return Err(self.error_at(
                        path,
                        format!(
                            "log.access_path: directory {} does not exist",
                            dir.display()
                        ),
                    ));
                }
                AccessPath::File(file)
            }
        };
        Ok(Log {
            access,
            access_path,
        })
    }

    /// The plain, TLS and admin listeners on distinct addresses: one of them could not bind.
    fn listeners_apart(
        &self,
        file: &wire::File,
        server: &Server,
        admin: Option<&Admin>,
        tls: Option<&TlsConfig>,
    ) -> Result<(), ConfigError> {
        let taken = |addr: &SocketAddr, by: &[SocketAddr]| by.iter().any(|b| collide(addr, b));
        if let (Some(tls), Some(spanned)) = (tls, &file.tls)
            && let Some(addr) = tls.listen.iter().find(|a| taken(a, &server.listen))
        {
            return Err(self.error_at(
                &spanned.get_ref().listen,
                format!(
                    "tls.listen: {addr} collides with server.listen: an address takes one listener"
                ),
            ));
        }
        if let (Some(admin), Some(spanned)) = (admin, &file.admin) {
            let tls_listen = tls.map_or(&[][..], |tls| &tls.listen[..]);
            if taken(&admin.listen, &server.listen) || taken(&admin.listen, tls_listen) {
                return Err(self.error_at(
                    &spanned.get_ref().listen,
                    format!(
                        "admin.listen: {} collides with a proxy listener: the admin API needs its own",
                        admin.listen
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn listen(
        &self,
        key: &str,
        listen: &Spanned<wire::OneOrMany>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let addresses = &listen.get_ref().0;
        if addresses.is_empty() {
            return Err(self.error_at(listen, format!("{key} is empty: give at least one address")));
        }
        let mut seen = HashSet::new();
        let mut parsed: Vec<SocketAddr> = Vec::with_capacity(addresses.len());
        for text in addresses {
            let addr: SocketAddr = text.parse().map_err(|_| {
                self.error_at(
                    listen,
                    format!("{key}: {text:?} is not an address such as \"127.0.0.1:8080\""),
                )
            })?;
            if !seen.insert(addr) {
                return Err(self.error_at(listen, format!("{key}: {addr} is listed twice")));
            }
            if let Some(other) = parsed.iter().find(|other| collide(&addr, other)) {
                return Err(self.error_at(
                    listen,
                    format!("{key}: {addr} collides with {other}: one of them could not bind"),
                ));
            }
            parsed.push(addr);
        }
        Ok(parsed)
    }

    /// An integer in `range`, or `default` when the key is absent.
    pub fn int_in(
        &self,
        key: &str,
        value: &Option<Spanned<i64>>,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(self.error_at(
                v,
                format!(
                    "{key} = {} is out of range, expected {} to {}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A duration (zero allowed), or `default` when the key is absent.
    pub fn duration_or_zero(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(value) => parse_duration(value.get_ref())
                .map_err(|reason| self.error_at(value, format!("{key}: {reason}"))),
        }
    }

    /// A positive duration, or `default` when the key is absent.
    pub fn duration(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match parse_duration(value.get_ref()) {
            Ok(duration) if duration > Duration::ZERO => Ok(duration),
            Ok(_) => Err(self.error_at(value, format!("{key} must be greater than zero"))),
            Err(reason) => Err(self.error_at(value, format!("{key}: {reason}"))),
        }
    }

    fn routes(
        &self,
        routes: &[Spanned<wire::Route>],
        pools: &[PoolConfig],
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        if routes.is_empty() {
            // A single pool needs no route table: everything goes to it, as HAProxy's
            // default_backend would. With several pools, which one is meant must be said.
            return match pools {
                [only] => Ok(vec![RouteConfig {
                    host: None,
                    path_prefix: None,
                    conditions: Default::default(),
                    rewrite: None,
                    request_headers: Default::default(),
                    response_headers: Default::default(),
                    target: Target::Pool(only.name.clone()),
                    mirror: None,
                    rate_limit: None,
                    timeout: None,
                    retries: None,
                    max_body: None,
                    priority: Priority::default(),
                    name: "route-1".to_owned(),
                }]),
                [] => Err(ConfigError::whole_file(
                    self.path,
                    "no [pool.NAME] is defined: there is nowhere to send requests",
                )),
                _ => Err(ConfigError::whole_file(
                    self.path,
                    "no [[route]] is defined: add routes saying which pool serves which requests",
                )),
            };
        }
        let built = routes
            .iter()
            .enumerate()
            .map(|(index, route)| self.route(index, route, pools))
            .collect::<Result<Vec<_>, _>>()?;
        self.names_apart(routes, &built)?;
        Ok(built)
    }

    fn route(
        &self,
        index: usize,
        spanned: &Spanned<wire::Route>,
        pools: &[PoolConfig],
    ) -> Result<RouteConfig, ConfigError> {
        let route = spanned.get_ref();
        let host = match &route.host {
            None => None,
            Some(text) => Some(
                HostPattern::parse(text.get_ref())
                    .map_err(|reason| self.error_at(text, format!("route host {reason}")))?,
            ),
        };
        let conditions = self.conditions(route)?;
        let path_prefix = match &route.path_prefix {
            None => None,
            Some(prefix) => Some(self.normalized("path_prefix", prefix)?),
        };
        let target = self.target(spanned, pools)?;
        let timeout = match &route.timeout {
            None => None,
            Some(_) => Some(self.duration("route timeout", &route.timeout, Duration::ZERO)?),
        };
        let retries = match &route.retries {
            None => None,
            Some(_) => Some(self.int_in(
                "route retries",
                &route.retries,
                0..=i64::from(super::MAX_RETRIES),
                0,
            )? as u32),
        };
        Ok(RouteConfig {
            host,
            path_prefix,
            conditions,
            rewrite: self.path_rewrite(route)?,
            request_headers: self
                .header_rules("request_headers", route.request_headers.as_ref())?,
            response_headers: self
                .header_rules("response_headers", route.response_headers.as_ref())?,
            mirror: self.mirror(route, &target, pools)?,
            target,
            rate_limit: self.rate_limit(route.rate_limit.as_ref())?,
            timeout,
            retries,
            max_body: self.route_max_body(&route.max_body)?,
            priority: self.priority(route.priority.as_ref())?,
            name: match &route.name {
                Some(name) => name.get_ref().clone(),
                None => format!("route-{}", index + 1),
            },
        })
    }

    /// Route names, which must differ: metrics and rate limit headers tell routes apart by them.
    fn names_apart(
        &self,
        routes: &[Spanned<wire::Route>],
        built: &[RouteConfig],
    ) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (wire, route) in routes.iter().zip(built) {
            if !seen.insert(route.name.as_str()) {
                return Err(match &wire.get_ref().name {
                    Some(name) => self.error_at(
                        name,
                        format!(
                            "route name {:?} is already taken by an earlier route",
                            route.name
                        ),
                    ),
                    None => self.error_at(
                        wire,
                        format!(
                            "this route's default name {:?} is already taken by an earlier \
                             route's name: rename that one",
                            route.name
                        ),
                    ),
                });
            }
            if route.name.is_empty() || route.name.chars().any(|c| c.is_control() || c == '"') {
                let at = wire
                    .get_ref()
                    .name
                    .as_ref()
                    .map(|n| n.span())
                    .unwrap_or(wire.span());
                return Err(ConfigError::at(
                    self.path,
                    self.text,
                    at.start,
                    format!(
                        "route name {:?} must be non-empty, without quotes or control characters",
                        route.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The key whose value starts at `offset` (`weight` in `weight = "3"`), if there is one.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?.trim_end();
    let before = before.strip_suffix('=')?.trim_end();
    let start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = &before[start..];
    (!key.is_empty()).then_some(key)
}

/// Whether two listen addresses cannot both be bound: the same port, and the same address or
/// a wildcard that covers the other (`[::]` covers IPv4 too: Linux binds it dual-stack). Port
/// 0 asks for any free port: two of them never collide.
fn collide(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |wide: &SocketAddr, other: &SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// `host:port`, optionally written `http://host:port`.
pub fn parse_backend_address(text: &str) -> Result<Authority, String> {
    let bare = text.strip_prefix("http://").unwrap_or(text);
    if bare.contains("://") {
        return Err(format!(
            "{text:?}: a backend is host:port, http://host:port or https://host:port"
        ));
    }
    let authority: Authority = bare
        .parse()
        .map_err(|_| format!("{text:?} is not host:port, e.g. \"127.0.0.1:9001\""))?;
    if authority.port_u16().is_none() || authority.host().is_empty() {
        return Err(format!(
            "{text:?} needs a host and a port, e.g. \"127.0.0.1:9001\""
        ));
    }
    if authority.port_u16() == Some(0) {
        return Err(format!("{text:?}: port 0 cannot be connected to"));
    }
    if authority.as_str().contains('@') {
        return Err(format!("{text:?} must not carry credentials"));
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT};

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080", "127.0.0.1:8081"]
workers = 2

[timeouts]
connect = "250ms"
response = "1m"

[pool.web]
strategy = "weighted"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "http://127.0.0.1:9002", weight = 3 },
]

[pool.api]
strategy = "least_connections"
backends = [{ address = "127.0.0.1:9101" }]

[[route]]
host = "*.example.com"
path_prefix = "/v1/"
pool = "api"

[[route]]
pool = "web"
"#;

    fn check(text: &str) -> Result<Config, String> {
        validate(text, Path::new("proxy.toml")).map_err(|e| e.to_string())
    }

    /// `good` with `from` replaced by `to`, expected to fail with a message containing `expect`.
    fn assert_rejected(from: &str, to: &str, expect: &str) {
        assert!(
            GOOD.contains(from),
            "test bug: {from:?} is not in the sample"
        );
        let err = check(&GOOD.replacen(from, to, 1)).expect_err("must be rejected");
        assert!(
            err.contains(expect),
            "error {err:?} should contain {expect:?}"
        );
    }

    #[test]
    fn accepts_the_documented_example() {
        let config = check(GOOD).unwrap();
        assert_eq!(config.server.listen.len(), 2);
        assert_eq!(config.server.workers, Some(2));
        assert_eq!(config.timeouts.connect, Duration::from_millis(250));
        assert_eq!(config.timeouts.response, Duration::from_secs(60));
        let web = config.pool("web").unwrap();
        assert_eq!(web.strategy, Strategy::Weighted);
        assert_eq!(web.backends[1].address.as_str(), "127.0.0.1:9002");
        assert_eq!(web.backends[1].weight, 3);
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/v1/"));
    }

    #[test]
    fn unknown_strategy_names_line_and_choices() {
        assert_rejected(
            "\"weighted\"",
            "\"fastest\"",
            "proxy.toml:11: unknown strategy \"fastest\", expected one of round_robin, weighted, least_connections, random",
        );
    }

    #[test]
    fn each_fault_names_its_line() {
        assert_rejected(
            "weight = 3",
            "weight = 0",
            "proxy.toml:14: pool \"web\": backend 127.0.0.1:9002: weight 0 is invalid",
        );
        assert_rejected(
            "pool = \"api\"",
            "pool = \"nope\"",
            "proxy.toml:24: route to undefined pool \"nope\"",
        );
        assert_rejected(
            "\"127.0.0.1:9101\"",
            "\"127.0.0.1\"",
            "proxy.toml:19: pool \"api\": backend address \"127.0.0.1\" needs a host and a port",
        );
        assert_rejected("\"127.0.0.1:9101\"", "\"not an address\"", "proxy.toml:19:");
        assert_rejected(
            "\"127.0.0.1:8081\"",
            "\"localhost\"",
            "proxy.toml:3: server.listen: \"localhost\" is not an address",
        );
        assert_rejected("\"250ms\"", "\"soon\"", "proxy.toml:7: timeouts.connect:");
        assert_rejected(
            "\"1m\"",
            "\"0s\"",
            "proxy.toml:8: timeouts.response must be greater than zero",
        );
        assert_rejected(
            "\"/v1/\"",
            "\"v1\"",
            "proxy.toml:23: route path_prefix \"v1\" must start with '/'",
        );
        for unnormal in ["/v1//", "/v1/./", "/%761/"] {
            assert_rejected(
                "\"/v1/\"",
                &format!("{unnormal:?}"),
                "proxy.toml:23: route path_prefix",
            );
        }
        assert_rejected(
            "\"*.example.com\"",
            "\"a*.example.com\"",
            "proxy.toml:22: route host",
        );
        assert_rejected(
            "workers = 2",
            "workers = 0",
            "proxy.toml:4: server.workers = 0",
        );
        assert_rejected(
            "\"http://127.0.0.1:9002\"",
            "\"127.0.0.1:9001\"",
            "proxy.toml:14: pool \"web\": backend 127.0.0.1:9001 is listed twice",
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_rejected(
            "strategy = \"weighted\"",
            "strategi = \"weighted\"",
            "proxy.toml:11: unknown field `strategi`",
        );
        assert_rejected(
            "[timeouts]",
            "[timeout]",
            "proxy.toml:6: unknown field `timeout`",
        );
        assert_rejected(
            "weight = 1 }",
            "wieght = 1 }",
            "proxy.toml:13: unknown field `wieght`",
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        assert_rejected(
            "\"250ms\"",
            "250",
            "proxy.toml:7: connect: invalid type: integer `250`, expected a string",
        );
        assert_rejected(
            "weight = 3",
            "weight = \"3\"",
            "proxy.toml:14: weight: invalid type: string \"3\", expected an integer",
        );
        assert_rejected(
            "\"127.0.0.1:9101\"",
            "\"127.0.0.1:0\"",
            "port 0 cannot be connected to",
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        assert_rejected("workers = 2", "workers = ", "proxy.toml:4:");
        assert_rejected("weight = 3", "weight = \"3\"", "proxy.toml:14:");
    }

    #[test]
    fn listeners_collide_on_a_port_a_wildcard_covers() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(collide(&addr("127.0.0.1:80"), &addr("127.0.0.1:80")));
        assert!(collide(&addr("0.0.0.0:80"), &addr("127.0.0.1:80")));
        assert!(collide(&addr("127.0.0.1:80"), &addr("[::]:80")));
        assert!(collide(&addr("[::]:80"), &addr("0.0.0.0:80")));
        assert!(
            !collide(&addr("0.0.0.0:80"), &addr("[::1]:80")),
            "IPv4's wildcard only"
        );
        assert!(!collide(&addr("127.0.0.1:80"), &addr("127.0.0.2:80")));
        assert!(!collide(&addr("127.0.0.1:80"), &addr("127.0.0.1:81")));
        assert!(!collide(&addr("127.0.0.1:0"), &addr("127.0.0.1:0")));
        let err = check(&GOOD.replace(
            "[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]",
            "[\"0.0.0.0:8080\", \"127.0.0.1:8080\"]",
        ))
        .unwrap_err();
        assert!(
            err.contains("server.listen: 127.0.0.1:8080 collides with 0.0.0.0:8080"),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_key_or_table_is_named() {
        let pool = "backends = [{ address = \"127.0.0.1:9001\" }]\n";
        let err = check(&format!(
            "[pool.web]\n{pool}strategy = \"random\"\nstrategy = \"weighted\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("proxy.toml:4: duplicate key \"strategy\""),
            "{err}"
        );
        let err = check(&format!("[pool.web]\n{pool}[pool.web]\n{pool}")).unwrap_err();
        assert!(err.contains("proxy.toml:3: duplicate key \"web\""), "{err}");
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let config = check("[pool.only]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n").unwrap();
        assert_eq!(config.server.listen, [DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(config.server.workers, None);
        assert_eq!(config.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.timeouts.response, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(config.pools[0].strategy, Strategy::RoundRobin);
        assert_eq!(config.pools[0].backends[0].weight, 1);
        assert_eq!(config.routes.len(), 1, "a lone pool gets a catch-all route");
    }

    #[test]
    fn listen_accepts_a_single_string() {
        let config = check(&GOOD.replace(
            "[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]",
            "\"127.0.0.1:9999\"",
        ))
        .unwrap();
        assert_eq!(config.server.listen, ["127.0.0.1:9999".parse().unwrap()]);
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let base = "[pool.p]\nbackends = []\n[admin]\n";
        let err = check(&format!("{base}listen = \"0.0.0.0:9901\"\n")).unwrap_err();
        assert!(
            err.starts_with("proxy.toml:4: admin.listen = \"0.0.0.0:9901\" is not loopback"),
            "{err}"
        );
        let config = check(&format!(
            "{base}listen = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n"
        ))
        .unwrap();
        assert_eq!(config.admin.unwrap().token.as_deref(), Some("s3cret"));
        let config = check(&format!(
            "{base}listen = \"127.0.0.1:9901\"\nstate_file = \"/tmp/x.json\"\n"
        ))
        .unwrap();
        let admin = config.admin.unwrap();
        assert_eq!(admin.token, None);
        assert_eq!(admin.state_file.unwrap().to_str(), Some("/tmp/x.json"));
    }

    #[test]
    fn shutdown_grace_defaults_and_parses() {
        let config = check(GOOD).unwrap();
        assert_eq!(config.server.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let config =
            check(&GOOD.replace("workers = 2", "workers = 2\nshutdown_grace = \"5s\"")).unwrap();
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(5));
    }

    #[test]
    fn several_pools_without_routes_is_an_error() {
        let text = GOOD.split("[[route]]").next().unwrap();
        let err = check(text).unwrap_err();
        assert!(err.contains("no [[route]] is defined"), "{err}");
        assert!(check("").unwrap_err().contains("no [pool.NAME] is defined"));
    }

    #[test]
    fn access_log_defaults_to_json_on_stdout_and_checks_its_values() {
        let config = check(GOOD).unwrap();
        assert_eq!(config.log.access, Some(AccessFormat::Json));
        assert_eq!(config.log.access_path, AccessPath::Stdout);
        let config = check(&format!(
            "{GOOD}[log]\naccess = \"common\"\naccess_path = \"/var/log/f.log\"\n"
        ))
        .unwrap();
        assert_eq!(config.log.access, Some(AccessFormat::Common));
        assert_eq!(
            config.log.access_path,
            AccessPath::File("/var/log/f.log".into())
        );
        let config = check(&format!("{GOOD}[log]\naccess = \"off\"\n")).unwrap();
        assert_eq!(config.log.access, None);
        let err = check(&format!("{GOOD}[log]\naccess = \"xml\"\n")).unwrap_err();
        assert!(
            err.contains("log.access = \"xml\": expected \"json\", \"common\" or \"off\""),
            "{err}"
        );
        let err = check(&format!("{GOOD}[log]\naccess_path = \"\"\n")).unwrap_err();
        assert!(err.contains("log.access_path is empty"), "{err}");
    }

    #[test]
    fn limits_and_timeouts_have_defaults_and_are_checked() {
        let config = check(GOOD).unwrap();
        assert_eq!(config.limits, crate::config::Limits::default());
        assert_eq!(config.limits.max_body, 100 << 20);
        assert_eq!(config.timeouts.request_header, Duration::from_secs(10));
        assert_eq!(config.timeouts.request, None);
        let config = check(&format!(
            "{GOOD}[limits]\nmax_body = \"1KiB\"\nmax_connections_per_ip = 4\n"
        ))
        .unwrap();
        assert_eq!(config.limits.max_body, 1024);
        assert_eq!(config.limits.max_connections_per_ip, Some(4));
        let err = check(&format!("{GOOD}[limits]\nmax_body = \"lots\"\n")).unwrap_err();
        assert!(
            err.contains("limits.max_body: \"lots\" is not a size"),
            "{err}"
        );
        let err = check(&format!("{GOOD}[limits]\nmax_header_bytes = \"1KiB\"\n")).unwrap_err();
        assert!(
            err.contains("limits.max_header_bytes = \"1KiB\" is out of range"),
            "{err}"
        );
        let err = check(&format!("{GOOD}[limits]\nmax_headers = 0\n")).unwrap_err();
        assert!(
            err.contains("limits.max_headers = 0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn a_non_ascii_character_before_a_bad_value_is_no_panic() {
        // Found by `config_parse_never_panics` (`mod.rs`): the key search sliced inside a
        // multi-byte character.
        let err = check("\u{1058c}==").unwrap_err();
        assert!(err.starts_with("proxy.toml:1:"), "{err}");
    }
}
