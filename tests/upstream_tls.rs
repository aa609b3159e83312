//! HTTPS backends: verified against the pool's `ca` for the backend's `server_name`; a
//! certificate that does not verify is a 502, never a fall back to plain HTTP.

mod support;

use support::tls::https_backend;
use support::{Http, TempDir, TestProxy};

fn config(
    backend: std::net::SocketAddr,
    server_name: &str,
    ca: Option<&std::path::Path>,
) -> String {
    let ca = ca.map_or(String::new(), |dir| {
        format!("ca = \"{}/ca.pem\"\n", dir.display())
    });
    format!(
        "[pool.secure]\n{ca}backends = [{{ address = \"https://{backend}\", server_name = \"{server_name}\" }}]\n\
         [pool.secure.outlier]\nconsecutive_failures = 0\n"
    )
}

#[tokio::test]
async fn an_https_backend_signed_by_the_pools_ca_is_reached() {
    let dir = TempDir::new();
    let backend = https_backend(dir.path(), "api.internal").await;
    let proxy = TestProxy::start(&config(backend, "api.internal", Some(dir.path()))).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "secure");
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_a_502() {
    let dir = TempDir::new();
    let backend = https_backend(dir.path(), "api.internal").await;
    let without_ca = TestProxy::start(&config(backend, "api.internal", None)).await;
    let reply = Http::to(without_ca.addr).get("/").await;
    assert_eq!(reply.status, 502, "no trust without the ca: {}", reply.body);

    let misnamed = TestProxy::start(&config(backend, "other.internal", Some(dir.path()))).await;
    let reply = Http::to(misnamed.addr).get("/").await;
    assert_eq!(reply.status, 502, "the name must match: {}", reply.body);
    // The client learns the cause, not the certificate's names or the backend's address.
    assert_eq!(
        reply.body, "upstream TLS handshake failed in pool \"secure\"",
        "the 502's body"
    );
}

/// A reload that changes the pool's `ca` takes effect at once: connections kept alive were
/// verified against the old roots, and revoking trust in a CA must not wait for them to close.
#[tokio::test]
async fn a_reload_that_changes_the_ca_stops_trusting_the_old_one_at_once() {
    let dir = TempDir::new();
    let backend = https_backend(dir.path(), "api.internal").await;
    let other = TempDir::new();
    let _unrelated = https_backend(other.path(), "api.internal").await;
    let proxy = TestProxy::start(&config(backend, "api.internal", Some(dir.path()))).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.status, 200, "trusted, and kept alive");

    proxy.rewrite(&config(backend, "api.internal", Some(other.path())));
    proxy.control.reload().await.unwrap();
    let reply = http.get("/").await;
    assert_eq!(reply.status, 502, "the old CA is not trusted any more");

    proxy.rewrite(&config(backend, "api.internal", Some(dir.path())));
    proxy.control.reload().await.unwrap();
    assert_eq!(http.get("/").await.status, 200, "trusted again");
}

/// A backend that accepts the connection but never answers the handshake (it does not speak
/// TLS) is a TLS failure, not a "connect timeout": the connect succeeded.
#[tokio::test]
async fn a_backend_that_does_not_speak_tls_is_a_tls_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    let config = config(backend, "api.internal", None) + "[timeouts]\nconnect = \"300ms\"\n";
    let proxy = TestProxy::start(&config).await;
    let reply = Http::to(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(
        reply.body,
        "upstream TLS handshake failed in pool \"secure\""
    );
    drop(listener);
}

#[test]
fn server_name_is_for_https_backends_and_ca_must_exist() {
    let dir = TempDir::new();
    let check = |text: &str| {
        fulcrum::Config::parse(text, &dir.path().join("proxy.toml"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let err = check("[pool.p]\nbackends = [{ address = \"127.0.0.1:1\", server_name = \"a\" }]\n");
    assert!(
        err.contains("server_name is for https:// backends only"),
        "{err}"
    );
    let err = check(
        "[pool.p]\nca = \"missing.pem\"\nbackends = [{ address = \"https://127.0.0.1:1\" }]\n",
    );
    assert!(
        err.contains("pool.p.ca") && err.contains("missing.pem"),
        "{err}"
    );
}
