//! Config parse and snapshot build for a 1,000-backend pool (what a reload costs).
//! `cargo bench --bench snapshot`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::Config;
use fulcrum::bench::State;

fn config_text(strategy: &str) -> String {
    let key = if strategy == "consistent_hash" {
        "hash_key = \"path\"\n"
    } else {
        ""
    };
    let backends: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "  {{ address = \"10.0.{}.{}:80\", weight = {} }},",
                i / 250,
                i % 250,
                1 + i % 4
            )
        })
        .collect();
    format!(
        "[pool.big]\nstrategy = \"{strategy}\"\n{key}backends = [\n{}\n]\n",
        backends.join("\n")
    )
}

fn parse(c: &mut Criterion) {
    let text = config_text("weighted");
    c.bench_function("parse_1000_backends", |b| {
        b.iter(|| Config::parse(black_box(&text), Path::new("bench.toml")).unwrap())
    });
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_build_1000_backends");
    for strategy in [
        "round_robin",
        "weighted",
        "least_connections",
        "random",
        "consistent_hash",
    ] {
        let config = Config::parse(&config_text(strategy), Path::new("bench.toml")).unwrap();
        group.bench_function(strategy, |b| b.iter(|| State::build(black_box(&config), 1)));
        let previous = State::build(&config, 1);
        group.bench_function(format!("{strategy}_reusing_previous"), |b| {
            b.iter(|| State::rebuild(black_box(&config), &[], 2, Some(&previous)))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, build);
criterion_main!(benches);
