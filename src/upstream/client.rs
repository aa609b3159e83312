//! The HTTP/1.1 client that carries requests to backends, and what its failures mean.
//!
//! One hyper-util pooled client serves every backend, and outlives config reloads: it keeps idle
//! keep-alive connections per `host:port`, sets TCP_NODELAY, bounds connect time (`connector.rs`),
//! and (hyper's own rule) retries a request
//! whose pooled connection turned out closed before the request was written. Idle connections are
//! closed after [`IDLE_TIMEOUT`], which needs `pool_timer` to work at all.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::Connector;
use crate::body::RequestBody;

/// How long an idle upstream connection is kept for reuse; below common backend keep-alive
/// timeouts (nginx 75s) so the backend rarely closes a connection we are about to reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pooled upstream client and its connector's timeout; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: legacy::Client<Connector, RequestBody>,
    connector: Connector,
}

impl Client {
    /// A client with `connect_timeout` on every new upstream connection.
    pub fn new(connect_timeout: Duration) -> Client {
        let connector = Connector::new(connect_timeout);
        let http = legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector.clone());
        Client { http, connector }
    }

    /// Sends a request (absolute URI) on a pooled or new connection.
    pub fn request(&self, request: http::Request<RequestBody>) -> legacy::ResponseFuture {
        self.http.request(request)
    }

    /// Changes the connect timeout for connections opened from now on.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connector.set_timeout(timeout);
    }
}

/// Why a request to a backend produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect did not complete within the connect timeout.
    ConnectTimeout,
    /// The TCP connect failed (refused, unreachable...).
    Connect(String),
    /// The connection closed before the request could be written (hyper already tried a fresh
    /// one): the request never reached the backend.
    NotSent(String),
    /// The client's request body failed while it was being forwarded (the client went away or
    /// sent a malformed body); the backend is not at fault.
    RequestBody(String),
    /// The backend reset or closed the connection after the request was sent, or answered with
    /// something that is not HTTP.
    Upstream(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ConnectTimeout => f.write_str("connect timeout"),
            Failure::Connect(reason) => write!(f, "connect error: {reason}"),
            Failure::NotSent(reason) => write!(f, "not sent: {reason}"),
            Failure::RequestBody(reason) => write!(f, "request body: {reason}"),
            Failure::Upstream(reason) => f.write_str(reason),
        }
    }
}

impl Failure {
    /// Whether the request certainly never reached the backend, so any method may be retried.
    pub fn never_sent(&self) -> bool {
        match self {
            Failure::ConnectTimeout | Failure::Connect(_) | Failure::NotSent(_) => true,
            Failure::RequestBody(_) | Failure::Upstream(_) => false,
        }
    }

    /// Whether the backend is to blame (counts towards ejection).
    pub fn blames_backend(&self) -> bool {
        match self {
            Failure::ConnectTimeout | Failure::Connect(_) | Failure::Upstream(_) => true,
            Failure::NotSent(_) | Failure::RequestBody(_) => false,
        }
    }
}

/// Sorts a client error into a [`Failure`].
pub fn classify(error: &legacy::Error) -> Failure {
    if error.is_connect() {
        return match innermost::<io::Error>(error) {
            Some(io) if io.kind() == io::ErrorKind::TimedOut => Failure::ConnectTimeout,
            Some(io) => Failure::Connect(describe_io(io)),
            None => Failure::Connect(error.to_string()),
        };
    }
    match innermost::<hyper::Error>(error) {
        Some(hyper) if hyper.is_user() => Failure::RequestBody(hyper.to_string()),
        Some(hyper) if hyper.is_canceled() => Failure::NotSent(hyper.to_string()),
        Some(hyper) => Failure::Upstream(hyper.to_string()),
        None => Failure::Upstream(error.to_string()),
    }
}

/// The deepest error of type `E` in `error`'s source chain.
fn innermost<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut found = None;
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(hit) = err.downcast_ref::<E>() {
            found = Some(hit);
        }
        current = err.source();
    }
    found
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => error.to_string(),
    }
}
