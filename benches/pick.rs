//! `Pool::pick` for every strategy at 3, 100 and 1,000 backends: one thread, and contended from
//! two threads at once (this machine's core count). Each pick carries a different hash key, as
//! distinct users would bring (only `consistent_hash` reads it). The keys are hashed before the
//! clock starts: in the proxy the key is hashed from the request before `pick` is called, and
//! hashing it in the loop (an atomic counter and a multiply per byte) took ~20 ns of every
//! strategy's figure. `cargo bench --bench pick`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::bench::{Backend, Policy, Pool, Strategy};

fn pool(strategy: Strategy, size: usize) -> Arc<Pool> {
    let backends = (0..size)
        .map(|i| {
            let address = format!("10.0.{}.{}:80", i / 250, i % 250).parse().unwrap();
            // Weights 1..=4 so weighted and random take their weighted paths.
            Backend::new(address, 1 + (i % 4) as u32, true)
        })
        .collect();
    let policy = Policy {
        retries: 2,
        ..Policy::default()
    };
    Arc::new(Pool::new("bench", strategy, backends, Vec::new(), policy))
}

const STRATEGIES: [Strategy; 5] = [
    Strategy::RoundRobin,
    Strategy::Weighted,
    Strategy::LeastConnections,
    Strategy::Random,
    Strategy::ConsistentHash,
];

/// How many distinct keys the picks cycle through: more than any ring's hot set.
const KEYS: usize = 1 << 16;

/// Distinct users' keys, hashed as the proxy hashes them.
fn keys() -> Vec<u64> {
    (0..KEYS as u64)
        .map(|i| fulcrum::bench::stable_hash(&i.to_le_bytes()))
        .collect()
}

/// Picks `iters` times, each with the next key.
fn picks(pool: &Pool, keys: &[u64], iters: u64) {
    for i in 0..iters as usize {
        black_box(pool.pick(&[], Some(keys[i % KEYS])));
    }
}

fn single_thread(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick");
    for strategy in STRATEGIES {
        for size in [3, 100, 1000] {
            let pool = pool(strategy, size);
            group.bench_with_input(BenchmarkId::new(strategy.name(), size), &size, |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    picks(&pool, &keys, iters);
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick_contended_2_threads");
    for strategy in STRATEGIES {
        for size in [3, 1000] {
            let pool = pool(strategy, size);
            group.bench_with_input(BenchmarkId::new(strategy.name(), size), &size, |b, _| {
                b.iter_custom(|iters| two_threads(&pool, &keys, iters))
            });
        }
    }
    group.finish();
}

/// Time per pick with two threads picking `iters` times each at once.
fn two_threads(pool: &Arc<Pool>, keys: &[u64], iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| picks(pool, keys, iters));
        }
    });
    start.elapsed() / 2
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
