//! Bodies stream through in both directions, intact, without being buffered whole.

mod support;

use http_body_util::BodyExt;
use support::{Backend, BinaryProxy, Http, PatternBody, TestProxy, check_pattern, pool};

const MIB: u64 = 1024 * 1024;

async fn upload(http: &Http, len: u64, sized: bool) -> String {
    let request = http::Request::post("/upload")
        .body(PatternBody::new(len, sized).boxed())
        .unwrap();
    let reply = http.send(request).await;
    assert_eq!(reply.status, 200);
    reply.body
}

#[tokio::test]
async fn eight_mib_upload_with_content_length_arrives_intact() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let answer = upload(&Http::to(proxy.addr), 8 * MIB, true).await;
    assert_eq!(answer, format!("len={} ok=true", 8 * MIB));
    let headers = &backend.requests()[0].headers;
    assert_eq!(headers["content-length"], (8 * MIB).to_string());
}

#[tokio::test]
async fn eight_mib_chunked_upload_arrives_intact() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;
    let answer = upload(&Http::to(proxy.addr), 8 * MIB, false).await;
    assert_eq!(answer, format!("len={} ok=true", 8 * MIB));
    let headers = &backend.requests()[0].headers;
    assert_eq!(
        headers["transfer-encoding"], "chunked",
        "an unsized body is re-framed chunked"
    );
}

/// A GET (or HEAD) body without a length (chunked over HTTP/1.1, DATA frames over HTTP/2) is
/// forwarded: hyper's client sends such a GET as bodyless unless told it is chunked, and search
/// APIs send GETs with bodies. nginx forwards it too.
#[tokio::test]
async fn a_get_with_an_unsized_body_forwards_the_body() {
    let backend = Backend::start("b").await;
    let proxy = TestProxy::start(&pool("web", "round_robin", &[&backend])).await;

    let chunked = b"GET /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n\x00\x01\x02\x03\x04\r\n0\r\n\r\n";
    let answer = support::raw(proxy.addr, chunked).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("len=5 ok=true"), "{answer}");

    let request = http::Request::get("http://a/upload")
        .body(PatternBody::new(4096, false).boxed())
        .unwrap();
    let reply = support::h2c(proxy.addr, request).await;
    assert_eq!(reply.body, "len=4096 ok=true", "over HTTP/2");

    let empty = b"GET /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    let answer = support::raw(proxy.addr, empty).await;
    assert!(answer.ends_with("len=0 ok=true"), "{answer}");
    assert_eq!(backend.requests().len(), 3);
}

/// Downloads `len` bytes through `addr` and checks every byte against the pattern.
async fn download(addr: std::net::SocketAddr, len: u64) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("http://{addr}/bytes/{len}").parse().unwrap();
    let response = client.get(uri).await.expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], len.to_string());
    let (received, intact) = check_pattern(response.into_body()).await;
    assert_eq!(received, len, "the whole body arrives");
    assert!(intact, "every byte matches the pattern");
}

#[tokio::test]
async fn large_bodies_stream_with_bounded_proxy_memory() {
    let backend = Backend::start("b").await;
    let proxy = BinaryProxy::start(&pool("web", "round_robin", &[&backend]));
    download(proxy.addr, MIB).await;
    let baseline_kib = proxy.peak_rss_kib();

    download(proxy.addr, 64 * MIB).await;
    let answer = upload(&Http::to(proxy.addr), 64 * MIB, false).await;
    assert_eq!(answer, format!("len={} ok=true", 64 * MIB));

    let growth_kib = proxy.peak_rss_kib().saturating_sub(baseline_kib);
    assert!(
        growth_kib < 16 * 1024,
        "the proxy's peak RSS grew by {growth_kib} KiB moving 64 MiB bodies: it must stream, not buffer"
    );
}
