//! A request's priority: its route's, changed by the priority header (`[server]
//! priority_header`) as far as its client may change it: a trusted client (`priority_trusted`)
//! sets it, any other may only lower it, so a client can mark its own background traffic `low`
//! but cannot promote itself. A value that names no priority is ignored. (`forward.rs` sends the
//! header on with the priority the request got.)

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::{Priority, PriorityRules};

pub(super) fn priority(
    route: Priority,
    headers: &HeaderMap,
    client: IpAddr,
    rules: &PriorityRules,
) -> Priority {
    let Some(name) = &rules.header else {
        return route;
    };
    let named = headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(Priority::from_name);
    match named {
        None => route,
        Some(named) if rules.trusts(client) => named,
        Some(named) => named.min(route),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn rules() -> PriorityRules {
        PriorityRules {
            header: Some("x-priority".parse().unwrap()),
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-priority", value.parse().unwrap());
        headers
    }

    #[test]
    fn trusted_clients_set_others_only_lower() {
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            priority(Normal, &with("critical"), trusted, &rules()),
            Critical
        );
        assert_eq!(priority(High, &with("low"), trusted, &rules()), Low);
        assert_eq!(priority(Normal, &with("critical"), other, &rules()), Normal);
        assert_eq!(priority(Normal, &with("LOW"), other, &rules()), Low);
        assert_eq!(priority(Low, &with("high"), other, &rules()), Low);
    }

    #[test]
    fn unknown_values_and_no_header_leave_the_route_s() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(priority(High, &with("urgent"), client, &rules()), High);
        assert_eq!(priority(High, &HeaderMap::new(), client, &rules()), High);
        let off = PriorityRules::default();
        assert_eq!(priority(High, &with("low"), client, &off), High);
    }
}
