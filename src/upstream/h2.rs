//! HTTP/2 to backends (`protocol = "http2"`): hyper's client (`client::conn::http2`), one
//! connection per backend shared by every request to it, pinged so that a backend that stops
//! answering is noticed even with no request waiting.
//!
//! hyper takes the request it sends: a request without a body is copied first, to go again
//! whole; a body reports what it sent through its report channel (`body/request.rs`). A stream
//! the backend refused unprocessed (`REFUSED_STREAM`, or above a `GOAWAY`'s last stream: RFC 9113
//! section 8.7), or lost with its connection, goes again once on a new connection, as Go's and
//! Envoy's clients do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;
use tracing::debug;

use super::connections::open;
use super::exchange::{Cause, Failed, Replay, Report};
use super::head::{Head, is_idempotent};
use super::{Backend, Client, Failure, classify, innermost};
use crate::body::{Leftover, RequestBody};

/// How often an HTTP/2 backend connection is pinged, and how long the pong may take.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a dropped request body to report what it sent. It reports as it is
/// dropped, which hyper does on failure; this only bounds a surprise.
const LEFTOVER_WAIT: Duration = Duration::from_secs(1);

/// A backend's HTTP/2 connection, shared by the requests to it.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    sender: http2::SendRequest<RequestBody>,
    /// Tells connections apart, for [`super::connections::Connections::forget`].
    id: u64,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub(crate) fn same(&self, other: &Shared) -> bool {
        self.id == other.id
    }
}

/// Opens an HTTP/2 connection to `backend`, its connection driven by a task of its own.
async fn connect(backend: &Backend, timeout: Duration) -> Result<Shared, Failure> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let stream = open(backend, timeout).await?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Failure::Connect(error.to_string()))?;
    let address = backend.address().clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(backend = %address, %error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(Shared {
        sender,
        id: IDS.fetch_add(1, Ordering::Relaxed),
    })
}

/// Which connection an attempt is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// The shared one, or a new one to share.
    Shared,
    /// A new one, to share.
    Fresh,
    /// A new one of its own: the request goes again after h2 ended its connection over a
    /// malformed answer, maybe its own, and a backend that answers it so again ends only this.
    Own,
}

/// The connection `take` asks for (a new one to share is kept unless a reload came meanwhile),
/// and whether it was there already.
async fn connection(
    client: &Client,
    backend: &Backend,
    take: Take,
) -> Result<(Shared, bool), Failure> {
    if take == Take::Shared
        && let Some(shared) = backend.connections().shared()
    {
        return Ok((shared, true));
    }
    let epoch = backend.connections().epoch();
    let started = std::time::Instant::now();
    let shared = connect(backend, client.connect_timeout()).await?;
    backend.stats().connect.observe(started.elapsed());
    if take != Take::Own {
        backend.connections().share(&shared, epoch);
    }
    Ok((shared, false))
}

/// Sends `request` on the backend's HTTP/2 connection and waits for the response head.
pub(super) async fn exchange(
    client: &Client,
    backend: &Backend,
    mut request: Request<RequestBody>,
    mut report: Report,
    timeout: Duration,
) -> Result<Response<Incoming>, Failed> {
    // hyper keeps the request it sends: one whose body is empty or whole is copied first, to go
    // again whole.
    let resend = request
        .body()
        .try_clone()
        .map(|body| (Head::copy_of(&request), body));
    let mut take = Take::Shared;
    loop {
        let resent = take != Take::Shared;
        let (mut shared, reused) = match connection(client, backend, take).await {
            Ok(connection) => connection,
            Err(failure) => {
                return Err(Failed {
                    cause: Cause::Failed(failure),
                    replay: Some(Replay::Request(request, report)),
                });
            }
        };
        let mut reported = None;
        let sending = shared.sender.try_send_request(for_http2(request, backend));
        let mut error = match wait(sending, &mut report, &mut reported, timeout).await {
            Ok(response) => return Ok(response),
            Err(Waited::TimedOut) => {
                backend.connections().forget(&shared);
                return Err(failed(Cause::TimedOut, resend, reported, report).await);
            }
            Err(Waited::Error(error)) => error,
        };
        if let Some(unsent) = error.take_message() {
            if reused {
                // Closed under us before the request was written: a fresh one.
                backend.connections().forget(&shared);
                request = unsent;
                continue;
            }
            let cause = Cause::Failed(Failure::NotSent(error.error().to_string()));
            return Err(Failed {
                cause,
                replay: Some(Replay::Request(unsent, report)),
            });
        }
        if !resent
            && let Some((head, body)) = &resend
            && is_idempotent(&head.method)
            && lost_with_its_connection(error.error(), reused)
            && let Some(body) = body.try_clone()
        {
            backend.connections().forget(&shared);
            request = head.detached().into_request(body);
            take = if ended_by_h2(error.error()) {
                Take::Own
            } else {
                Take::Fresh
            };
            continue;
        }
        let cause = Cause::Failed(classify(error.error()));
        if cause.blames_backend() {
            backend.connections().forget(&shared);
        }
        return Err(failed(cause, resend, reported, report).await);
    }
}

/// A health probe on a connection of its own.
pub(super) async fn probe(
    backend: &Backend,
    request: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, String> {
    let mut shared = connect(backend, timeout).await.map_err(|f| f.to_string())?;
    shared
        .sender
        .send_request(for_http2(request, backend))
        .await
        .map_err(|error| classify(&error).to_string())
}

/// Whether a request failed because its connection went away under it: a stream the backend
/// refused unprocessed, or the connection ended by a `GOAWAY`, or, when it was `reused` (one that
/// breaks as it is opened is the backend's failure), reset, broken or closed before a response
/// began.
///
/// A `GOAWAY` counts whichever side sent it: the backend's, or h2's own when a header block it
/// cannot decode came on another stream (an upper-case field name, say: h2 takes it as an error
/// of the whole connection, where RFC 9113 section 8.1.1 makes it the stream's alone; other
/// malformed heads reset their stream only). h2 cannot say which stream's answer it was, so that
/// stream goes again too, once, on a connection of its own ([`Take::Own`]).
fn lost_with_its_connection(error: &hyper::Error, reused: bool) -> bool {
    if let Some(h2) = innermost::<h2::Error>(error) {
        return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
            || h2.is_go_away()
            || (reused && h2.is_io());
    }
    reused
        && (error.is_incomplete_message()
            || innermost::<std::io::Error>(error).is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                )
            }))
}

/// Whether h2 itself ended the connection (a protocol error in what the backend sent), not the
/// backend.
fn ended_by_h2(error: &hyper::Error) -> bool {
    innermost::<h2::Error>(error).is_some_and(|h2| h2.is_go_away() && !h2.is_remote())
}

/// `request` as HTTP/2 needs it: an absolute target (`:scheme` and `:authority` from the
/// request's `Host`, or the backend's address), version 2. Hop-by-hop fields were removed
/// already; hyper drops any connection-specific one left.
///
/// `Host` becomes `:authority` and is not sent beside it, as Envoy, Go and curl do: nginx
/// answers a request carrying both with 400 ("client sent duplicate host header").
fn for_http2(mut request: Request<RequestBody>, backend: &Backend) -> Request<RequestBody> {
    let host = request.headers_mut().remove(header::HOST);
    let authority = host
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        // A request handed back unsent and sent again has its authority in the target already.
        .or_else(|| request.uri().authority().cloned())
        .unwrap_or_else(|| backend.address().clone());
    let scheme = if backend.tls().is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    // HTTP/2 frames bodies itself.
    request.headers_mut().remove(header::TRANSFER_ENCODING);
    // HTTP/2's header compression keeps values for the connection's life.
    crate::arena::own_all(request.headers_mut());
    request
}

/// Why no response head came back.
#[allow(clippy::large_enum_variant)] // lives on the stack for one match
enum Waited {
    TimedOut,
    Error(TrySendError<Request<RequestBody>>),
}

/// Waits for the response head: unbounded while the body is still being sent (the report has
/// not come), then at most `timeout`.
async fn wait(
    sent: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>>,
    report: &mut Report,
    reported: &mut Option<Leftover>,
    timeout: Duration,
) -> Result<Response<Incoming>, Waited> {
    tokio::pin!(sent);
    if let Some(receiver) = report.as_mut() {
        let first = tokio::select! {
            response = &mut sent => First::Response(response),
            // Sent whole, or dropped unsent: from here the response timeout runs.
            leftover = receiver => First::Reported(leftover.ok()),
        };
        match first {
            First::Response(response) => return response.map_err(Waited::Error),
            First::Reported(leftover) => {
                *reported = leftover;
                *report = None;
            }
        }
    }
    match tokio::time::timeout(timeout, sent).await {
        Ok(response) => response.map_err(Waited::Error),
        Err(_) => Err(Waited::TimedOut),
    }
}

/// What finished first while the body was still being sent.
#[allow(clippy::large_enum_variant)] // lives on the stack for one match
enum First {
    Response(Result<Response<Incoming>, TrySendError<Request<RequestBody>>>),
    Reported(Option<Leftover>),
}

/// A failed attempt whose head was sent, with what to replay: a request with an empty or whole
/// body goes again whole (`resend`, its copy); otherwise the body's report says (waited for if
/// it has not arrived yet).
async fn failed(
    cause: Cause,
    resend: Option<(Head, RequestBody)>,
    reported: Option<Leftover>,
    pending: Report,
) -> Failed {
    if let Some((head, body)) = resend {
        let request = head.into_request(body);
        return Failed {
            cause,
            replay: Some(Replay::Request(request, None)),
        };
    }
    let leftover = match (reported, pending) {
        (Some(leftover), _) => Some(leftover),
        (None, Some(report)) => tokio::time::timeout(LEFTOVER_WAIT, report)
            .await
            .ok()
            .and_then(Result::ok),
        (None, None) => None,
    };
    let replay = leftover.and_then(|leftover| leftover.replay).map(|replay| {
        let (body, report): (RequestBody, Option<oneshot::Receiver<Leftover>>) = replay.into_body();
        Replay::Body(body, report)
    });
    Failed { cause, replay }
}
