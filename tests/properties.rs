//! Property tests (bounded fuzzing) over the request path's own code: config parsing, header
//! rewriting, screening and routing must never panic, and must keep their invariants for any
//! input. Each property runs a fixed number of generated cases, so CI time stays bounded.

use std::net::IpAddr;
use std::path::Path;

use fulcrum::config::Config;
use fulcrum::config::HostPattern;
use fulcrum::proxy::headers::{ClientSide, rewrite_request};
use fulcrum::proxy::screen::screen;
use fulcrum::proxy::state::State;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Version};
use proptest::prelude::*;

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("connection".to_owned()),
        Just("keep-alive".to_owned()),
        Just("transfer-encoding".to_owned()),
        Just("upgrade".to_owned()),
        Just("te".to_owned()),
        Just("host".to_owned()),
        Just("content-length".to_owned()),
        Just("x-forwarded-for".to_owned()),
        Just("via".to_owned()),
        Just("max-forwards".to_owned()),
        "x-[a-z]{1,8}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        Just("chunked".to_owned()),
        Just("close, x-a, upgrade".to_owned()),
        Just("1.1 fulcrum, 1.1 fulcrum".to_owned()),
        Just("0".to_owned()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_name(), header_value()), 0..12)
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any text is a valid config or an error naming the file; never a panic.
    #[test]
    fn config_parse_never_panics(text in "\\PC{0,300}") {
        if let Err(error) = Config::parse(&text, Path::new("fuzz.toml")) {
            prop_assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
        }
    }

    /// Config-shaped text: tables and keys the proxy knows, values of any kind.
    #[test]
    fn config_shaped_text_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("[pool.web]".to_owned()),
                Just("[pool.web.health]".to_owned()),
                Just("[pool.web.outlier]".to_owned()),
                Just("[[route]]".to_owned()),
                Just("[limits]".to_owned()),
                Just("[timeouts]".to_owned()),
                Just("[log]".to_owned()),
                Just("[admin]".to_owned()),
                (
                    prop::sample::select(vec![
                        "strategy", "backends", "retries", "weight", "address", "pool", "host",
                        "path_prefix", "max_body", "request_header", "access", "listen",
                        "hash_key", "interval", "consecutive_failures", "fail_open",
                    ]),
                    prop_oneof![
                        "-?[0-9]{1,12}".prop_map(|v| v),
                        "\"[ -~&&[^\"\\\\]]{0,20}\"".prop_map(|v| v),
                        Just("[{ address = \"127.0.0.1:1\", weight = 0 }]".to_owned()),
                        Just("true".to_owned()),
                    ],
                )
                    .prop_map(|(key, value)| format!("{key} = {value}")),
            ],
            0..16,
        )
    ) {
        let text = lines.join("\n");
        if let Err(error) = Config::parse(&text, Path::new("fuzz.toml")) {
            prop_assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
        }
    }

    /// After rewriting, no hop-by-hop header and nothing `Connection` named reaches the backend,
    /// the client's address ends `X-Forwarded-For`, and Fulcrum is the last `Via` entry.
    #[test]
    fn rewritten_requests_carry_no_hop_by_hop_headers(pairs in headers(), ip in any::<[u8; 4]>()) {
        let mut map = header_map(&pairs);
        let named: Vec<String> = map
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty())
            .collect();
        let ip = IpAddr::from(ip);
        let client = ClientSide { ip, proto: "http", version: Version::HTTP_11, underscores: true };
        rewrite_request(&mut map, &client);
        for name in HOP_BY_HOP {
            prop_assert!(!map.contains_key(name), "{name} survived");
        }
        for name in named {
            if HeaderName::from_bytes(name.as_bytes()).is_ok() && !["x-forwarded-for", "via", "x-forwarded-proto", "x-forwarded-host", "te"].contains(&name.as_str()) {
                prop_assert!(!map.contains_key(name.as_str()), "{name}, named by Connection, survived");
            }
        }
        let forwarded = map.get_all("x-forwarded-for").iter().next_back().unwrap().to_str().unwrap().to_owned();
        prop_assert!(forwarded.ends_with(&ip.to_string()), "{forwarded}");
        let via = map.get_all("via").iter().next_back().unwrap().to_str().unwrap().to_owned();
        prop_assert!(via.ends_with("fulcrum"), "{via}");
    }

    /// Screening never panics, and a request it lets through has at most one Transfer-Encoding,
    /// exactly `chunked`, and never with Content-Length.
    #[test]
    fn screened_requests_have_one_unambiguous_framing(pairs in headers(), http10 in any::<bool>()) {
        let mut request = Request::post("/x").body(()).unwrap();
        *request.headers_mut() = header_map(&pairs);
        *request.version_mut() = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        let verdict = screen(&request, &Default::default(), || Some(false));
        if verdict.is_none() {
            let codings: Vec<_> = request.headers().get_all("transfer-encoding").iter().collect();
            prop_assert!(codings.len() <= 1);
            if let Some(coding) = codings.first() {
                prop_assert!(coding.as_bytes().eq_ignore_ascii_case(b"chunked"));
                prop_assert!(!request.headers().contains_key("content-length"));
                prop_assert!(!http10);
            }
        }
    }

    /// A host pattern matches exactly what its definition says, for any host.
    #[test]
    fn host_patterns_match_by_definition(name in "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}", host in "[a-zA-Z.]{0,20}", wildcard in any::<bool>()) {
        let text = if wildcard { format!("*.{name}") } else { name.clone() };
        let pattern = HostPattern::parse(&text).unwrap();
        let host_lower = host.to_ascii_lowercase();
        let expected = if wildcard {
            host_lower.ends_with(&format!(".{name}")) && host_lower.len() > name.len() + 1
        } else {
            host_lower == name
        };
        prop_assert_eq!(pattern.matches(&host), expected);
    }

    /// The first route whose host and prefix match takes the request, as a plain reading of
    /// the route list would say.
    #[test]
    fn routing_takes_the_first_matching_route(
        routes in prop::collection::vec((prop::option::of(prop::sample::select(vec!["a.test", "*.test", "b.test"])), prop::option::of(prop::sample::select(vec!["/", "/api", "/api/v1", "/static"]))), 1..6),
        host in prop::sample::select(vec!["a.test", "b.test", "x.a.test", "other", "A.TEST"]),
        path in prop::sample::select(vec!["/", "/api", "/api/v1/users", "/apix", "/static/x", "/none"]),
    ) {
        let mut text = String::from("[pool.p0]\nbackends = [{ address = \"127.0.0.1:1\" }]\n");
        for i in 0..routes.len() {
            text += &format!("[pool.p{}]\nbackends = [{{ address = \"127.0.0.1:{}\" }}]\n", i + 1, i + 2);
        }
        for (i, (route_host, prefix)) in routes.iter().enumerate() {
            text += "[[route]]\n";
            if let Some(h) = route_host { text += &format!("host = \"{h}\"\n"); }
            if let Some(p) = prefix { text += &format!("path_prefix = \"{p}\"\n"); }
            text += &format!("pool = \"p{}\"\n", i + 1);
        }
        let config = Config::parse(&text, Path::new("routes.toml")).unwrap();
        let state = State::build(&config, 1);
        let expected = routes.iter().position(|(route_host, prefix)| {
            let host_ok = route_host.is_none_or(|h| HostPattern::parse(h).unwrap().matches(host));
            let path_ok = prefix.is_none_or(|p| path.starts_with(p));
            host_ok && path_ok
        });
        let got = state.route(Some(host), path).map(|r| r.pool().name().to_string());
        prop_assert_eq!(got, expected.map(|i| format!("p{}", i + 1)));
    }
}
