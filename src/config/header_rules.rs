//! A route's `request_headers` and `response_headers` ([`HeaderRules`]): fields removed, set and
//! added, their values templates of what the request says ([`Template`]), and their validation.
//! Applying them is `proxy/header_rules.rs`'s.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::validate::Source;
use super::{ConfigError, wire};

/// What a template may name.
pub const VARIABLES: &str = "{client_ip}, {request_id}, {host}, {scheme}, {path}";

/// A piece of a header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// The client's address.
    ClientIp,
    /// The request's `X-Request-Id` (kept or made).
    RequestId,
    /// The host the request named (port included, as sent).
    Host,
    /// `http` or `https`, as the client connected.
    Scheme,
    /// The request's path, as received (without the query).
    Path,
}

/// A header value, with `{variable}`s filled in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Part>);

/// Header changes, in the order applied: `remove`, then `set` (replacing), then `add`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

impl Template {
    /// Parses `text`; `Err` names what is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: a '{{' without its '}}'"))?;
            parts.push(match &after[..close] {
                "client_ip" => Part::ClientIp,
                "request_id" => Part::RequestId,
                "host" => Part::Host,
                "scheme" => Part::Scheme,
                "path" => Part::Path,
                other => {
                    return Err(format!(
                        "{text:?}: unknown template variable {{{other}}}, expected one of {VARIABLES}"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for part in &parts {
            if let Part::Text(text) = part
                && HeaderValue::from_str(text).is_err()
            {
                return Err(format!("{text:?} cannot be in a header value"));
            }
        }
        Ok(Template(parts))
    }
}

impl Source<'_> {
    /// A route's `request_headers` or `response_headers` (`key`).
    pub(super) fn header_rules(
        &self,
        key: &str,
        rules: Option<&Spanned<wire::HeaderRules>>,
    ) -> Result<HeaderRules, ConfigError> {
        let Some(rules) = rules else {
            return Ok(HeaderRules::default());
        };
        let name = |text: &str| {
            HeaderName::try_from(text).map_err(|_| {
                self.error_at(rules, format!("route {key}: {text:?} is not a header name"))
            })
        };
        let templates = |table: &BTreeMap<String, String>| {
            table
                .iter()
                .map(|(field, value)| {
                    let template = Template::parse(value).map_err(|reason| {
                        self.error_at(rules, format!("route {key}.{field}: {reason}"))
                    })?;
                    Ok((name(field)?, template))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let table = rules.get_ref();
        Ok(HeaderRules {
            remove: table
                .remove
                .iter()
                .map(|field| name(field))
                .collect::<Result<_, _>>()?,
            set: templates(&table.set)?,
            add: templates(&table.add)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    #[test]
    fn templates_name_what_the_request_says() {
        assert_eq!(
            Template::parse("id={request_id}; from {client_ip}").unwrap(),
            Template(vec![
                Part::Text("id=".into()),
                Part::RequestId,
                Part::Text("; from ".into()),
                Part::ClientIp,
            ])
        );
        assert_eq!(
            Template::parse("plain").unwrap().0,
            [Part::Text("plain".into())]
        );
        assert!(
            Template::parse("{user}")
                .unwrap_err()
                .contains("unknown template variable {user}")
        );
        assert!(
            Template::parse("{host")
                .unwrap_err()
                .contains("without its")
        );
    }

    #[test]
    fn faults_name_their_line_and_key() {
        let check = |route: &str| {
            let text = format!("[pool.api]\n[[route]]\npool = \"api\"\n{route}");
            Config::parse(&text, Path::new("h.toml")).map_err(|e| e.to_string())
        };
        for (route, expected) in [
            (
                "request_headers = { set = { \"x-user\" = \"{user}\" } }\n",
                "h.toml:4: route request_headers.x-user: \"{user}\": unknown template variable {user}",
            ),
            (
                "response_headers = { remove = [\"bad name\"] }\n",
                "h.toml:4: route response_headers: \"bad name\" is not a header name",
            ),
        ] {
            let error = check(route).unwrap_err();
            assert!(error.starts_with(expected), "{route:?}: got {error}");
        }
    }
}
