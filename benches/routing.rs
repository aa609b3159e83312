//! Route matching over 1,000 routes with hosts, path prefixes and header conditions: what
//! finding a request's route costs when it is the first, a middle or the last route, or none.
//! `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::Config;
use fulcrum::bench::{Asked, State};
use http::{HeaderMap, HeaderValue, Method};

/// `count` routes: a host each (every tenth a wildcard), a prefix each, and on every third a
/// header condition; the last route takes everything else.
fn config_text(count: usize) -> String {
    let mut text = String::from("[pool.app]\nbackends = [{ address = \"127.0.0.1:9\" }]\n");
    for i in 0..count - 1 {
        let host = match i % 10 {
            0 => format!("*.tenant{i}.example.com"),
            _ => format!("svc{i}.example.com"),
        };
        text += &format!(
            "[[route]]\nhost = \"{host}\"\npath_prefix = \"/api/v{}/\"\n",
            i % 7
        );
        if i % 3 == 0 {
            text += &format!("headers = {{ \"x-tenant\" = \"t{i}\" }}\n");
        }
        text += "pool = \"app\"\n";
    }
    text + "[[route]]\npool = \"app\"\n"
}

/// Benches finding the route of each `(name, host, path)` among `count` routes.
fn lookups(c: &mut Criterion, count: usize, cases: &[(&str, &str, &str)]) {
    let config = Config::parse(&config_text(count), Path::new("bench.toml")).unwrap();
    let state = State::build(&config, 1);
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("t993"));
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let asked = Asked {
        method: &Method::GET,
        headers: &headers,
        query: None,
    };
    let mut group = c.benchmark_group(format!("route_{count}"));
    for &(name, host, path) in cases {
        assert!(state.route(Some(host), path, &asked).is_some(), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                state
                    .route(black_box(Some(host)), black_box(path), &asked)
                    .is_some()
            })
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    lookups(
        c,
        1000,
        &[
            ("first", "svc1.example.com", "/api/v1/users"),
            ("middle", "svc501.example.com", "/api/v4/users"),
            (
                "header_condition_near_end",
                "svc993.example.com",
                "/api/v6/x",
            ),
            (
                "fallthrough_to_last",
                "unknown.example.com",
                "/api/v1/users",
            ),
        ],
    );
    // The common case: a handful of routes, read in order.
    lookups(
        c,
        8,
        &[
            ("first", "svc1.example.com", "/api/v1/users"),
            (
                "fallthrough_to_last",
                "unknown.example.com",
                "/api/v1/users",
            ),
        ],
    );
}

criterion_group!(benches, routing);
criterion_main!(benches);
