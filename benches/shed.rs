//! What shedding costs the proxy: a request refused by a saturated pool whose queue is full
//! (`upstream/overload/gate.rs`), with the queue empty (`queue = 0`) and holding 1,024 requests
//! of the same priority. `cargo bench --bench shed`.

use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::Config;
use fulcrum::bench::{Priority, Refused, ShedReason, State, Want};

/// A snapshot of one pool of one backend taking one request at a time, `queue` more waiting.
fn state(queue: usize) -> State {
    let text = format!(
        "[pool.p]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n\
         [pool.p.overload]\nmax_in_flight = 1\nqueue = {queue}\nqueue_timeout = \"60s\"\n"
    );
    State::build(&Config::parse(&text, Path::new("bench.toml")).unwrap(), 1)
}

fn shed(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("shed_queue_full");
    for queue in [0, 1024] {
        let state = state(queue);
        let pool = &state.pools()[0];
        let (backend, _) = pool.members().next().unwrap();
        let _busy = backend.start_request();
        // The queue filled with waiting requests of the arriving one's priority.
        let mut waiting: Vec<_> = (0..queue)
            .map(|_| Box::pin(pool.gate().wait(pool, Priority::Normal, Want::default())))
            .collect();
        let mut context = Context::from_waker(Waker::noop());
        for waiter in &mut waiting {
            assert!(waiter.as_mut().poll(&mut context).is_pending());
        }
        group.bench_function(format!("queue_{queue}"), |b| {
            b.iter(|| {
                let arrival = pin!(pool.gate().wait(pool, Priority::Normal, Want::default()));
                let Poll::Ready((refused, _)) = arrival.poll(&mut context) else {
                    panic!("a full queue answers at once");
                };
                assert_eq!(
                    black_box(refused).err(),
                    Some(Refused::Shed(ShedReason::QueueFull))
                );
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shed);
criterion_main!(benches);
