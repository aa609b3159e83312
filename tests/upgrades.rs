//! WebSocket and other upgrades: the upgrade is forwarded, the 101 relayed, bytes bridged both
//! ways; a reload does not cut a tunnel, shutdown waits for it, an idle one is closed.

mod support;

use std::time::Duration;

use support::{TestProxy, upgrade_echo_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(backend: std::net::SocketAddr, extra: &str) -> String {
    format!("[pool.ws]\nbackends = [{{ address = \"{backend}\" }}]\n{extra}")
}

/// Opens an upgraded connection through the proxy; returns it after the 101.
async fn open_tunnel(proxy: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the 101 arrives")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the connection stays open: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    stream
}

async fn echo(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .expect("the tunnel is open");
    assert_eq!(back, text);
}

#[tokio::test]
async fn an_upgrade_is_bridged_both_ways_and_survives_a_reload() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "")).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    echo(&mut tunnel, b"hello through the proxy").await;

    proxy.rewrite(&config(backend, "retries = 1\n"));
    proxy.control.reload().await.expect("reload");
    echo(&mut tunnel, b"still here after the reload").await;
}

#[tokio::test]
async fn shutdown_waits_for_an_open_tunnel() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "[server]\nshutdown_grace = \"10s\"\n")).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits while the tunnel is open"
    );
    echo(&mut tunnel, b"during the drain").await;
    drop(tunnel);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes once the tunnel closes")
        .unwrap();
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_at_client_idle() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "[timeouts]\nclient_idle = \"300ms\"\n")).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    echo(&mut tunnel, b"x").await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle tunnel is closed");
}

#[tokio::test]
async fn a_plain_request_to_the_same_backend_is_not_upgraded() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "")).await;
    let reply = support::Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "plain");
}

#[tokio::test]
async fn a_pause_longer_than_request_header_does_not_break_a_tunnel() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(
        backend,
        "[timeouts]\nrequest_header = \"200ms\"\nclient_idle = \"60s\"\n",
    ))
    .await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    echo(&mut tunnel, b"first frame").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    echo(&mut tunnel, b"after a pause: not a slow request head").await;
}

/// h2c upgrades the client's connection to the proxy, never a backend's: a backend that took it
/// would serve HTTP/2 requests no route or limit saw (h2c smuggling). The request is served as a
/// plain one, without the upgrade's headers.
#[tokio::test]
async fn an_h2c_upgrade_is_not_passed_on() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "")).await;
    let reply = support::raw_exchange(
        proxy.addr,
        b"GET /public HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    assert!(reply.text.ends_with("plain"), "{}", reply.text);

    let recording = support::Backend::start("b").await;
    let proxy = TestProxy::start(&support::pool("web", "round_robin", &[&recording])).await;
    let reply = support::raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    let headers = &recording.requests()[0].headers;
    assert!(!headers.contains_key("upgrade"), "{headers:?}");
    assert!(!headers.contains_key("http2-settings"), "{headers:?}");
}

/// Another protocol offered beside h2c still upgrades, to that protocol alone.
#[tokio::test]
async fn an_upgrade_offering_h2c_and_another_protocol_upgrades_to_the_other() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "")).await;
    let reply = support::raw_exchange(
        proxy.addr,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(reply.status(), Some(101), "{}", reply.text);
    assert!(
        reply
            .text
            .to_ascii_lowercase()
            .contains("upgrade: websocket\r\n"),
        "{}",
        reply.text
    );
}

/// A pool that speaks HTTP/2 to its backends has no `Upgrade` to pass a WebSocket on: the
/// request is refused with the reason, not sent as a plain GET that answers 200 where the client
/// waits for a 101.
#[tokio::test]
async fn an_upgrade_to_an_http2_pool_is_refused_with_its_reason() {
    let backend = upgrade_echo_backend().await;
    let proxy = TestProxy::start(&config(backend, "protocol = \"http2\"\n")).await;
    let reply = support::raw_exchange(
        proxy.addr,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text);
    assert!(
        reply.text.contains("speaks HTTP/2 to its backends"),
        "{}",
        reply.text
    );
}

/// The upgrade's access log line is written when the tunnel closes, as nginx and HAProxy write
/// theirs: its duration is the tunnel's life and its byte counts what crossed it.
#[tokio::test]
async fn an_upgrade_is_logged_when_its_tunnel_closes() {
    let backend = upgrade_echo_backend().await;
    let dir = support::TempDir::new();
    let path = dir.path().join("access.log");
    let log = format!(
        "[log]\naccess = \"json\"\naccess_path = \"{}\"\n",
        path.display()
    );
    let proxy = TestProxy::start(&config(backend, &log)).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    echo(&mut tunnel, b"first frame").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo(&mut tunnel, b"second").await;
    drop(tunnel);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    support::wait_until("the tunnel's line", Duration::from_secs(10), || {
        !read().is_empty()
    })
    .await;
    let lines: Vec<String> = read().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let entry: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(entry["status"], 101, "{entry}");
    assert!(entry["duration"].as_f64().unwrap() >= 0.3, "{entry}");
    assert_eq!(entry["request_bytes"], 17, "{entry}");
    assert_eq!(entry["response_bytes"], 17, "{entry}");
}
