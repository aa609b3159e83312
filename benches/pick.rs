//! `Pool::pick` for every strategy at 3, 100 and 1,000 backends: one thread, and contended from
//! two threads at once (this machine's core count). Each pick carries a fresh hash key (only
//! `consistent_hash` reads it; hashing it is part of the measured cost). `cargo bench --bench pick`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balance::Strategy;
use fulcrum::config::Outlier;
use fulcrum::upstream::{Backend, Policy, Pool};

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
        fail_open: false,
        balance_factor: None,
        hash_key: None,
        sticky: None,
        outlier: Outlier::default(),
        health: None,
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

/// A different key each call, as distinct users would bring (a cheap counter, hashed).
fn fastrand_key() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fulcrum::balance::stable_hash(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes())
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for strategy in STRATEGIES {
        for size in [3, 100, 1000] {
            let pool = pool(strategy, size);
            group.bench_with_input(BenchmarkId::new(strategy.name(), size), &size, |b, _| {
                b.iter(|| black_box(pool.pick(&[], Some(fastrand_key()))).is_some())
            });
        }
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_contended_2_threads");
    for strategy in STRATEGIES {
        for size in [3, 1000] {
            let pool = pool(strategy, size);
            group.bench_with_input(BenchmarkId::new(strategy.name(), size), &size, |b, _| {
                b.iter_custom(|iters| two_threads(&pool, iters))
            });
        }
    }
    group.finish();
}

/// Time per pick with two threads picking `iters` times each at once.
fn two_threads(pool: &Arc<Pool>, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..iters {
                    black_box(pool.pick(&[], Some(fastrand_key())));
                }
            });
        }
    });
    start.elapsed() / 2
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
