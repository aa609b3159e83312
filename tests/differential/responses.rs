//! One scripted backend response requested in twelve ways (GET, HEAD, POST with a body, PUT
//! with a chunked body × an HTTP/1.1 client on the plain listener, one on the TLS listener, and
//! an HTTP/2 client over TLS), and the check that all twelve come to one outcome: the response
//! relayed, or a 502 whose body names the reason.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::common::{self, Certs, WAIT};
use crate::support::raw_client::{Pace, RawConnection};
use crate::support::recorder::scripted_keep_alive_backend;
use crate::support::{TestBody, TestProxy, wire};

/// The outcome the team decided for a response.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The final response relayed whole: this status, this body (none to a HEAD).
    Relayed { status: u16, body: &'static str },
    /// Refused: a 502 with a one-line body naming the reason.
    BadGateway,
}

pub struct ResponseCase {
    pub name: &'static str,
    pub reply: &'static [u8],
    /// The backend closes the connection after it (a body delimited by the close).
    pub close: bool,
    pub expect: Expect,
}

/// Fields that describe one hop's framing, not the response: left out of comparisons.
const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Retries and outlier ejection off: each outcome is the response's, not a policy's.
pub const POOL: &str = "retries = 0\n[pool.web.outlier]\nconsecutive_failures = 0\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Plain,
    Tls,
    H2,
}

pub const CLIENTS: [Client; 3] = [Client::Plain, Client::Tls, Client::H2];

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Client::Plain => "HTTP/1.1, plain",
            Client::Tls => "HTTP/1.1, TLS",
            Client::H2 => "HTTP/2, TLS",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
}

const METHODS: [Method; 4] = [Method::Get, Method::Head, Method::Post, Method::Put];

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }

    /// The request over HTTP/1.1: POST with a Content-Length body, PUT with a chunked one.
    fn h1(self) -> Vec<u8> {
        let head = format!("{} /r HTTP/1.1\r\nHost: a.test\r\n", self.name());
        let rest = match self {
            Method::Get | Method::Head => "\r\n",
            Method::Post => "Content-Length: 5\r\n\r\nhello",
            Method::Put => "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        };
        (head + rest).into_bytes()
    }

    /// The body over HTTP/2: POST's of a known length, PUT's of none (sent chunked onwards).
    fn h2_body(self) -> TestBody {
        match self {
            Method::Get | Method::Head => Empty::new().boxed(),
            Method::Post => Full::new(Bytes::from_static(b"hello")).boxed(),
            Method::Put => Unsized(Some(Bytes::from_static(b"hello"))).boxed(),
        }
    }
}

/// A body whose length is not announced.
struct Unsized(Option<Bytes>);

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|data| Ok(Frame::data(data))))
    }
}

/// A response as the client got it, its fields in normal form (framing fields left out).
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    fields: String,
    pub body: Vec<u8>,
    /// What is wrong with the framing fields an HTTP/1.1 client got, if anything: they are
    /// left out of comparisons, but must still say one thing.
    framing_fault: Option<String>,
}

/// A client of the proxy. Over HTTP/1.1 it keeps its connection from one request to the next
/// while the proxy keeps it open, so that bytes relayed after an answer would spoil the next;
/// over HTTP/2, each request has a connection of its own.
pub struct Session<'a> {
    proxy: &'a TestProxy,
    client: Client,
    connection: Option<RawConnection>,
}

impl Session<'_> {
    pub fn new(proxy: &TestProxy, client: Client) -> Session<'_> {
        Session {
            proxy,
            client,
            connection: None,
        }
    }

    /// One request, and its response.
    pub async fn send(&mut self, method: Method) -> Result<Outcome, String> {
        let tls = self.proxy.tls_addr.expect("a TLS listener");
        let mut connection = match (self.client, self.connection.take()) {
            (Client::H2, _) => return over_h2(tls, method).await,
            (_, Some(connection)) => connection,
            (Client::Plain, None) => RawConnection::plain(self.proxy.addr).await,
            (Client::Tls, None) => RawConnection::tls(tls).await,
        };
        let to_head = method == Method::Head;
        let response = connection
            .exchange(&method.h1(), Pace::Whole, to_head, WAIT)
            .await?;
        let closes = response
            .head
            .values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        if !closes {
            self.connection = Some(connection);
        }
        let fields = response
            .head
            .fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()));
        Ok(Outcome {
            status: response.head.status().ok_or("no status code")?,
            fields: common::normal_fields(fields, &FRAMING),
            body: response.body,
            framing_fault: framing_fault(&response.head),
        })
    }
}

/// A relayed head's framing is one plain length, or chunked, or neither; never a list, two
/// lengths, or both.
fn framing_fault(head: &wire::Head) -> Option<String> {
    let lengths = head.values("content-length");
    let codings = head.values("transfer-encoding");
    let plain = |v: &String| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match (lengths.as_slice(), codings.as_slice()) {
        ([], _) | ([_], []) if lengths.iter().all(plain) => None,
        _ => Some(format!(
            "relayed framing Content-Length {lengths:?}, Transfer-Encoding {codings:?}"
        )),
    }
}

async fn over_h2(addr: std::net::SocketAddr, method: Method) -> Result<Outcome, String> {
    let stream = crate::support::tls::connect(addr, Some("a.test"), &[b"h2"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method.name())
        .uri("https://a.test/r")
        .body(method.h2_body())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .map_err(|_| "no response in time".to_owned())?
        .map_err(|e| format!("no response: {e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .map_err(|_| "no whole body in time".to_owned())?
        .map_err(|e| format!("body cut: {e:?}"))?
        .to_bytes();
    let fields = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    Ok(Outcome {
        status: parts.status.as_u16(),
        fields: common::normal_fields(fields, &FRAMING),
        body: body.to_vec(),
        framing_fault: None,
    })
}

/// Requests every case in every way; panics listing every (case, way) that missed the
/// expected outcome and every case whose ways came to different outcomes.
pub async fn check(invariant: &str, cases: &[ResponseCase]) {
    let certs = Certs::new();
    let mut failures = Vec::new();
    for case in cases {
        let backend = scripted_keep_alive_backend(case.reply, case.reply, case.close).await;
        let proxy = certs.proxy(backend, POOL).await;
        let mut heads = Vec::new();
        let mut bodies = Vec::new();
        for client in CLIENTS {
            for method in METHODS {
                let way = format!("{} {client}", method.name());
                let outcome = Session::new(&proxy, client).send(method).await;
                if let Err(why) = meets(case.expect, method, &outcome) {
                    failures.push((case.name.to_owned(), format!("[{way}] {why}")));
                }
                heads.push((way.clone(), head_text(&outcome)));
                let refused = outcome.as_ref().is_ok_and(|o| o.status == 502);
                if method != Method::Head && !refused {
                    bodies.push((way, body_text(&outcome)));
                }
            }
        }
        if let Some(report) = common::disagreement("the status and fields", &heads) {
            failures.push((case.name.to_owned(), report));
        }
        if let Some(report) = common::disagreement("the body", &bodies) {
            failures.push((case.name.to_owned(), report));
        }
    }
    common::assert_none(invariant, cases.len(), &failures);
}

/// Whether an outcome is the expected one; if not, what it was.
pub fn meets(
    expect: Expect,
    method: Method,
    outcome: &Result<Outcome, String>,
) -> Result<(), String> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(why) => {
            return Err(format!(
                "no whole response ({why}); a refusal must be a 502"
            ));
        }
    };
    if let Some(fault) = &outcome.framing_fault {
        return Err(format!("{} with {fault}", outcome.status));
    }
    let body = String::from_utf8_lossy(&outcome.body);
    let to_head = method == Method::Head;
    match expect {
        Expect::Relayed {
            status,
            body: expected,
        } => {
            let expected = if to_head { "" } else { expected };
            if outcome.status != status || body != expected {
                return Err(format!(
                    "expected {status} {expected:?}, got {} {body:?}",
                    outcome.status
                ));
            }
        }
        Expect::BadGateway => {
            let reason = body.trim_end();
            let named = to_head
                || (!reason.is_empty()
                    && !reason.contains('\n')
                    && !reason.eq_ignore_ascii_case("bad gateway"));
            if outcome.status != 502 || !named {
                return Err(format!(
                    "expected a 502 naming the reason in one line, got {} {body:?}",
                    outcome.status
                ));
            }
        }
    }
    Ok(())
}

/// The status and fields; of a 502, only the status (a refusal is a 502 everywhere, its reason
/// worded as the place that refused it words it).
fn head_text(outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(outcome) if outcome.status == 502 => "502".to_owned(),
        Ok(outcome) => format!("{}\n{}", outcome.status, outcome.fields),
        Err(why) => format!("no response: {why}"),
    }
}

fn body_text(outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(outcome) => format!("{:?}", wire::escape(&outcome.body)),
        Err(_) => "no response".to_owned(),
    }
}

/// The response corpus, with the team's decision for each (a table: kept one case a line).
#[rustfmt::skip]
pub fn corpus() -> Vec<ResponseCase> {
    let relayed = |status: u16| Expect::Relayed {
        status,
        body: if status == 200 { "hello" } else { "" },
    };
    let case = |name: &'static str, reply: &'static [u8], expect: Expect| ResponseCase {
        name,
        reply,
        close: false,
        expect,
    };
    vec![
        case("control: Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", relayed(200)),
        case("control: chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", relayed(200)),
        case("chunk size with a leading space", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", relayed(200)),
        case("chunk size with trailing spaces", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5  \r\nhello\r\n0\r\n\r\n", relayed(200)),
        case("chunk extension", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n", relayed(200)),
        case("chunked with trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n", relayed(200)),
        case("two equal Content-Lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", relayed(200)),
        case("Content-Length: 5, 5", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", relayed(200)),
        case("bare LF line endings", b"HTTP/1.1 200 OK\nContent-Length: 5\nX-A: 1\n\nhello", relayed(200)),
        case("a later HTTP/1 minor version", b"HTTP/1.2 200 OK\r\nContent-Length: 5\r\n\r\nhello", relayed(200)),
        ResponseCase {
            name: "HTTP/1.0 without a length",
            reply: b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
            close: true,
            expect: relayed(200),
        },
        case("100 Continue first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", relayed(200)),
        case("103 Early Hints first", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", relayed(200)),
        case("204 with stray bytes", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", relayed(204)),
        case("304 with stray bytes", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", relayed(304)),
        case("Transfer-Encoding with Content-Length", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Expect::BadGateway),
        case("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 5\r\n\r\nhello", Expect::BadGateway),
    ]
}
