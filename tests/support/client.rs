//! Clients for tests: a keep-alive HTTP/1.1 client, an HTTP/2 prior-knowledge client, and raw bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `name=value` part of the first `Set-Cookie`, ready to send back as `Cookie`.
    pub fn cookie(&self) -> String {
        let set = self.headers["set-cookie"]
            .to_str()
            .expect("an ASCII Set-Cookie");
        set.split(';').next().unwrap_or("").to_owned()
    }

    /// The `x-backend` header: which test backend answered.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A client aimed at one proxy.
pub struct Http {
    addr: SocketAddr,
    client: Client<HttpConnector, TestBody>,
}

impl Http {
    /// HTTP/1.1 with keep-alive.
    pub fn to(addr: SocketAddr) -> Http {
        Http {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(empty()).unwrap()).await
    }

    /// `GET path` with a `Host` header.
    pub async fn get_host(&self, host: &str, path: &str) -> Reply {
        self.send(
            Request::get(path)
                .header("host", host)
                .body(empty())
                .unwrap(),
        )
        .await
    }

    /// `GET path`, reporting a transport failure (reset, truncated body) instead of panicking.
    pub async fn try_get(&self, path: &str) -> Result<Reply, String> {
        let uri = format!("http://{}{}", self.addr, path).parse().unwrap();
        let request = Request::get::<http::Uri>(uri).body(empty()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "no answer within 30s".to_owned())?
            .map_err(|err| format!("transport: {err:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| format!("body: {err}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Sends `request` (its URI a path) to the proxy and reads the whole response.
    pub async fn send(&self, mut request: Request<TestBody>) -> Reply {
        let target = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        *request.uri_mut() = format!("http://{}{}", self.addr, target).parse().unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the proxy answers within 30s")
            .expect("the proxy answers with HTTP");
        read_reply(response).await
    }
}

/// Sends `request` over a fresh HTTP/2 prior-knowledge (h2c) connection to `addr`; the
/// request's URI (e.g. `http://api.example.com/x`) becomes `:authority` and `:path`.
pub async fn h2c(addr: SocketAddr, request: Request<TestBody>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake with the proxy");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("h2 response");
    read_reply(response).await
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the whole body arrives")
        .to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it (or 10 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A timeout leaves what was read so far; the caller's assertions say what was missing.
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `deadline`.
pub async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends GETs until one is answered by `name`; panics after `deadline`.
pub async fn until_served_by(http: &Http, name: &str, deadline: Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let reply = http.get("/").await;
        if reply.backend() == name {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{name} never served within {deadline:?}: last {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which backends answer `count` GETs of `/`; every answer must be a 200.
pub async fn answered_by(http: &Http, count: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let reply = http.get("/").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        names.push(reply.backend().to_owned());
    }
    names
}

/// What came back for raw bytes: everything read, whether the proxy closed the connection
/// (rather than leaving it open past the wait), and whether that close was a reset.
#[derive(Debug)]
pub struct RawReply {
    pub text: String,
    pub closed: bool,
    pub reset: bool,
}

impl RawReply {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        self.text.get(9..12)?.parse().ok()
    }

    /// How many responses came back.
    pub fn responses(&self) -> usize {
        self.text.matches("HTTP/1.").count()
    }
}

/// Writes `bytes` on a fresh connection, then reads until the proxy closes it or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before reading everything; a failed write is part of the answer.
    stream.write_all(bytes).await.ok();
    let mut out = Vec::new();
    // What was read before an error stays in `out`.
    let end = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    RawReply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed: end.is_ok(),
        reset: matches!(end, Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset),
    }
}
