//! What every exchange with a backend shares, whatever its protocol: the connect timeout (read
//! per connect from an atomic that each new snapshot sets, so there is no client object to
//! rebuild on reload), and what a failure to exchange means ([`Failure`]).

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::body::BodyError;

/// Upstream connection settings shared across snapshots; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    connect_timeout_ms: Arc<AtomicU64>,
}

impl Client {
    /// Connections made with `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Client {
        Client {
            connect_timeout_ms: Arc::new(AtomicU64::new(connect_timeout.as_millis() as u64)),
        }
    }

    /// Changes the connect timeout for connections opened from now on.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connect_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }
}

/// Why a request to a backend produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect did not complete within the connect timeout.
    ConnectTimeout,
    /// The TCP connect (or the connection's setup) failed: refused, unreachable...
    Connect(String),
    /// The TLS handshake with an `https://` backend failed or timed out. The reason (the
    /// certificate's names, the backend's address) is for the log, not the client.
    Tls(String),
    /// The connection closed before the request could be written: it never reached the backend.
    NotSent(String),
    /// The client's request body failed while it was being forwarded (the client went away or
    /// sent a malformed body); the backend is not at fault.
    RequestBody(String),
    /// The client's request body went past `max_body` bytes.
    BodyTooLarge(u64),
    /// The client's request body sent nothing for `request_body_idle`.
    BodyIdle(Duration),
    /// The backend reset or closed the connection after the request was sent, or answered with
    /// something that is not HTTP.
    Upstream(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ConnectTimeout => f.write_str("connect timeout"),
            Failure::Connect(reason) => write!(f, "connect error: {reason}"),
            Failure::Tls(reason) => write!(f, "TLS handshake failed: {reason}"),
            Failure::NotSent(reason) => write!(f, "not sent: {reason}"),
            Failure::RequestBody(reason) => write!(f, "request body: {reason}"),
            Failure::BodyTooLarge(limit) => write!(f, "request body larger than {limit} bytes"),
            Failure::BodyIdle(idle) => write!(f, "no request body data for {idle:?}"),
            Failure::Upstream(reason) => f.write_str(reason),
        }
    }
}

impl Failure {
    /// Whether the request certainly never reached the backend, so any method may be retried.
    pub fn never_sent(&self) -> bool {
        match self {
            Failure::ConnectTimeout
            | Failure::Connect(_)
            | Failure::Tls(_)
            | Failure::NotSent(_) => true,
            Failure::RequestBody(_)
            | Failure::BodyTooLarge(_)
            | Failure::BodyIdle(_)
            | Failure::Upstream(_) => false,
        }
    }

    /// Whether the client is to blame: such a request is never retried.
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            Failure::RequestBody(_) | Failure::BodyTooLarge(_) | Failure::BodyIdle(_)
        )
    }

    /// Whether the backend is to blame (counts towards ejection).
    pub fn blames_backend(&self) -> bool {
        match self {
            Failure::ConnectTimeout
            | Failure::Connect(_)
            | Failure::Tls(_)
            | Failure::Upstream(_) => true,
            Failure::NotSent(_)
            | Failure::RequestBody(_)
            | Failure::BodyTooLarge(_)
            | Failure::BodyIdle(_) => false,
        }
    }
}

impl Failure {
    /// The failure of a request body that failed with `error`.
    pub(crate) fn of_body(error: &(dyn StdError + 'static)) -> Failure {
        match innermost::<BodyError>(error) {
            Some(BodyError::TooLarge { limit }) => Failure::BodyTooLarge(*limit),
            Some(BodyError::Idle(idle)) => Failure::BodyIdle(*idle),
            // What was wrong with the client's body ("invalid chunk size line"), not a
            // wrapper's words around it ("error from user's Body stream").
            Some(BodyError::Client(client)) => Failure::RequestBody(with_sources(client.as_ref())),
            None => Failure::RequestBody(with_sources(error)),
        }
    }
}

/// Sorts an error from an exchange that was started on an HTTP/2 connection.
pub fn classify(error: &hyper::Error) -> Failure {
    if error.is_user() {
        return Failure::of_body(error);
    }
    if error.is_canceled() {
        return Failure::NotSent(error.to_string());
    }
    match innermost::<io::Error>(error) {
        Some(io) => Failure::Upstream(format!("{error}: {}", describe_io(io))),
        // "http2 error: connection error detected: ...", not "http2 error" alone.
        None => Failure::Upstream(with_sources(error)),
    }
}

/// `error`'s message, followed by each of its sources' that says more.
fn with_sources(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The deepest error of type `E` in `error`'s source chain.
pub fn innermost<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
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
pub fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::BrokenPipe => "broken pipe".to_owned(),
        _ => error.to_string(),
    }
}
