//! Validation of `[pool.NAME]` tables: backends and backups, retries, health checks, outlier ejection.

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::affinity::valid_cookie_name;
use super::certs;
use super::validate::{Source, parse_backend_address};
use super::wire;
use super::{
    BackendConfig, ConfigError, DEFAULT_RETRIES, ExpectStatus, HashKey, HealthCheck, MAX_RETRIES,
    MAX_WEIGHT, Outlier, PoolConfig, SameSite, Sticky, Strategy,
};
use rustls_pki_types::CertificateDer;

impl Source<'_> {
    pub(super) fn pool(
        &self,
        name: &Spanned<String>,
        pool: &wire::Pool,
    ) -> Result<PoolConfig, ConfigError> {
        let pool_name = name.get_ref();
        let valid_name = !pool_name.is_empty()
            && pool_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(self.error_at(
                name,
                format!("pool name {pool_name:?}: use letters, digits, '_' and '-'"),
            ));
        }
        let strategy = match &pool.strategy {
            None => Strategy::RoundRobin,
            Some(text) => Strategy::from_name(text.get_ref()).ok_or_else(|| {
                self.error_at(
                    text,
                    format!(
                        "unknown strategy {:?}, expected one of {}",
                        text.get_ref(),
                        Strategy::NAMES
                    ),
                )
            })?,
        };
        let mut seen = HashSet::new();
        let backends = self.backend_list(pool_name, &pool.backends, &mut seen)?;
        let backups = self.backend_list(pool_name, &pool.backups, &mut seen)?;
        let retries = self.int_in(
            &format!("pool.{pool_name}.retries"),
            &pool.retries,
            0..=i64::from(MAX_RETRIES),
            i64::from(DEFAULT_RETRIES),
        )? as u32;
        let health = match &pool.health {
            None => None,
            Some(health) => Some(self.health(pool_name, health)?),
        };
        let (hash_key, hash_balance_factor) = self.hashing(pool_name, strategy, pool)?;
        let sticky = match &pool.sticky {
            None => None,
            Some(sticky) => Some(self.sticky(pool_name, sticky.get_ref())?),
        };
        Ok(PoolConfig {
            name: pool_name.clone(),
            strategy,
            backends,
            backups,
            retries,
            fail_open: pool.fail_open.unwrap_or(false),
            health,
            outlier: self.outlier(pool_name, &pool.outlier)?,
            hash_key,
            hash_balance_factor,
            sticky,
            ca: match &pool.ca {
                None => Vec::new(),
                Some(ca) => self.ca(pool_name, ca)?,
            },
            http2: match &pool.protocol {
                None => false,
                Some(protocol) => match protocol.get_ref().as_str() {
                    "http1" => false,
                    "http2" => true,
                    other => {
                        return Err(self.error_at(
                            protocol,
                            format!("pool.{pool_name}.protocol = {other:?}: expected \"http1\" or \"http2\""),
                        ));
                    }
                },
            },
            overload: self.overload(pool_name, pool.overload.as_ref())?,
            dns: match &pool.dns {
                None => None,
                Some(dns) => Some(self.dns(pool_name, dns)?),
            },
        })
    }

    /// The certificates in the `ca` file (resolved against the config's directory).
    fn ca(
        &self,
        pool: &str,
        ca: &Spanned<String>,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        use rustls_pki_types::pem::PemObject;
        let path = self.beside_config(ca.get_ref());
        let fail = |reason: String| {
            self.error_at(ca, format!("pool.{pool}.ca: {}: {reason}", path.display()))
        };
        let roots = CertificateDer::pem_file_iter(&path)
            .map_err(|err| fail(certs::describe(&err)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| fail(certs::describe(&err)))?;
        if roots.is_empty() {
            return Err(fail("no certificate found".to_owned()));
        }
        Ok(roots)
    }

    /// `hash_key` and `hash_balance_factor`: required and allowed only with `consistent_hash`.
    fn hashing(
        &self,
        pool_name: &str,
        strategy: Strategy,
        pool: &wire::Pool,
    ) -> Result<(Option<HashKey>, Option<f64>), ConfigError> {
        let hashing = strategy == Strategy::ConsistentHash;
        let hash_key = match (&pool.hash_key, hashing) {
            (Some(key), true) => Some(
                HashKey::parse(key.get_ref())
                    .map_err(|reason| self.error_at(key, format!("pool.{pool_name}.{reason}")))?,
            ),
            (Some(key), false) => {
                return Err(self.error_at(
                    key,
                    format!(
                        "pool.{pool_name}.hash_key applies only to strategy = \"consistent_hash\""
                    ),
                ));
            }
            (None, true) => {
                let at = pool.strategy.as_ref().expect("consistent_hash was written");
                return Err(self.error_at(
                    at,
                    format!(
                        "pool.{pool_name}: strategy = \"consistent_hash\" needs hash_key ({})",
                        HashKey::FORMS
                    ),
                ));
            }
            (None, false) => None,
        };
        let factor = match &pool.hash_balance_factor {
            None => None,
            Some(factor) if !hashing => {
                return Err(self.error_at(
                    factor,
                    format!("pool.{pool_name}.hash_balance_factor applies only to strategy = \"consistent_hash\""),
                ));
            }
            Some(factor) if *factor.get_ref() > 1.0 && factor.get_ref().is_finite() => {
                Some(*factor.get_ref())
            }
            Some(factor) => {
                return Err(self.error_at(
                    factor,
                    format!(
                        "pool.{pool_name}.hash_balance_factor = {} must be greater than 1, e.g. 1.25",
                        factor.get_ref()
                    ),
                ));
            }
        };
        Ok((hash_key, factor))
    }

    fn sticky(&self, pool: &str, sticky: &wire::Sticky) -> Result<Sticky, ConfigError> {
        let cookie = match &sticky.cookie {
            None => Sticky::DEFAULT_COOKIE.to_owned(),
            Some(name) if valid_cookie_name(name.get_ref()) => name.get_ref().clone(),
            Some(name) => {
                return Err(self.error_at(
                    name,
                    format!(
                        "pool.{pool}.sticky.cookie {:?} is not a valid cookie name",
                        name.get_ref()
                    ),
                ));
            }
        };
        let max_age = match &sticky.max_age {
            None => None,
            Some(value) => {
                let key = format!("pool.{pool}.sticky.max_age");
                let max_age = self.duration(&key, &sticky.max_age, Duration::ZERO)?;
                // Max-Age counts whole seconds: "500ms" would be Max-Age=0, a cookie the browser
                // deletes at once, and affinity silently off.
                if max_age < Duration::from_secs(1) {
                    return Err(self.error_at(
                        value,
                        format!("{key} must be at least 1s: the cookie's Max-Age counts seconds"),
                    ));
                }
                Some(Duration::from_secs(max_age.as_secs_f64().ceil() as u64))
            }
        };
        let secure = sticky.secure.unwrap_or(false);
        let same_site = match &sticky.same_site {
            None => None,
            Some(value) => {
                let key = format!("pool.{pool}.sticky.same_site");
                let Some(same_site) = SameSite::parse(value.get_ref()) else {
                    return Err(self.error_at(
                        value,
                        format!(
                            "{key} {:?} is not one of {}",
                            value.get_ref(),
                            SameSite::FORMS
                        ),
                    ));
                };
                if same_site == SameSite::None && !secure {
                    return Err(self.error_at(
                        value,
                        format!(
                            "{key} = \"None\" needs secure = true: browsers drop a \
                             SameSite=None cookie that is not Secure"
                        ),
                    ));
                }
                Some(same_site)
            }
        };
        Ok(Sticky {
            cookie,
            max_age,
            secure,
            http_only: sticky.http_only.unwrap_or(true),
            same_site,
        })
    }

    /// Backends (or backups), each address unique within the pool.
    fn backend_list(
        &self,
        pool: &str,
        list: &[Spanned<wire::Backend>],
        seen: &mut HashSet<http::uri::Authority>,
    ) -> Result<Vec<BackendConfig>, ConfigError> {
        list.iter()
            .map(|backend| {
                let parsed = self.backend(pool, backend.get_ref())?;
                if !seen.insert(parsed.address.clone()) {
                    return Err(self.error_at(
                        &backend.get_ref().address,
                        format!("pool {pool:?}: backend {} is listed twice", parsed.address),
                    ));
                }
                Ok(parsed)
            })
            .collect()
    }

    fn backend(&self, pool: &str, backend: &wire::Backend) -> Result<BackendConfig, ConfigError> {
        let (https, bare) = match backend.address.get_ref().strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, backend.address.get_ref().as_str()),
        };
        let address = parse_backend_address(bare).map_err(|reason| {
            self.error_at(
                &backend.address,
                format!("pool {pool:?}: backend address {reason}"),
            )
        })?;
        let tls_name = match (&backend.server_name, https) {
            (Some(name), true) => Some(name.get_ref().clone()),
            (None, true) => Some(
                address
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            ),
            (Some(name), false) => {
                return Err(self.error_at(
                    name,
                    format!("pool {pool:?}: server_name is for https:// backends only"),
                ));
            }
            (None, false) => None,
        };
        if let Some(name) = &tls_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(self.error_at(
                &backend.address,
                format!("pool {pool:?}: {name:?} is not a valid TLS server name"),
            ));
        }
        let weight = match &backend.weight {
            None => 1,
            Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                return Err(self.error_at(
                    w,
                    format!(
                        "pool {pool:?}: backend {address}: weight {} is invalid, expected 1 to {MAX_WEIGHT}",
                        w.get_ref()
                    ),
                ));
            }
        };
        Ok(BackendConfig {
            address,
            weight,
            tls_name,
        })
    }

    fn health(
        &self,
        pool: &str,
        health: &Spanned<wire::Health>,
    ) -> Result<HealthCheck, ConfigError> {
        let key = |name: &str| format!("pool.{pool}.health.{name}");
        let table = health.get_ref();
        let path = match &table.path {
            None => "/".to_owned(),
            Some(path) if path.get_ref().starts_with('/') => {
                http::uri::PathAndQuery::try_from(path.get_ref().as_str()).map_err(|_| {
                    self.error_at(path, format!("{} is not a valid request path", key("path")))
                })?;
                path.get_ref().clone()
            }
            Some(path) => {
                return Err(self.error_at(path, format!("{} must start with '/'", key("path"))));
            }
        };
        let start_healthy = match &table.start {
            None => true,
            Some(start) => match start.get_ref().as_str() {
                "healthy" => true,
                "unhealthy" => false,
                other => {
                    return Err(self.error_at(
                        start,
                        format!(
                            "{} = {other:?}, expected \"healthy\" or \"unhealthy\"",
                            key("start")
                        ),
                    ));
                }
            },
        };
        let expect = match &table.expect_status {
            None => ExpectStatus::Class(2),
            Some(expect) => self.expect_status(&key("expect_status"), expect)?,
        };
        Ok(HealthCheck {
            path,
            interval: self.duration(&key("interval"), &table.interval, Duration::from_secs(2))?,
            timeout: self.duration(&key("timeout"), &table.timeout, Duration::from_secs(1))?,
            healthy_after: self.int_in(&key("healthy_after"), &table.healthy_after, 1..=100, 2)?
                as u32,
            unhealthy_after: self.int_in(
                &key("unhealthy_after"),
                &table.unhealthy_after,
                1..=100,
                3,
            )? as u32,
            expect,
            start_healthy,
        })
    }

    fn expect_status(
        &self,
        key: &str,
        expect: &Spanned<wire::ExpectStatus>,
    ) -> Result<ExpectStatus, ConfigError> {
        let invalid = || {
            self.error_at(
                expect,
                format!(
                    "{key}: expected a class \"1xx\" to \"5xx\" or a non-empty list of codes 100 to 599"
                ),
            )
        };
        match expect.get_ref() {
            wire::ExpectStatus::Class(class) => match class.as_bytes() {
                [digit @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    Ok(ExpectStatus::Class(u16::from(digit - b'0')))
                }
                _ => Err(invalid()),
            },
            wire::ExpectStatus::Codes(codes) => {
                if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
                    return Err(invalid());
                }
                Ok(ExpectStatus::Codes(
                    codes.iter().map(|&c| c as u16).collect(),
                ))
            }
        }
    }

    fn outlier(&self, pool: &str, outlier: &wire::Outlier) -> Result<Outlier, ConfigError> {
        let key = |name: &str| format!("pool.{pool}.outlier.{name}");
        let defaults = Outlier::default();
        let base_ejection = self.duration(
            &key("base_ejection"),
            &outlier.base_ejection,
            defaults.base_ejection,
        )?;
        let max_ejection = self.duration(
            &key("max_ejection"),
            &outlier.max_ejection,
            defaults.max_ejection,
        )?;
        if max_ejection < base_ejection
            && let Some(max) = &outlier.max_ejection
        {
            return Err(self.error_at(
                max,
                format!(
                    "{} must not be shorter than base_ejection",
                    key("max_ejection")
                ),
            ));
        }
        Ok(Outlier {
            consecutive_failures: self.int_in(
                &key("consecutive_failures"),
                &outlier.consecutive_failures,
                0..=1000,
                i64::from(defaults.consecutive_failures),
            )? as u32,
            base_ejection,
            max_ejection,
            max_ejected_percent: self.int_in(
                &key("max_ejected_percent"),
                &outlier.max_ejected_percent,
                0..=100,
                i64::from(defaults.max_ejected_percent),
            )? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const POOL: &str = r#"[pool.web]
strategy = "round_robin"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
backups  = [{ address = "127.0.0.1:9101" }]
retries = 3
fail_open = true

[pool.web.health]
path = "/healthz"
interval = "500ms"
timeout = "200ms"
healthy_after = 1
unhealthy_after = 2
expect_status = [200, 204]

[pool.web.outlier]
consecutive_failures = 3
base_ejection = "1s"
max_ejected_percent = 34
"#;

    fn check(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("p.toml")).map_err(|e| e.to_string())
    }

    fn rejected(from: &str, to: &str) -> String {
        assert!(POOL.contains(from), "test bug: {from:?} not in the sample");
        check(&POOL.replacen(from, to, 1)).expect_err("must be rejected")
    }

    #[test]
    fn reads_every_pool_key() {
        let config = check(POOL).unwrap();
        let web = &config.pools[0];
        assert_eq!(web.backups[0].address.as_str(), "127.0.0.1:9101");
        assert_eq!(web.retries, 3);
        assert!(web.fail_open);
        let health = web.health.as_ref().unwrap();
        assert_eq!(health.path, "/healthz");
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(health.expect, ExpectStatus::Codes(vec![200, 204]));
        assert_eq!((health.healthy_after, health.unhealthy_after), (1, 2));
        assert!(health.start_healthy);
        assert_eq!(web.outlier.consecutive_failures, 3);
        assert_eq!(web.outlier.base_ejection, Duration::from_secs(1));
        assert_eq!(web.outlier.max_ejected_percent, 34);
    }

    #[test]
    fn defaults_when_tables_are_absent() {
        let config = check("[pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n").unwrap();
        let web = &config.pools[0];
        assert_eq!(web.retries, DEFAULT_RETRIES);
        assert!(!web.fail_open);
        assert!(
            web.health.is_none(),
            "active checks are off without the table"
        );
        assert_eq!(web.outlier, Outlier::default(), "ejection is on by default");
    }

    #[test]
    fn status_class_parses() {
        let config = check(&POOL.replace("[200, 204]", "\"3xx\"")).unwrap();
        let expect = &config.pools[0].health.as_ref().unwrap().expect;
        assert!(expect.matches(http::StatusCode::FOUND));
        assert!(!expect.matches(http::StatusCode::OK));
    }

    #[test]
    fn consistent_hash_needs_a_key_and_sticky_has_defaults() {
        let base = "[pool.c]\nstrategy = \"consistent_hash\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
        let err = check(base).unwrap_err();
        assert!(
            err.starts_with("p.toml:2: pool.c: strategy = \"consistent_hash\" needs hash_key"),
            "{err}"
        );
        let config = check(&format!(
            "{base}hash_key = \"header:x-user-id\"\nhash_balance_factor = 1.25\n"
        ))
        .unwrap();
        let pool = &config.pools[0];
        assert_eq!(
            pool.hash_key,
            Some(HashKey::Header("x-user-id".parse().unwrap()))
        );
        assert_eq!(pool.hash_balance_factor, Some(1.25));
        let err = check(&format!("{base}hash_key = \"body:x\"\n")).unwrap_err();
        assert!(
            err.starts_with("p.toml:4: pool.c.hash_key \"body:x\" is not one of"),
            "{err}"
        );
        let err = check(&format!(
            "{base}hash_key = \"path\"\nhash_balance_factor = 0.9\n"
        ))
        .unwrap_err();
        assert!(err.contains("must be greater than 1"), "{err}");
        let err = check(
            &base
                .replace("consistent_hash", "round_robin")
                .replace("backends", "hash_key = \"path\"\nbackends"),
        )
        .unwrap_err();
        assert!(
            err.contains("applies only to strategy = \"consistent_hash\""),
            "{err}"
        );

        let sticky = check(&format!("{POOL}\n[pool.web.sticky]\nmax_age = \"1h\"\n")).unwrap();
        let sticky = sticky.pools[0].sticky.clone().unwrap();
        assert_eq!(sticky.cookie, "fulcrum_affinity");
        assert_eq!(sticky.max_age, Some(Duration::from_secs(3600)));
        assert!(sticky.http_only && !sticky.secure);
        let err = check(&format!(
            "{POOL}\n[pool.web.sticky]\ncookie = \"bad name\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("is not a valid cookie name"), "{err}");

        let sticky_with = |lines: &str| check(&format!("{POOL}\n[pool.web.sticky]\n{lines}\n"));
        let err = sticky_with("max_age = \"500ms\"").unwrap_err();
        assert!(
            err.contains("pool.web.sticky.max_age must be at least 1s"),
            "{err}"
        );
        let rounded = sticky_with("max_age = \"1500ms\"").unwrap();
        let rounded = rounded.pools[0].sticky.as_ref().unwrap().max_age;
        assert_eq!(rounded, Some(Duration::from_secs(2)), "rounded up");
        let lax = sticky_with("same_site = \"lax\"").unwrap();
        let lax = lax.pools[0].sticky.as_ref().unwrap().same_site;
        assert_eq!(lax, Some(SameSite::Lax));
        let err = sticky_with("same_site = \"loose\"").unwrap_err();
        assert!(
            err.contains("pool.web.sticky.same_site \"loose\" is not one of"),
            "{err}"
        );
        let err = sticky_with("same_site = \"None\"").unwrap_err();
        assert!(err.contains("needs secure = true"), "{err}");
        sticky_with("same_site = \"None\"\nsecure = true").unwrap();
    }

    #[test]
    fn faults_name_their_line_and_key() {
        let err = rejected("retries = 3", "retries = 11");
        assert!(
            err.starts_with("p.toml:5: pool.web.retries = 11 is out of range"),
            "{err}"
        );
        let err = rejected("[200, 204]", "\"2xy\"");
        assert!(
            err.starts_with("p.toml:14: pool.web.health.expect_status"),
            "{err}"
        );
        let err = rejected("[200, 204]", "[]");
        assert!(err.contains("expect_status"), "{err}");
        let err = rejected("\"/healthz\"", "\"healthz\"");
        assert!(
            err.starts_with("p.toml:9: pool.web.health.path must start with '/'"),
            "{err}"
        );
        let err = rejected("unhealthy_after = 2", "unhealthy_after = 0");
        assert!(
            err.starts_with("p.toml:13: pool.web.health.unhealthy_after = 0"),
            "{err}"
        );
        let err = rejected("max_ejected_percent = 34", "max_ejected_percent = 101");
        assert!(err.starts_with("p.toml:19:"), "{err}");
        let err = rejected("\"127.0.0.1:9101\"", "\"127.0.0.1:9001\"");
        assert!(
            err.contains("backend 127.0.0.1:9001 is listed twice"),
            "{err}"
        );
        let err = rejected("interval = \"500ms\"", "intervall = \"500ms\"");
        assert!(
            err.starts_with("p.toml:10: unknown field `intervall`"),
            "{err}"
        );
        let err = rejected(
            "path = \"/healthz\"",
            "path = \"/healthz\"\nstart = \"maybe\"",
        );
        assert!(err.contains("pool.web.health.start = \"maybe\""), "{err}");
    }
}
