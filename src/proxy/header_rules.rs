//! A route's `request_headers` and `response_headers`: fields removed, set and added, their
//! templates filled in from the request ([`Facts`]).

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Request};

use super::client_ip::ClientAddr;
use super::request_id;
use super::target::request_host;

use crate::config::{HeaderRules, Part, Template};

/// What a template may name, taken from the request before it is taken apart.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    pub client_ip: IpAddr,
    pub request_id: Option<HeaderValue>,
    pub host: Option<String>,
    pub scheme: &'static str,
    pub path: String,
}

impl Facts {
    /// What `request`, from `client`, says.
    pub fn of<B>(request: &Request<B>, client: &ClientAddr) -> Facts {
        Facts {
            client_ip: client.ip,
            request_id: request.headers().get(request_id::X_REQUEST_ID).cloned(),
            host: request_host(request).map(str::to_owned),
            scheme: if client.tls { "https" } else { "http" },
            path: request.uri().path().to_owned(),
        }
    }
}

/// Applies `rules` to `headers`: removals, then sets, then additions. A value that would not be
/// a valid header value once filled in is left out.
pub(super) fn apply(rules: &HeaderRules, headers: &mut HeaderMap, facts: &Facts) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, template) in &rules.set {
        if let Some(value) = render(template, facts) {
            headers.insert(name.clone(), value);
        }
    }
    for (name, template) in &rules.add {
        if let Some(value) = render(template, facts) {
            headers.append(name.clone(), value);
        }
    }
}

/// `template` filled in; `None` when the result is not a valid header value.
pub(super) fn render(template: &Template, facts: &Facts) -> Option<HeaderValue> {
    let mut value = String::new();
    for part in &template.0 {
        match part {
            Part::Text(text) => value.push_str(text),
            Part::ClientIp => value.push_str(&facts.client_ip.to_string()),
            Part::RequestId => {
                value.push_str(facts.request_id.as_ref()?.to_str().ok()?);
            }
            Part::Host => value.push_str(facts.host.as_deref().unwrap_or("")),
            Part::Scheme => value.push_str(facts.scheme),
            Part::Path => value.push_str(&facts.path),
        }
    }
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    #[test]
    fn removes_then_sets_then_adds_with_templates_filled_in() {
        let rules = HeaderRules {
            remove: vec![HeaderName::from_static("x-debug")],
            set: vec![(
                HeaderName::from_static("x-origin"),
                Template::parse("{scheme}://{host}{path} from {client_ip} ({request_id})").unwrap(),
            )],
            add: vec![(
                HeaderName::from_static("x-tag"),
                Template::parse("b").unwrap(),
            )],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-origin", HeaderValue::from_static("forged"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        let facts = Facts {
            client_ip: "10.0.0.1".parse().unwrap(),
            request_id: Some(HeaderValue::from_static("abc")),
            host: Some("shop.example".into()),
            scheme: "https",
            path: "/cart".into(),
        };
        apply(&rules, &mut headers, &facts);
        assert!(!headers.contains_key("x-debug"));
        assert_eq!(
            headers["x-origin"],
            "https://shop.example/cart from 10.0.0.1 (abc)"
        );
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
    }
}
