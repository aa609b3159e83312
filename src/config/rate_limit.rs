//! A route's `rate_limit` ([`RateLimit`]): what identifies a client ([`LimitKey`]), how many
//! requests it may make per period, how many at once, and how many clients are remembered; and
//! `[server] trusted_proxies`, the peers whose `X-Forwarded-For` names the client. Counting
//! requests is `proxy/rate_limit.rs`'s.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Spanned;

use super::units::parse_duration;
use super::validate::Source;
use super::{ConfigError, wire};

/// Default `max_keys`: clients remembered per route.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Largest `max_keys`.
pub const MAX_KEYS: i64 = 10_000_000;

/// A route's `rate_limit`: `count` requests per `per` for each client, `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub key: LimitKey,
    pub count: u32,
    pub per: Duration,
    /// How many requests may arrive at once after a quiet spell; `count` when not given.
    pub burst: u32,
    /// Clients remembered at most; the stalest is forgotten to make room.
    pub max_keys: usize,
}

impl RateLimit {
    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// What tells one client from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// `client_ip`: the client's address (through `trusted_proxies`).
    ClientIp,
    /// `header:NAME`: this header's value.
    Header(HeaderName),
    /// `cookie:NAME`: this cookie's value.
    Cookie(String),
}

impl Source<'_> {
    /// A route's `rate_limit`, if it has one.
    pub(super) fn rate_limit(
        &self,
        limit: Option<&Spanned<wire::RateLimit>>,
    ) -> Result<Option<RateLimit>, ConfigError> {
        let Some(limit) = limit else {
            return Ok(None);
        };
        let table = limit.get_ref();
        let key = match &table.key {
            None => LimitKey::ClientIp,
            Some(key) => limit_key(key.get_ref()).map_err(|reason| {
                self.error_at(
                    key,
                    format!("route rate_limit key = {:?}: {reason}", key.get_ref()),
                )
            })?,
        };
        let (count, per) = parse_rate(table.rate.get_ref()).map_err(|reason| {
            self.error_at(
                &table.rate,
                format!(
                    "route rate_limit rate = {:?}: {reason}",
                    table.rate.get_ref()
                ),
            )
        })?;
        let burst = self.int_in(
            "route rate_limit burst",
            &table.burst,
            1..=1_000_000_000,
            i64::from(count),
        )? as u32;
        let max_keys = self.int_in(
            "route rate_limit max_keys",
            &table.max_keys,
            1..=MAX_KEYS,
            DEFAULT_MAX_KEYS as i64,
        )? as usize;
        Ok(Some(RateLimit {
            key,
            count,
            per,
            burst,
            max_keys,
        }))
    }

    /// A list of addresses or CIDR ranges (`key` names it in errors).
    pub(super) fn ranges(
        &self,
        key: &str,
        list: &[Spanned<String>],
    ) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .map(|range| {
                let text = range.get_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        self.error_at(
                            range,
                            format!(
                                "{key}: {text:?} is not an address or a range such as \
                                 \"10.0.0.0/8\""
                            ),
                        )
                    })
            })
            .collect()
    }
}

fn limit_key(text: &str) -> Result<LimitKey, String> {
    const EXPECTED: &str = "expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\"";
    if text == "client_ip" {
        return Ok(LimitKey::ClientIp);
    }
    if let Some(name) = text.strip_prefix("header:") {
        return HeaderName::try_from(name.trim())
            .map(LimitKey::Header)
            .map_err(|_| format!("{name:?} is not a header name"));
    }
    if let Some(name) = text.strip_prefix("cookie:") {
        let name = name.trim();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        return match token {
            true => Ok(LimitKey::Cookie(name.to_owned())),
            false => Err(format!("{name:?} is not a cookie name")),
        };
    }
    Err(EXPECTED.to_owned())
}

/// `"10/s"`: a count and the period it is allowed in (`s`, `m`, `h`, or a duration such as
/// `10s`; nginx's `10r/s` reads the same).
fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    const EXPECTED: &str = "expected requests per period such as \"10/s\", \"600/m\" or \"5/10s\"";
    let (count, period) = text.split_once('/').ok_or(EXPECTED)?;
    let count: u32 = count
        .trim()
        .trim_end_matches('r')
        .parse()
        .ok()
        .filter(|count| (1..=1_000_000_000).contains(count))
        .ok_or(EXPECTED)?;
    let period = period.trim();
    let period = match period {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => parse_duration(other).map_err(|_| EXPECTED)?,
    };
    if period.is_zero() || period / count < Duration::from_nanos(1) {
        return Err(EXPECTED.to_owned());
    }
    Ok((count, period))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(limit: &str) -> Result<Config, String> {
        let text = format!("[pool.api]\n[[route]]\npool = \"api\"\nrate_limit = {limit}\n");
        Config::parse(&text, Path::new("a.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_keys_rates_and_defaults() {
        let config = check("{ rate = \"10/s\" }").unwrap();
        assert_eq!(
            config.routes[0].rate_limit,
            Some(RateLimit {
                key: LimitKey::ClientIp,
                count: 10,
                per: Duration::from_secs(1),
                burst: 10,
                max_keys: DEFAULT_MAX_KEYS,
            })
        );
        let config =
            check("{ key = \"header:X-Api-Key\", rate = \"5/10s\", burst = 20, max_keys = 7 }")
                .unwrap();
        let limit = config.routes[0].rate_limit.clone().unwrap();
        assert_eq!(
            limit.key,
            LimitKey::Header(HeaderName::from_static("x-api-key"))
        );
        assert_eq!(limit.interval(), Duration::from_secs(2));
        assert_eq!((limit.burst, limit.max_keys), (20, 7));
        let config = check("{ key = \"cookie:session\", rate = \"600r/m\" }").unwrap();
        let limit = config.routes[0].rate_limit.clone().unwrap();
        assert_eq!(limit.key, LimitKey::Cookie("session".into()));
        assert_eq!(limit.interval(), Duration::from_millis(100));
    }

    #[test]
    fn faults_name_their_line_and_key() {
        for (limit, expected) in [
            (
                "{ rate = \"10\" }",
                "a.toml:4: route rate_limit rate = \"10\": expected",
            ),
            (
                "{ rate = \"0/s\" }",
                "a.toml:4: route rate_limit rate = \"0/s\": expected",
            ),
            (
                "{ rate = \"1/y\" }",
                "a.toml:4: route rate_limit rate = \"1/y\": expected",
            ),
            (
                "{ key = \"ip\", rate = \"1/s\" }",
                "a.toml:4: route rate_limit key = \"ip\": expected \"client_ip\"",
            ),
            (
                "{ key = \"header:a b\", rate = \"1/s\" }",
                "a.toml:4: route rate_limit key = \"header:a b\": \"a b\" is not a header name",
            ),
            (
                "{ rate = \"1/s\", burst = 0 }",
                "a.toml:4: route rate_limit burst = 0 is out of range",
            ),
            (
                "{ rate = \"1/s\", max_keys = 0 }",
                "a.toml:4: route rate_limit max_keys = 0 is out of range",
            ),
        ] {
            let error = check(limit).unwrap_err();
            assert!(error.starts_with(expected), "{limit:?}: got {error}");
        }
    }
}
