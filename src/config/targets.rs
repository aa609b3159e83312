//! Where a route sends its requests ([`Target`]): one pool, a weighted `split` between pools, a
//! `redirect`, or a `respond` answered by Fulcrum itself; exactly one of them. Also a route's
//! `mirror` ([`Mirror`]), which copies a share of its requests to another pool. Choosing among a
//! split's pools and sending mirrors is `proxy/`'s.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use toml::Spanned;

use super::header_rules::Template;
use super::validate::Source;
use super::{ConfigError, PoolConfig, wire};

/// Largest weight of one share of a `split`.
pub const MAX_SHARE_WEIGHT: u32 = 1_000_000;

/// What a route does with the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `pool = "api"`: forward to this pool.
    Pool(String),
    /// `split = [{ pool, weight }, ...]`: forward to one of these pools, chosen by weight.
    Split(Vec<Share>),
    /// `redirect = { to, status }`: answer with a redirect.
    Redirect(Redirect),
    /// `respond = { status, body, content_type }`: answer with this.
    Respond(Respond),
}

/// One pool of a `split` and its weight (weights need not sum to 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub pool: String,
    pub weight: u32,
}

/// A route's `redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The `Location`, `{variables}` filled in; the request's query is appended.
    pub to: Template,
    /// 301, 302, 303, 307 or 308; 302 when not given, as HAProxy's `redirect` and nginx's
    /// `rewrite ... redirect`.
    pub status: StatusCode,
}

/// A route's `respond`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    /// 200 when not given.
    pub status: StatusCode,
    /// Shared: each answer clones a count, not the text.
    pub body: Bytes,
    /// `text/plain; charset=utf-8` when not given.
    pub content_type: HeaderValue,
}

/// A route's `mirror`: copies of a share of its requests, sent to `pool`, their answers dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub pool: String,
    /// The share of requests copied, in millionths (100% is 1,000,000).
    pub per_million: u32,
}

impl Source<'_> {
    /// A route's one target: `pool`, `split`, `redirect` or `respond`.
    pub(super) fn target(
        &self,
        route: &Spanned<wire::Route>,
        pools: &[PoolConfig],
    ) -> Result<Target, ConfigError> {
        let wire = route.get_ref();
        let given: Vec<(&str, std::ops::Range<usize>)> = [
            ("pool", wire.pool.as_ref().map(Spanned::span)),
            ("split", wire.split.as_ref().map(Spanned::span)),
            ("redirect", wire.redirect.as_ref().map(Spanned::span)),
            ("respond", wire.respond.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect();
        match given.as_slice() {
            [] => Err(self.error_at(
                route,
                "a route needs one of pool, split, redirect or respond",
            )),
            [_] => Ok(()),
            [(first, _), (second, span), ..] => Err(ConfigError::at(
                self.path,
                self.text,
                span.start,
                format!(
                    "a route takes exactly one of pool, split, redirect and respond; this one has \
                     {first} and {second}"
                ),
            )),
        }?;
        if let Some(pool) = &wire.pool {
            return Ok(Target::Pool(self.pool_named("route", pool, pools)?));
        }
        if let Some(split) = &wire.split {
            return self.split(split, pools);
        }
        if let Some(redirect) = &wire.redirect {
            return self.redirect(redirect.get_ref()).map(Target::Redirect);
        }
        let respond = wire.respond.as_ref().expect("one of the four is given");
        self.respond(respond.get_ref()).map(Target::Respond)
    }

    /// A route's `mirror`, which needs a route that forwards.
    pub(super) fn mirror(
        &self,
        route: &wire::Route,
        target: &Target,
        pools: &[PoolConfig],
    ) -> Result<Option<Mirror>, ConfigError> {
        let Some(mirror) = &route.mirror else {
            return Ok(None);
        };
        if matches!(target, Target::Redirect(_) | Target::Respond(_)) {
            return Err(self.error_at(
                mirror,
                "route mirror needs a route that forwards (pool or split): a redirect or a \
                 respond has no request to copy",
            ));
        }
        let table = mirror.get_ref();
        let per_million = match &table.percent {
            None => 1_000_000,
            Some(percent) => {
                let value = percent.get_ref().value();
                if !(0.0..=100.0).contains(&value) {
                    return Err(self.error_at(
                        percent,
                        format!(
                            "route mirror percent = {value} is out of range, expected 0 to 100"
                        ),
                    ));
                }
                (value * 10_000.0).round() as u32
            }
        };
        Ok(Some(Mirror {
            pool: self.pool_named("route mirror", &table.pool, pools)?,
            per_million,
        }))
    }

    /// The name of a defined pool.
    fn pool_named(
        &self,
        key: &str,
        name: &Spanned<String>,
        pools: &[PoolConfig],
    ) -> Result<String, ConfigError> {
        let wanted = name.get_ref();
        if pools.iter().any(|p| &p.name == wanted) {
            return Ok(wanted.clone());
        }
        let defined: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        Err(self.error_at(
            name,
            format!(
                "{key} to undefined pool {wanted:?}, defined pools: {}",
                defined.join(", ")
            ),
        ))
    }

    fn split(
        &self,
        split: &Spanned<Vec<Spanned<wire::SplitShare>>>,
        pools: &[PoolConfig],
    ) -> Result<Target, ConfigError> {
        let mut shares = Vec::new();
        for share in split.get_ref() {
            let share = share.get_ref();
            let pool = self.pool_named("route split", &share.pool, pools)?;
            if shares.iter().any(|s: &Share| s.pool == pool) {
                return Err(self.error_at(
                    &share.pool,
                    format!("route split names pool {pool:?} twice"),
                ));
            }
            let weight = self.int_in(
                "route split weight",
                &Some(share.weight.clone()),
                0..=i64::from(MAX_SHARE_WEIGHT),
                0,
            )? as u32;
            shares.push(Share { pool, weight });
        }
        if shares.iter().map(|s| u64::from(s.weight)).sum::<u64>() == 0 {
            return Err(self.error_at(
                split,
                "route split weights sum to 0: at least one pool needs a weight above 0",
            ));
        }
        Ok(Target::Split(shares))
    }

    fn redirect(&self, redirect: &wire::Redirect) -> Result<Redirect, ConfigError> {
        let to = Template::parse(redirect.to.get_ref()).map_err(|reason| {
            self.error_at(&redirect.to, format!("route redirect to: {reason}"))
        })?;
        let status = match &redirect.status {
            None => StatusCode::FOUND,
            Some(status) => match status.get_ref() {
                301 | 302 | 303 | 307 | 308 => {
                    StatusCode::from_u16(*status.get_ref() as u16).expect("a redirect status")
                }
                other => {
                    return Err(self.error_at(
                        status,
                        format!(
                            "route redirect status = {other}: expected 301, 302, 303, 307 or 308"
                        ),
                    ));
                }
            },
        };
        Ok(Redirect { to, status })
    }

    fn respond(&self, respond: &wire::Respond) -> Result<Respond, ConfigError> {
        let status = self.int_in("route respond status", &respond.status, 200..=599, 200)?;
        let content_type = match &respond.content_type {
            None => HeaderValue::from_static("text/plain; charset=utf-8"),
            Some(text) => HeaderValue::from_str(text.get_ref()).map_err(|_| {
                self.error_at(
                    text,
                    format!(
                        "route respond content_type = {:?} cannot be a header value",
                        text.get_ref()
                    ),
                )
            })?,
        };
        Ok(Respond {
            status: StatusCode::from_u16(status as u16).expect("checked to be 200 to 599"),
            body: respond
                .body
                .as_ref()
                .map(|b| Bytes::from(b.get_ref().clone()))
                .unwrap_or_default(),
            content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(route: &str) -> Result<Config, String> {
        let text = format!("[pool.api]\n[pool.canary]\n[[route]]\n{route}");
        Config::parse(&text, Path::new("a.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_each_target() {
        let split =
            check("split = [{ pool = \"api\", weight = 95 }, { pool = \"canary\", weight = 5 }]\n")
                .unwrap();
        assert_eq!(
            split.routes[0].target,
            Target::Split(vec![
                Share {
                    pool: "api".into(),
                    weight: 95
                },
                Share {
                    pool: "canary".into(),
                    weight: 5
                },
            ])
        );
        let redirect = check("redirect = { to = \"https://b.test{path}\" }\n").unwrap();
        let Target::Redirect(redirect) = &redirect.routes[0].target else {
            panic!("a redirect");
        };
        assert_eq!(redirect.status, StatusCode::FOUND, "302 unless told");
        let respond = check("respond = { status = 503, body = \"down\\n\" }\n").unwrap();
        assert_eq!(
            respond.routes[0].target,
            Target::Respond(Respond {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: "down\n".into(),
                content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            })
        );
        let mirrored =
            check("pool = \"api\"\nmirror = { pool = \"canary\", percent = 0.5 }\n").unwrap();
        assert_eq!(
            mirrored.routes[0].mirror,
            Some(Mirror {
                pool: "canary".into(),
                per_million: 5_000
            })
        );
    }

    #[test]
    fn faults_name_their_line_and_key() {
        for (route, expected) in [
            (
                "host = \"a.test\"\n",
                "a.toml:3: a route needs one of pool, split, redirect or respond",
            ),
            (
                "pool = \"api\"\nrespond = { status = 200 }\n",
                "a.toml:5: a route takes exactly one of pool, split, redirect and respond; this \
                 one has pool and respond",
            ),
            (
                "split = [{ pool = \"api\", weight = 0 }, { pool = \"canary\", weight = 0 }]\n",
                "a.toml:4: route split weights sum to 0",
            ),
            (
                "split = [{ pool = \"api\", weight = 1 }, { pool = \"nope\", weight = 1 }]\n",
                "a.toml:4: route split to undefined pool \"nope\", defined pools: api, canary",
            ),
            (
                "split = [{ pool = \"api\", weight = -1 }]\n",
                "a.toml:4: route split weight = -1 is out of range",
            ),
            (
                "redirect = { to = \"/x\", status = 200 }\n",
                "a.toml:4: route redirect status = 200: expected 301, 302, 303, 307 or 308",
            ),
            (
                "redirect = { to = \"https://{hostname}/\" }\n",
                "a.toml:4: route redirect to: \"https://{hostname}/\": unknown template variable",
            ),
            (
                "respond = { status = 99 }\n",
                "a.toml:4: route respond status = 99 is out of range, expected 200 to 599",
            ),
            (
                "respond = { body = \"x\" }\nmirror = { pool = \"api\" }\n",
                "a.toml:5: route mirror needs a route that forwards",
            ),
            (
                "pool = \"api\"\nmirror = { pool = \"api\", percent = 101 }\n",
                "a.toml:5: route mirror percent = 101 is out of range",
            ),
        ] {
            let error = check(route).unwrap_err();
            assert!(error.starts_with(expected), "{route:?}: got {error}");
        }
    }
}
