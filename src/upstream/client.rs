//! The client side of the proxy: a connection to a backend (pooled or new), and what a failure
//! to exchange a request on it means.
//!
//! There is no shared client object to rebuild on reload: connections live with their backend
//! (`connections.rs`), and the connect timeout is read per connect from an atomic that each new
//! snapshot sets. A pooled connection that the backend closed while it sat idle is noticed when
//! taken (closed) or when the request cannot be written on it (hyper hands the request back),
//! and the request then goes on a fresh connection, whatever its method.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Backend;
use super::connections::{self, Sender};
use super::plain::Plain;
use crate::body::BodyError;

/// How long a pooled connection, just returned, may take to become ready again.
const READY_WAIT: Duration = Duration::from_secs(1);

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

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }

    /// A connection to `backend` ready for a request, and whether it was reused: the most
    /// recently used idle one that is still open, else a new one. `epoch` is the backend's
    /// connections' epoch read before, to give back with it ([`Connections::put`]).
    pub async fn connection(
        &self,
        backend: &Backend,
        epoch: u64,
    ) -> Result<(Sender, bool), Failure> {
        while let Some(mut sender) = backend.connections().take() {
            if sender.is_ready() {
                return Ok((sender, true));
            }
            // Returned a moment ago: its connection task has not yet marked it ready.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Ok((sender, true));
            }
        }
        Ok((self.new_connection(backend, epoch).await?, false))
    }

    /// A new connection to `backend`, made with the settings of `epoch` (read before): an
    /// HTTP/2 one is kept for the requests to come unless a reload changed them meanwhile.
    pub async fn new_connection(&self, backend: &Backend, epoch: u64) -> Result<Sender, Failure> {
        let started = std::time::Instant::now();
        // Boxed: with its TLS and HTTP/2 handshakes the future is several KiB, and every
        // request's future would otherwise be that much larger to move about.
        let sender = Box::pin(connections::connect(backend, self.connect_timeout())).await?;
        if let Some(shared) = sender.share() {
            backend.connections().share(shared, epoch);
        }
        backend.stats().connect.observe(started.elapsed());
        Ok(sender)
    }
}

impl Client {
    /// A plain connection to `backend` (`plain.rs`), and whether it was reused: the most
    /// recently used idle one that can carry another exchange, else a new one.
    pub async fn plain_connection(&self, backend: &Backend) -> Result<(Box<Plain>, bool), Failure> {
        if let Some(connection) = backend.connections().take_plain() {
            return Ok((connection, true));
        }
        Ok((self.new_plain_connection(backend).await?, false))
    }

    /// A new plain connection to `backend`.
    pub async fn new_plain_connection(&self, backend: &Backend) -> Result<Box<Plain>, Failure> {
        let started = std::time::Instant::now();
        let stream = connections::open(backend, self.connect_timeout()).await?;
        backend.stats().connect.observe(started.elapsed());
        Ok(Plain::new(stream))
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

/// Sorts an error from an exchange that was started on a connection.
pub fn classify(error: &hyper::Error) -> Failure {
    if error.is_user() {
        return match innermost::<BodyError>(error) {
            Some(BodyError::TooLarge { limit }) => Failure::BodyTooLarge(*limit),
            Some(BodyError::Idle(idle)) => Failure::BodyIdle(*idle),
            // What was wrong with the client's body ("invalid chunk size line"), not hyper's
            // wrapper around it ("error from user's Body stream").
            Some(BodyError::Client(client)) => Failure::RequestBody(with_sources(client)),
            None => Failure::RequestBody(error.to_string()),
        };
    }
    if error.is_canceled() {
        return Failure::NotSent(error.to_string());
    }
    match innermost::<io::Error>(error) {
        Some(io) => Failure::Upstream(format!("{error}: {}", describe_io(io))),
        None => Failure::Upstream(error.to_string()),
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
        _ => error.to_string(),
    }
}
