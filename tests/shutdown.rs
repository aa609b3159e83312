//! Graceful shutdown of the real binary: stop accepting, finish in-flight requests, close idle
//! keep-alive connections, exit 0; and never wait past the grace period.

mod support;

use std::time::{Duration, Instant};

use support::{Backend, BinaryProxy, Http, pool, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for the process to exit, polling; returns its exit code.
async fn exit_code(proxy: &mut BinaryProxy, deadline: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            started.elapsed() < deadline,
            "the proxy did not exit within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let backend = Backend::start("b").await;
    let config = "[server]\nshutdown_grace = \"10s\"\n".to_owned()
        + &pool("web", "round_robin", &[&backend]);
    let mut proxy = BinaryProxy::start(&config);
    let addr = proxy.addr;

    // An idle keep-alive connection, which shutdown must close rather than wait for.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let slow = tokio::spawn(async move { Http::to(addr).get("/sleep/1500").await });
    // And one on hyper's side of the server (HTTP/2): it is told GOAWAY and finishes too.
    let request = http::Request::get("http://x/sleep/1400")
        .body(support::empty())
        .unwrap();
    let slow_h2 = tokio::spawn(support::h2c(addr, request));
    wait_until(
        "the slow requests reached the backend",
        Duration::from_secs(5),
        || {
            let seen = backend.requests();
            seen.iter().any(|r| r.target == "/sleep/1500")
                && seen.iter().any(|r| r.target == "/sleep/1400")
        },
    )
    .await;
    proxy.signal("TERM");

    let refused_by = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < refused_by,
            "new connections are refused once shutdown starts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !slow.is_finished(),
        "the slow request was still in flight when accepting stopped"
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle keep-alive connection is closed: {closed:?} {:?}",
        closed
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref().ok())
            .map(|n| String::from_utf8_lossy(&buf[..*n]))
    );

    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes");
    let reply = slow_h2.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight HTTP/2 request completes");
    assert_eq!(
        exit_code(&mut proxy, Duration::from_secs(10)).await,
        Some(0)
    );
}

#[tokio::test]
async fn shutdown_never_waits_past_the_grace_period() {
    let backend = Backend::start("b").await;
    let config = "[server]\nshutdown_grace = \"300ms\"\n".to_owned()
        + &pool("web", "round_robin", &[&backend]);
    let mut proxy = BinaryProxy::start(&config);
    let addr = proxy.addr;
    let stuck = tokio::spawn(async move { Http::to(addr).try_get("/sleep/20000").await });
    wait_until(
        "the request reached the backend",
        Duration::from_secs(5),
        || backend.served() == 1,
    )
    .await;
    let signalled = Instant::now();
    proxy.signal("TERM");
    assert_eq!(
        exit_code(&mut proxy, Duration::from_secs(10)).await,
        Some(0)
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        signalled.elapsed()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "a request past the grace period is cut"
    );
}
