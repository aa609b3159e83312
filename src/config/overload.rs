//! Overload protection as configured: `[pool.NAME.overload]` ([`Overload`]), a route's
//! `priority` ([`Priority`]) and `[server]`'s `priority_header` and `priority_trusted`
//! ([`PriorityRules`]), with their validation. What they do is `upstream/overload/`'s.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Spanned;

use super::validate::Source;
use super::{ConfigError, wire};

/// How much a request matters when its pool is saturated: the queue serves higher first, and a
/// full queue sheds lower first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    /// Lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];
    pub const NAMES: &str = "low, normal, high, critical";

    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The priority called `name`, in any case.
    pub fn from_name(name: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Its place in [`Priority::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Default `[pool.NAME.overload] queue`.
pub const DEFAULT_QUEUE: usize = 1024;
/// Default `min_in_flight`, the adaptive limit's floor (lowered to `max_in_flight` if that is
/// smaller).
pub const DEFAULT_MIN_IN_FLIGHT: u32 = 4;
const MAX_SLOTS: i64 = 1_000_000;

/// `[pool.NAME.overload]`: how many requests each backend takes at once, and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// Requests at once per backend (the adaptive limit's ceiling); 0: no limit, no queue.
    pub max_in_flight: u32,
    /// Requests that may wait in the pool for a free slot; 0 sheds at once.
    pub queue: usize,
    /// A request still queued after this is answered 503.
    pub queue_timeout: Duration,
    /// Sent as `Retry-After` with every shed answer.
    pub retry_after: Duration,
    /// Each backend's limit follows its latency between `min_in_flight` and `max_in_flight`.
    pub adaptive: bool,
    pub min_in_flight: u32,
}

impl Default for Overload {
    fn default() -> Overload {
        Overload {
            max_in_flight: 0,
            queue: DEFAULT_QUEUE,
            queue_timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            adaptive: false,
            min_in_flight: DEFAULT_MIN_IN_FLIGHT,
        }
    }
}

impl Overload {
    /// Whether backends have a limit at all (and requests may queue).
    pub fn limited(&self) -> bool {
        self.max_in_flight > 0
    }
}

/// `[server] priority_header` and `priority_trusted`: who may say how much a request matters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityRules {
    /// The request header naming a priority; `None`: routes alone decide.
    pub header: Option<HeaderName>,
    /// Clients whose header may raise a priority; anyone else's may only lower it.
    pub trusted: Vec<IpNet>,
}

impl PriorityRules {
    /// Whether `client` may raise its requests' priority.
    pub fn trusts(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.trusted.iter().any(|net| net.contains(&client))
    }
}

impl Source<'_> {
    /// `[pool.NAME.overload]`; the default (no limit) when the table is absent.
    pub(super) fn overload(
        &self,
        pool: &str,
        overload: Option<&Spanned<wire::Overload>>,
    ) -> Result<Overload, ConfigError> {
        let Some(table) = overload else {
            return Ok(Overload::default());
        };
        let wire = table.get_ref();
        let key = |name: &str| format!("pool.{pool}.overload.{name}");
        let defaults = Overload::default();
        let max_in_flight =
            self.int_in(&key("max_in_flight"), &wire.max_in_flight, 0..=MAX_SLOTS, 0)? as u32;
        let adaptive = wire.adaptive.as_ref().is_some_and(|a| *a.get_ref());
        if adaptive && max_in_flight == 0 {
            let at = wire.adaptive.as_ref().expect("adaptive is set");
            return Err(self.error_at(
                at,
                format!(
                    "{} needs max_in_flight, the adaptive limit's ceiling",
                    key("adaptive")
                ),
            ));
        }
        let floor = DEFAULT_MIN_IN_FLIGHT.min(max_in_flight.max(1));
        let min_in_flight = self.int_in(
            &key("min_in_flight"),
            &wire.min_in_flight,
            1..=MAX_SLOTS,
            i64::from(floor),
        )? as u32;
        if let Some(min) = &wire.min_in_flight
            && max_in_flight > 0
            && min_in_flight > max_in_flight
        {
            return Err(self.error_at(
                min,
                format!(
                    "{} = {min_in_flight} must not be above max_in_flight = {max_in_flight}",
                    key("min_in_flight")
                ),
            ));
        }
        Ok(Overload {
            max_in_flight,
            queue: self.int_in(
                &key("queue"),
                &wire.queue,
                0..=MAX_SLOTS,
                DEFAULT_QUEUE as i64,
            )? as usize,
            queue_timeout: self.duration(
                &key("queue_timeout"),
                &wire.queue_timeout,
                defaults.queue_timeout,
            )?,
            retry_after: self.duration_or_zero(
                &key("retry_after"),
                &wire.retry_after,
                defaults.retry_after,
            )?,
            adaptive,
            min_in_flight,
        })
    }

    /// A route's `priority`; `normal` when absent.
    pub(super) fn priority(
        &self,
        priority: Option<&Spanned<String>>,
    ) -> Result<Priority, ConfigError> {
        let Some(text) = priority else {
            return Ok(Priority::default());
        };
        Priority::from_name(text.get_ref()).ok_or_else(|| {
            self.error_at(
                text,
                format!(
                    "route priority {:?}: expected one of {}",
                    text.get_ref(),
                    Priority::NAMES
                ),
            )
        })
    }

    /// `[server] priority_header` and `priority_trusted`.
    pub(super) fn priority_rules(
        &self,
        server: &wire::Server,
    ) -> Result<PriorityRules, ConfigError> {
        let header = match &server.priority_header {
            None => None,
            Some(name) => Some(HeaderName::try_from(name.get_ref().as_str()).map_err(|_| {
                self.error_at(
                    name,
                    format!(
                        "server.priority_header = {:?} is not a header name",
                        name.get_ref()
                    ),
                )
            })?),
        };
        let trusted = self.ranges("server.priority_trusted", &server.priority_trusted)?;
        if header.is_none()
            && let Some(first) = server.priority_trusted.first()
        {
            return Err(self.error_at(
                first,
                "server.priority_trusted needs server.priority_header: without it no request \
                 names a priority",
            ));
        }
        Ok(PriorityRules { header, trusted })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("o.toml")).map_err(|e| e.to_string())
    }

    const POOL: &str = "[pool.api]\nbackends = [{ address = \"127.0.0.1:1\" }]\n";

    #[test]
    fn reads_every_overload_key() {
        let config = check(&format!(
            "{POOL}[pool.api.overload]\nmax_in_flight = 64\nqueue = 10\nqueue_timeout = \"2s\"\n\
             retry_after = \"3s\"\nadaptive = true\nmin_in_flight = 8\n"
        ))
        .unwrap();
        assert_eq!(
            config.pools[0].overload,
            Overload {
                max_in_flight: 64,
                queue: 10,
                queue_timeout: Duration::from_secs(2),
                retry_after: Duration::from_secs(3),
                adaptive: true,
                min_in_flight: 8,
            }
        );
    }

    #[test]
    fn no_table_means_no_limit() {
        let config = check(POOL).unwrap();
        assert!(!config.pools[0].overload.limited());
        assert_eq!(config.routes[0].priority, Priority::Normal);
    }

    #[test]
    fn faults_name_their_line_and_key() {
        let cases = [
            (
                "[pool.api.overload]\nadaptive = true\n",
                "o.toml:4: pool.api.overload.adaptive needs max_in_flight",
            ),
            (
                "[pool.api.overload]\nmax_in_flight = 4\nmin_in_flight = 5\n",
                "o.toml:5: pool.api.overload.min_in_flight = 5 must not be above",
            ),
            (
                "[pool.api.overload]\nqueue = -1\n",
                "o.toml:4: pool.api.overload.queue = -1 is out of range",
            ),
            (
                "[pool.api.overload]\nqueue_timeout = \"0s\"\n",
                "o.toml:4: pool.api.overload.queue_timeout must be greater than zero",
            ),
            (
                "[pool.api.overload]\nmax_inflight = 4\n",
                "o.toml:4: unknown field `max_inflight`",
            ),
            (
                "[[route]]\npool = \"api\"\npriority = \"urgent\"\n",
                "o.toml:5: route priority \"urgent\": expected one of low, normal, high, critical",
            ),
            (
                "[server]\npriority_header = \"x priority\"\n",
                "o.toml:4: server.priority_header = \"x priority\" is not a header name",
            ),
            (
                "[server]\npriority_header = \"x-priority\"\npriority_trusted = [\"10.0.0.0/33\"]\n",
                "o.toml:5: server.priority_trusted: \"10.0.0.0/33\" is not an address",
            ),
            (
                "[server]\npriority_trusted = [\"10.0.0.0/8\"]\n",
                "o.toml:4: server.priority_trusted needs server.priority_header",
            ),
        ];
        for (tail, expected) in cases {
            let error = check(&format!("{POOL}{tail}")).unwrap_err();
            assert!(error.starts_with(expected), "{tail:?}: got {error}");
        }
    }

    #[test]
    fn priorities_order_and_parse_in_any_case() {
        assert!(Priority::Critical > Priority::High && Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!(Priority::from_name("CRITICAL"), Some(Priority::Critical));
        assert_eq!(Priority::from_name("urgent"), None);
    }

    #[test]
    fn trusted_ranges_match_mapped_addresses_too() {
        let config = check(&format!(
            "[server]\npriority_header = \"x-priority\"\npriority_trusted = [\"127.0.0.1\", \"10.0.0.0/8\"]\n{POOL}"
        ))
        .unwrap();
        let rules = &config.server.priority;
        assert_eq!(rules.header.as_ref().unwrap().as_str(), "x-priority");
        assert!(rules.trusts("127.0.0.1".parse().unwrap()));
        assert!(rules.trusts("10.2.3.4".parse().unwrap()));
        assert!(rules.trusts("::ffff:10.2.3.4".parse().unwrap()));
        assert!(!rules.trusts("127.0.0.2".parse().unwrap()));
    }
}
