//! A route's `request_headers` and `response_headers` ([`Rules`]): fields removed, set and
//! added, their templates filled in from the request ([`Facts`]).
//!
//! A value without variables is made once, when the snapshot is built, and cloned per request
//! (a shared count). A template is filled in straight into the thread's arena (`arena.rs`), one
//! slice per value: a request with twenty rules makes no allocation of its own for them.

use std::net::IpAddr;

use bytes::{BufMut, Bytes};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request};

use super::client_ip::ClientAddr;
use super::headers::{LONGEST_IP, write_ip};
use super::request_id;
use crate::arena;
use crate::config::{HeaderRules, Part, Template};

/// What a template may name, taken from the request before it is taken apart. Each is a shared
/// handle on the request's own bytes, not a copy.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    pub client_ip: IpAddr,
    pub request_id: Option<HeaderValue>,
    /// The host the request named, port included, as sent.
    pub host: Option<HeaderValue>,
    pub scheme: &'static str,
    /// The target as received; templates use its path.
    pub target: Option<PathAndQuery>,
}

impl Facts {
    /// What `request`, from `client`, says.
    pub fn of<B>(request: &Request<B>, client: &ClientAddr) -> Facts {
        let host = match request.uri().authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => request.headers().get(http::header::HOST).cloned(),
        };
        Facts {
            client_ip: client.ip,
            request_id: request.headers().get(request_id::X_REQUEST_ID).cloned(),
            host,
            scheme: if client.tls { "https" } else { "http" },
            target: request.uri().path_and_query().cloned(),
        }
    }

    fn path(&self) -> &str {
        self.target.as_ref().map_or("/", PathAndQuery::path)
    }
}

/// Header changes ready to apply, in the order applied: `remove`, then `set` (replacing), then
/// `add`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
}

/// A value to write: made once, or filled in per request.
#[derive(Debug, Clone)]
enum Value {
    Fixed(HeaderValue),
    Template(Template),
}

impl Rules {
    pub fn new(rules: &HeaderRules) -> Rules {
        let values = |list: &[(HeaderName, Template)]| {
            list.iter()
                .map(|(name, template)| (name.clone(), Value::of(template)))
                .collect()
        };
        Rules {
            remove: rules.remove.clone(),
            set: values(&rules.set),
            add: values(&rules.add),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

impl Value {
    fn of(template: &Template) -> Value {
        match template.0.as_slice() {
            [] => Value::Fixed(HeaderValue::from_static("")),
            [Part::Text(text)] => match HeaderValue::from_str(text) {
                Ok(value) => Value::Fixed(value),
                Err(_) => Value::Template(template.clone()),
            },
            _ => Value::Template(template.clone()),
        }
    }

    fn get(&self, facts: &Facts) -> Option<HeaderValue> {
        match self {
            Value::Fixed(value) => Some(value.clone()),
            Value::Template(template) => render(template, facts),
        }
    }
}

/// Applies `rules` to `headers`: removals, then sets, then additions. A value that would not be
/// a valid header value once filled in is left out.
pub(super) fn apply(rules: &Rules, headers: &mut HeaderMap, facts: &Facts) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        if let Some(value) = value.get(facts) {
            headers.insert(name.clone(), value);
        }
    }
    for (name, value) in &rules.add {
        if let Some(value) = value.get(facts) {
            headers.append(name.clone(), value);
        }
    }
}

/// The bytes of a value the request may lack: none when it does.
fn value(v: &Option<HeaderValue>) -> &[u8] {
    v.as_ref().map_or(&[][..], HeaderValue::as_bytes)
}

/// `template` filled in; `None` when the result is not a valid header value.
pub(super) fn render(template: &Template, facts: &Facts) -> Option<HeaderValue> {
    let room: usize = template
        .0
        .iter()
        .map(|part| match part {
            Part::Text(text) => text.len(),
            Part::ClientIp => LONGEST_IP,
            Part::RequestId => value(&facts.request_id).len(),
            Part::Host => value(&facts.host).len(),
            Part::Scheme => facts.scheme.len(),
            Part::Path => facts.path().len(),
        })
        .sum();
    let write = |out: &mut dyn BufMut| {
        for part in &template.0 {
            match part {
                Part::Text(text) => out.put_slice(text.as_bytes()),
                Part::ClientIp => write_ip(facts.client_ip, out),
                Part::RequestId => out.put_slice(value(&facts.request_id)),
                Part::Host => out.put_slice(value(&facts.host)),
                Part::Scheme => out.put_slice(facts.scheme.as_bytes()),
                Part::Path => out.put_slice(facts.path().as_bytes()),
            }
        }
    };
    let bytes = if room <= arena::LARGEST {
        arena::fill(room, |chunk| write(chunk)).0
    } else {
        let mut own = Vec::with_capacity(room);
        write(&mut own);
        Bytes::from(own)
    };
    HeaderValue::from_maybe_shared(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_then_sets_then_adds_with_templates_filled_in() {
        let rules = Rules::new(&HeaderRules {
            remove: vec![HeaderName::from_static("x-debug")],
            set: vec![(
                HeaderName::from_static("x-origin"),
                Template::parse("{scheme}://{host}{path} from {client_ip} ({request_id})").unwrap(),
            )],
            add: vec![(
                HeaderName::from_static("x-tag"),
                Template::parse("b").unwrap(),
            )],
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-origin", HeaderValue::from_static("forged"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        let facts = Facts {
            client_ip: "10.0.0.1".parse().unwrap(),
            request_id: Some(HeaderValue::from_static("abc")),
            host: Some(HeaderValue::from_static("shop.example")),
            scheme: "https",
            target: Some(PathAndQuery::from_static("/cart?x=1")),
        };
        apply(&rules, &mut headers, &facts);
        assert!(!headers.contains_key("x-debug"));
        assert_eq!(
            headers["x-origin"],
            "https://shop.example/cart from 10.0.0.1 (abc)"
        );
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        let v6 = Facts {
            client_ip: "2001:db8::1".parse().unwrap(),
            request_id: None,
            host: None,
            target: None,
            ..facts
        };
        let template = Template::parse("{client_ip}|{request_id}|{host}|{path}").unwrap();
        assert_eq!(render(&template, &v6).unwrap(), "2001:db8::1|||/");
    }
}
