//! TLS termination: certificates chosen by SNI, a default for clients without SNI, ALPN h2 with a
//! real HTTP/2 client, certificates reloaded for new connections, startup errors that name the
//! file, `X-Forwarded-Proto: https`, and the https redirect.

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::tls::{connect, presented, write_cert};
use support::{Backend, TempDir, TestProxy, pool, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on an HTTP/1.1 TLS stream (closing it); the whole answer.
async fn get(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// A backend, the certificates `a` and `b` in a directory (kept while it lives), and a proxy
/// terminating TLS with them in front of the backend.
async fn tls_proxy() -> (Backend, TempDir, TestProxy) {
    let backend = Backend::start("web").await;
    let certs = TempDir::new();
    write_cert(certs.path(), "a", &["a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let proxy =
        TestProxy::start(&(pool("web", "round_robin", &[&backend]) + &tls_config(certs.path())))
            .await;
    (backend, certs, proxy)
}

/// `[tls]` with the two certificates `a` (a.test, *.a.test) and `b` (b.test) in `dir`.
fn tls_config(dir: &Path) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\nhosts = [\"a.test\", \"*.a.test\"]\ncert = \"{0}/a.pem\"\nkey = \"{0}/a.key\"\n\
         [[tls.certificates]]\nhosts = [\"b.test\"]\ncert = \"{0}/b.pem\"\nkey = \"{0}/b.key\"\n",
        dir.display()
    )
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_with_the_first_as_default() {
    let backend = Backend::start("web").await;
    let certs = TempDir::new();
    let a = write_cert(certs.path(), "a", &["a.test", "*.a.test"]);
    let b = write_cert(certs.path(), "b", &["b.test"]);
    let proxy =
        TestProxy::start(&(pool("web", "round_robin", &[&backend]) + &tls_config(certs.path())))
            .await;
    let tls = proxy.tls_addr.expect("a TLS listener");

    assert_eq!(presented(&connect(tls, Some("b.test"), &[]).await), b);
    assert_eq!(presented(&connect(tls, Some("a.test"), &[]).await), a);
    assert_eq!(
        presented(&connect(tls, Some("x.a.test"), &[]).await),
        a,
        "wildcard"
    );
    assert_eq!(
        presented(&connect(tls, Some("unknown.test"), &[]).await),
        a,
        "unknown name: default"
    );
    assert_eq!(
        presented(&connect(tls, None, &[]).await),
        a,
        "no SNI: the first certificate"
    );
}

#[tokio::test]
async fn http1_over_tls_is_forwarded_with_x_forwarded_proto_https() {
    let (backend, _certs, proxy) = tls_proxy().await;
    let mut stream = connect(proxy.tls_addr.unwrap(), Some("a.test"), &[b"http/1.1"]).await;
    let text = get(&mut stream, "/x").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = backend.requests();
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn alpn_h2_serves_a_real_http2_client() {
    let (backend, _certs, proxy) = tls_proxy().await;
    let stream = connect(
        proxy.tls_addr.unwrap(),
        Some("a.test"),
        &[b"h2", b"http/1.1"],
    )
    .await;
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN chose h2"
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    let request = Request::get("https://a.test/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"web");
    assert_eq!(backend.requests()[0].target, "/over-h2");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_after_a_reload() {
    let backend = Backend::start("web").await;
    let certs = TempDir::new();
    let old = write_cert(certs.path(), "a", &["a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let config = pool("web", "round_robin", &[&backend]) + &tls_config(certs.path());
    let proxy = TestProxy::start(&config).await;
    let tls = proxy.tls_addr.unwrap();
    let mut before = connect(tls, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(presented(&before), old);

    let renewed = write_cert(certs.path(), "a", &["a.test"]);
    proxy
        .control
        .reload()
        .await
        .expect("the reload takes the new files");
    assert_eq!(presented(&connect(tls, Some("a.test"), &[]).await), renewed);

    // The connection made before the reload still works.
    let text = get(&mut before, "/").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // A broken certificate file on reload is a reload error, and the old one stays.
    std::fs::write(certs.path().join("a.pem"), "not a certificate").unwrap();
    let error = proxy
        .control
        .reload()
        .await
        .expect_err("a broken file is refused");
    assert!(error.to_string().contains("a.pem"), "{error}");
    assert_eq!(presented(&connect(tls, Some("a.test"), &[]).await), renewed);
}

#[test]
fn certificate_problems_are_config_errors_naming_the_file() {
    let certs = TempDir::new();
    write_cert(certs.path(), "a", &["a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let check = |text: String| {
        fulcrum::Config::parse(&text, &certs.path().join("proxy.toml"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let base = "[pool.web]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\n";
    let missing = check(format!("{base}cert = \"missing.pem\"\nkey = \"a.key\"\n"));
    assert!(
        missing.contains("proxy.toml:6") && missing.contains("missing.pem"),
        "{missing}"
    );
    let mismatched = check(format!("{base}cert = \"a.pem\"\nkey = \"b.key\"\n"));
    assert!(mismatched.contains("does not match"), "{mismatched}");
    assert!(
        mismatched.contains("proxy.toml:7") && mismatched.contains("key"),
        "a key's fault names the key's line: {mismatched}"
    );
    let missing_key = check(format!("{base}cert = \"a.pem\"\nkey = \"nope.key\"\n"));
    assert!(
        missing_key.contains("proxy.toml:7") && missing_key.contains("nope.key"),
        "{missing_key}"
    );
    std::fs::write(certs.path().join("empty.pem"), "").unwrap();
    let empty = check(format!("{base}cert = \"empty.pem\"\nkey = \"a.key\"\n"));
    assert!(empty.contains("empty chain"), "{empty}");
    let no_key = check(format!("{base}cert = \"a.pem\"\nkey = \"a.pem\"\n"));
    assert!(no_key.contains("no private key"), "{no_key}");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_when_asked() {
    let backend = Backend::start("web").await;
    let certs = TempDir::new();
    write_cert(certs.path(), "a", &["a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let config = format!(
        "[server]\nredirect_https = true\n{}{}",
        pool("web", "round_robin", &[&backend]),
        tls_config(certs.path())
    );
    let proxy = TestProxy::start(&config).await;
    let port = proxy.tls_addr.unwrap().port();
    let reply = raw_exchange(
        proxy.addr,
        b"POST /cart?x=1 HTTP/1.1\r\nHost: shop.test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(308), "{}", reply.text);
    let location = format!("location: https://shop.test:{port}/cart?x=1\r\n");
    assert!(
        reply.text.to_ascii_lowercase().contains(&location),
        "{}",
        reply.text
    );
    assert_eq!(backend.served(), 0);
    // Over TLS, the same request is served.
    let mut stream = connect(proxy.tls_addr.unwrap(), Some("a.test"), &[b"http/1.1"]).await;
    assert!(get(&mut stream, "/").await.starts_with("HTTP/1.1 200"));
}
