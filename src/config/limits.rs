//! `[limits]` and `[timeouts]`: what a client may make the proxy hold, and for how long.

use std::time::Duration;

use toml::Spanned;

use super::units::parse_size;
use super::validate::Source;
use super::{ConfigError, Limits, Timeouts, wire};

/// Smallest `max_header_bytes`: hyper's read buffer cannot be smaller.
const MIN_HEADER_BYTES: u64 = 8 << 10;

impl Source<'_> {
    pub(super) fn limits(&self, limits: &wire::Limits) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let max_header_bytes = self.size_in(
            "limits.max_header_bytes",
            &limits.max_header_bytes,
            MIN_HEADER_BYTES..=(16 << 20),
            defaults.max_header_bytes as u64,
        )?;
        let max_uri_bytes = self.size_in(
            "limits.max_uri_bytes",
            &limits.max_uri_bytes,
            16..=max_header_bytes,
            defaults.max_uri_bytes as u64,
        )?;
        // 0 means no limit, as nginx's `client_max_body_size 0`.
        let max_body = match self.size_in(
            "limits.max_body",
            &limits.max_body,
            0..=u64::MAX,
            defaults.max_body,
        )? {
            0 => u64::MAX,
            size => size,
        };
        let max_headers =
            self.int_in("limits.max_headers", &limits.max_headers, 1..=10_000, 100)?;
        let max_connections = self.int_in(
            "limits.max_connections",
            &limits.max_connections,
            1..=10_000_000,
            defaults.max_connections as i64,
        )?;
        let per_ip = self.int_in(
            "limits.max_connections_per_ip",
            &limits.max_connections_per_ip,
            0..=10_000_000,
            0,
        )?;
        Ok(Limits {
            max_header_bytes: max_header_bytes as usize,
            max_headers: max_headers as usize,
            max_uri_bytes: max_uri_bytes as usize,
            max_body,
            max_connections: max_connections as usize,
            max_connections_per_ip: (per_ip > 0).then_some(per_ip as usize),
        })
    }

    pub(super) fn timeouts(&self, timeouts: &wire::Timeouts) -> Result<Timeouts, ConfigError> {
        let defaults = Timeouts::default();
        let request =
            self.duration_or_zero("timeouts.request", &timeouts.request, Duration::ZERO)?;
        Ok(Timeouts {
            connect: self.duration("timeouts.connect", &timeouts.connect, defaults.connect)?,
            response: self.duration("timeouts.response", &timeouts.response, defaults.response)?,
            request_header: self.duration(
                "timeouts.request_header",
                &timeouts.request_header,
                defaults.request_header,
            )?,
            request_body_idle: self.duration(
                "timeouts.request_body_idle",
                &timeouts.request_body_idle,
                defaults.request_body_idle,
            )?,
            response_body_idle: self.duration(
                "timeouts.response_body_idle",
                &timeouts.response_body_idle,
                defaults.response_body_idle,
            )?,
            client_idle: self.duration(
                "timeouts.client_idle",
                &timeouts.client_idle,
                defaults.client_idle,
            )?,
            request: (request > Duration::ZERO).then_some(request),
        })
    }

    /// A route's `max_body`, when it has one.
    pub(super) fn route_max_body(
        &self,
        value: &Option<Spanned<String>>,
    ) -> Result<Option<u64>, ConfigError> {
        match value {
            None => Ok(None),
            // 0 means no limit, as in `[limits]`.
            Some(_) => match self.size_in("route max_body", value, 0..=u64::MAX, 0)? {
                0 => Ok(Some(u64::MAX)),
                size => Ok(Some(size)),
            },
        }
    }

    /// A size in `range`, or `default` when the key is absent.
    fn size_in(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let size = parse_size(value.get_ref())
            .map_err(|reason| self.error_at(value, format!("{key}: {reason}")))?;
        if range.contains(&size) {
            Ok(size)
        } else {
            Err(self.error_at(
                value,
                format!(
                    "{key} = {:?} is out of range, expected {} to {} bytes",
                    value.get_ref(),
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}
