//! Each strategy's distribution, observed through the real proxy on real backends.

mod support;

use std::time::Duration;

use support::{Backend, Http, TestProxy, pool, wait_until, weighted_pool};

async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut started = Vec::new();
    for name in names {
        started.push(Backend::start(name).await);
    }
    started
}

async fn sequence(http: &Http, count: usize) -> Vec<String> {
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200);
        seen.push(reply.backend().to_owned());
    }
    seen
}

fn count(seen: &[String], name: &str) -> usize {
    seen.iter().filter(|s| *s == name).count()
}

#[tokio::test]
async fn round_robin_rotates_strictly_in_order() {
    let b = backends(&["a", "b", "c"]).await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&b[0], &b[1], &b[2]])).await;
    let seen = sequence(&Http::to(proxy.addr), 9).await;
    assert_eq!(seen, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[tokio::test]
async fn round_robin_ignores_weights() {
    let b = backends(&["a", "b"]).await;
    let config = weighted_pool("web", "round_robin", &[&b[0], &b[1]], &[1, 5]);
    let proxy = TestProxy::start(&config).await;
    let seen = sequence(&Http::to(proxy.addr), 20).await;
    assert_eq!((count(&seen, "a"), count(&seen, "b")), (10, 10));
}

#[tokio::test]
async fn weighted_gives_exact_proportions_interleaved() {
    let b = backends(&["light", "heavy"]).await;
    let config = weighted_pool("web", "weighted", &[&b[0], &b[1]], &[1, 3]);
    let proxy = TestProxy::start(&config).await;
    let seen = sequence(&Http::to(proxy.addr), 100).await;
    assert_eq!(
        count(&seen, "light"),
        25,
        "1:3 over 100 requests is exactly 25:75"
    );
    assert_eq!(count(&seen, "heavy"), 75);
    let longest = seen
        .chunk_by(|x, y| x == y)
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(
        longest <= 3,
        "1:3 never gives the heavy backend 4 in a row, saw {longest}"
    );
}

#[tokio::test]
async fn weighted_spreads_three_backends_smoothly() {
    let b = backends(&["a", "b", "c"]).await;
    let config = weighted_pool("web", "weighted", &[&b[0], &b[1], &b[2]], &[5, 1, 1]);
    let proxy = TestProxy::start(&config).await;
    let seen = sequence(&Http::to(proxy.addr), 7).await;
    assert_eq!(
        seen,
        ["a", "a", "b", "a", "c", "a", "a"],
        "nginx's smooth order for 5:1:1"
    );
}

#[tokio::test]
async fn random_spread_is_bounded() {
    let b = backends(&["a", "b"]).await;
    let proxy = TestProxy::start(&pool("web", "random", &[&b[0], &b[1]])).await;
    let seen = sequence(&Http::to(proxy.addr), 400).await;
    let a = count(&seen, "a");
    assert!(
        (140..=260).contains(&a),
        "uniform random over 400 gave a={a}"
    );
    assert_eq!(a + count(&seen, "b"), 400);
}

#[tokio::test]
async fn random_follows_weights() {
    let b = backends(&["a", "b"]).await;
    let config = weighted_pool("web", "random", &[&b[0], &b[1]], &[1, 4]);
    let proxy = TestProxy::start(&config).await;
    let seen = sequence(&Http::to(proxy.addr), 500).await;
    let a = count(&seen, "a");
    assert!(
        (60..=140).contains(&a),
        "1:4 random over 500 gave a={a}, expected about 100"
    );
}

#[tokio::test]
async fn least_connections_avoids_the_busy_backend() {
    let b = backends(&["busy", "idle"]).await;
    let proxy = TestProxy::start(&pool("web", "least_connections", &[&b[0], &b[1]])).await;
    let http = Http::to(proxy.addr);

    // Park long requests until both backends hold some, then release only `idle`'s.
    let mut parked = Vec::new();
    for _ in 0..4 {
        let http = Http::to(proxy.addr);
        parked.push(tokio::spawn(async move { http.get("/hold").await }));
    }
    wait_until("four requests are parked", Duration::from_secs(5), || {
        b[0].requests().len() + b[1].requests().len() == 4
    })
    .await;
    assert_eq!(
        b[0].requests().len(),
        2,
        "ties alternate while both are equally loaded"
    );
    b[1].release(2);
    wait_until("idle has answered its two", Duration::from_secs(5), || {
        parked.iter().filter(|p| p.is_finished()).count() == 2
    })
    .await;

    // `busy` still has 2 in flight, `idle` none: every new request goes to `idle`.
    let seen = sequence(&http, 10).await;
    assert_eq!(count(&seen, "idle"), 10, "least_connections sent {seen:?}");
    b[0].release(2);
    for request in parked {
        assert_eq!(request.await.unwrap().status, 200);
    }
}
