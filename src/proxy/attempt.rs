//! One attempt: the request sent to one backend on a ready connection, the wait for its
//! response head, and, when it fails, what is left to send the same request elsewhere.
//!
//! Connecting comes first and is bounded by the connect timeout. The response timeout then runs
//! from the moment the request body has been sent whole (a large upload is not a slow backend);
//! for a request without a body, from the moment it is handed to the connection.
//!
//! A request that hyper hands back unsent (the connection closed before it could be written)
//! goes on a fresh connection at once when the closed one came from the pool: a stale keep-alive
//! connection never surfaces as an error.
//!
//! A request without a body to a plain-HTTP/1.1 backend is exchanged on a plain connection
//! (`upstream/plain.rs`) by the request's own task, with the same rules, and one more: a pooled
//! connection that closes without a byte of response (the backend closed it as the request went
//! out) sends an idempotent request again on a fresh connection.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::{Body, Incoming};
use hyper::client::conn::TrySendError;
use tokio::sync::oneshot;

use crate::arena;
use crate::body::{Leftover, RequestBody};
use crate::upstream::{
    Backend, Client, Failure, PlainError, Sender, UpstreamBody, classify, for_http2, innermost,
};

/// How long to wait for a dropped request body to report what it sent. It reports as it is
/// dropped, which hyper does on failure; this only bounds a surprise.
const LEFTOVER_WAIT: Duration = Duration::from_secs(1);

/// A request body's report channel (`None` for an empty body).
pub type Report = Option<oneshot::Receiver<Leftover>>;

/// The rewritten request head, kept to build the request again for a retry.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// Origin-form: path and query only.
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Head {
    /// A copy of `request`'s head that owns its bytes, as [`Head::detached`].
    pub fn copy_of<B>(request: &Request<B>) -> Head {
        detach(request.method(), request.uri(), request.headers())
    }

    /// A copy that owns its bytes, in one allocation for all values. A plain clone would share
    /// the values' and target's bytes with hyper's connection read buffer, keeping that buffer
    /// shared for as long as the request lives.
    pub fn detached(&self) -> Head {
        detach(&self.method, &self.uri, &self.headers)
    }

    /// The HTTP/1.1 request for this head and `body`.
    pub fn into_request(self, body: RequestBody) -> Request<RequestBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A copy of a head that owns its bytes: every value copied into one allocation, each header a
/// slice of it.
fn detach(method: &Method, uri: &Uri, headers: &HeaderMap) -> Head {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut buffer = BytesMut::with_capacity(total);
    for value in headers.values() {
        buffer.extend_from_slice(value.as_bytes());
    }
    let buffer = buffer.freeze();
    let mut copied = HeaderMap::with_capacity(headers.len());
    let mut offset = 0;
    for (name, value) in headers {
        let bytes = buffer.slice(offset..offset + value.len());
        offset += value.len();
        let mut copy =
            HeaderValue::from_maybe_shared(bytes).expect("a copy of a valid header value is valid");
        copy.set_sensitive(value.is_sensitive());
        copied.append(name.clone(), copy);
    }
    let uri = uri
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str().to_owned()).ok())
        .unwrap_or_else(|| uri.clone());
    Head {
        method: method.clone(),
        uri,
        headers: copied,
    }
}

/// Methods that may be sent twice without a different effect (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Why an attempt produced no response.
#[derive(Debug)]
pub enum Cause {
    /// No response head within the response timeout.
    TimedOut,
    /// The connection or exchange failed.
    Failed(Failure),
}

impl Cause {
    /// Whether the request certainly never reached the backend.
    pub fn never_sent(&self) -> bool {
        match self {
            Cause::TimedOut => false,
            Cause::Failed(failure) => failure.never_sent(),
        }
    }

    /// Whether the backend is to blame.
    pub fn blames_backend(&self) -> bool {
        match self {
            Cause::TimedOut => true,
            Cause::Failed(failure) => failure.blames_backend(),
        }
    }
}

/// What a failed attempt leaves to send again.
// Short-lived and moved a few times on the failure path: not worth an allocation to shrink.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Replay {
    /// The whole request, never sent.
    Request(Request<RequestBody>, Report),
    /// The body only (the head was sent): the head must come from a kept copy.
    Body(RequestBody, Report),
}

/// A failed attempt.
#[derive(Debug)]
pub struct Failed {
    pub cause: Cause,
    /// What can be sent again, when anything can.
    pub replay: Option<Replay>,
}

/// Sends `request` to `backend` and waits for its response head; on success, also returns
/// hyper's connection when it was used, to be recycled once the response body has been relayed.
/// An `upgrade` request (its `Upgrade` header put back) goes through hyper, which hands over
/// the upgraded connection.
pub async fn exchange(
    client: &Client,
    backend: &Backend,
    request: Request<RequestBody>,
    report: Report,
    upgrade: bool,
    timeout: Duration,
) -> Result<(Response<UpstreamBody>, Option<(Sender, u64)>), Failed> {
    if report.is_none() && !upgrade && goes_plain(backend, &request) {
        // Awaited through a pin: by value, the future would be copied once more.
        let response = pin!(exchange_plain(client, backend, request, timeout)).await?;
        return Ok((response.map(UpstreamBody::Plain), None));
    }
    // Boxed: hyper's futures are large, and the plain path's future should not carry their size.
    let hyper = Box::pin(exchange_hyper(client, backend, request, report, timeout));
    let (response, sender) = hyper.await?;
    Ok((response.map(UpstreamBody::Hyper), Some(sender)))
}

/// Whether `request`, not an upgrade, can go on a plain connection: the backend speaks HTTP/1.1
/// without TLS.
fn goes_plain(backend: &Backend, request: &Request<RequestBody>) -> bool {
    backend.is_plain() && request.method() != Method::CONNECT
}

/// [`exchange`] for a request without a body, on a plain connection.
async fn exchange_plain(
    client: &Client,
    backend: &Backend,
    request: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<crate::upstream::PlainBody>, Failed> {
    // Whether the request went again on a fresh connection after its pooled one was lost.
    let mut resent = false;
    loop {
        let connection = if resent {
            client
                .new_plain_connection(backend)
                .await
                .map(|c| (c, false))
        } else {
            client.plain_connection(backend).await
        };
        let (connection, reused) = match connection {
            Ok(connection) => connection,
            Err(failure) => return Err(not_sent(failure, request)),
        };
        let error = match connection.exchange(&request, timeout).await {
            Ok(response) => {
                // Sent whole: its head is done with, and its map serves the next message.
                arena::recycle(request.into_parts().0.headers);
                return Ok(response);
            }
            Err((error, _connection)) => error,
        };
        match error {
            // A pooled connection closed under us before the request was written: a fresh one.
            PlainError::Write(_) if reused => continue,
            PlainError::Write(error) => {
                let failure = Failure::NotSent(crate::upstream::describe_io(&error));
                return Err(not_sent(failure, request));
            }
            // A pooled connection the backend closed as the request went out (the keep-alive
            // race): an idempotent request goes again, once, on a new one, as Go's client does.
            PlainError::ClosedEarly if reused && !resent && is_idempotent(request.method()) => {
                resent = true;
                continue;
            }
            PlainError::ClosedEarly => {
                let reason = "connection closed before message completed".to_owned();
                return Err(sent(Cause::Failed(Failure::Upstream(reason)), request));
            }
            PlainError::TimedOut => return Err(sent(Cause::TimedOut, request)),
            PlainError::Read(reason) => {
                return Err(sent(Cause::Failed(Failure::Upstream(reason)), request));
            }
        }
    }
}

/// A failed attempt that never reached the backend: the whole request goes again.
fn not_sent(failure: Failure, request: Request<RequestBody>) -> Failed {
    Failed {
        cause: Cause::Failed(failure),
        replay: Some(Replay::Request(request, None)),
    }
}

/// A failed attempt whose request (without a body) was sent: it is whole, and can go again if
/// the retry rules allow.
fn sent(cause: Cause, request: Request<RequestBody>) -> Failed {
    Failed {
        cause,
        replay: Some(Replay::Request(request, None)),
    }
}

/// [`exchange`] on a hyper connection.
async fn exchange_hyper(
    client: &Client,
    backend: &Backend,
    mut request: Request<RequestBody>,
    mut report: Report,
    timeout: Duration,
) -> Result<(Response<Incoming>, (Sender, u64)), Failed> {
    let has_body = report.is_some();
    // hyper keeps the request it sends: one without a body is copied first, to go again whole.
    let resend = (!has_body).then(|| Head::copy_of(&request));
    // Whether the request went again on a new connection after its pooled one was lost.
    let mut resent = false;
    loop {
        // Read before the connection is taken or made: a reload that changes the backend's
        // settings meanwhile keeps it from going back to the pool.
        let epoch = backend.connections().epoch();
        let connection = if resent {
            client
                .new_connection(backend, epoch)
                .await
                .map(|c| (c, false))
        } else {
            client.connection(backend, epoch).await
        };
        let (mut sender, reused) = match connection {
            Ok(connection) => connection,
            Err(failure) => {
                return Err(Failed {
                    cause: Cause::Failed(failure),
                    replay: Some(Replay::Request(request, report)),
                });
            }
        };
        let mut reported = None;
        let outcome = match &mut sender {
            Sender::Http1(http1) => {
                if has_body {
                    say_chunked_if_unframed(&mut request);
                }
                let sending = http1.try_send_request(request);
                wait(sending, &mut report, &mut reported, timeout).await
            }
            Sender::Http2(http2) => {
                let sending = http2.try_send_request(for_http2(request, backend));
                wait(sending, &mut report, &mut reported, timeout).await
            }
        };
        let mut error = match outcome {
            Ok(response) => return Ok((response, (sender, epoch))),
            Err(Waited::TimedOut) => {
                forget_if_shared(backend, &sender);
                return Err(failed(Cause::TimedOut, resend, reported, report).await);
            }
            Err(Waited::Error(error)) => error,
        };
        match error.take_message() {
            // A pooled connection closed under us before the request was written: a fresh one.
            Some(unsent) if reused => request = unsent,
            Some(unsent) => {
                let cause = Cause::Failed(Failure::NotSent(error.error().to_string()));
                return Err(Failed {
                    cause,
                    replay: Some(Replay::Request(unsent, report)),
                });
            }
            None => {
                if reused
                    && !resent
                    && let Some(head) = &resend
                    && is_idempotent(&head.method)
                    && lost_with_its_connection(error.error())
                {
                    // A pooled connection that is gone, or going (a GOAWAY), took the request
                    // with it unanswered: once more, on a new connection, as Go's and Envoy's
                    // clients do.
                    forget_if_shared(backend, &sender);
                    request = head.detached().into_request(RequestBody::empty());
                    resent = true;
                    continue;
                }
                let cause = Cause::Failed(classify(error.error()));
                if cause.blames_backend() {
                    forget_if_shared(backend, &sender);
                }
                return Err(failed(cause, resend, reported, report).await);
            }
        }
    }
}

/// Whether a request failed because its connection went away under it, not because of
/// anything the backend answered: a stream the backend refused unprocessed (`REFUSED_STREAM`,
/// or above a `GOAWAY`'s last stream: RFC 9113 section 8.7 says it may go again), or a
/// connection reset, broken or closed before a response began (the keep-alive race).
fn lost_with_its_connection(error: &hyper::Error) -> bool {
    if let Some(h2) = innermost::<h2::Error>(error) {
        return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
            || (h2.is_go_away() && h2.is_remote())
            || h2.is_io();
    }
    error.is_incomplete_message()
        || innermost::<std::io::Error>(error).is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}

/// hyper's HTTP/1.1 client sends a `GET` or `HEAD` whose body has no length as one without a
/// body, unless the head says `Transfer-Encoding: chunked`; the client's (removed as hop-by-hop)
/// is said again, or the body of a chunked `GET` (search APIs send them) would be lost.
fn say_chunked_if_unframed(request: &mut Request<RequestBody>) {
    let unframed = matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.headers().contains_key(header::CONTENT_LENGTH)
        && request.body().size_hint().exact().is_none();
    if unframed {
        request.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// A shared (HTTP/2) connection that timed out or failed is not offered to the next request:
/// it may be stuck with the backend still holding the socket open.
fn forget_if_shared(backend: &Backend, sender: &Sender) {
    if sender.is_shared() {
        backend.connections().forget_shared();
    }
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

/// A failed attempt whose head was sent, with what to replay: a request without a body goes
/// again whole (`resend`, its copy); otherwise the body's report says (waited for if it has
/// not arrived yet).
async fn failed(
    cause: Cause,
    resend: Option<Head>,
    reported: Option<Leftover>,
    pending: Report,
) -> Failed {
    if let Some(head) = resend {
        return sent(cause, head.into_request(RequestBody::empty()));
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
        let (body, report) = replay.into_body();
        Replay::Body(body, report)
    });
    Failed { cause, replay }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_head_is_equal_and_owns_its_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.example.com"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.1"),
        );
        headers.append("via", HeaderValue::from_static("1.0 edge"));
        headers.append("via", HeaderValue::from_static("1.1 fulcrum"));
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        let head = Head {
            method: Method::PUT,
            uri: "/a%2Fb?x=1".parse().unwrap(),
            headers,
        };
        let copy = head.detached();
        assert_eq!(copy.method, Method::PUT);
        assert_eq!(copy.uri, head.uri);
        assert_eq!(copy.headers, head.headers);
        assert!(copy.headers["authorization"].is_sensitive());
        let via: Vec<_> = copy.headers.get_all("via").iter().collect();
        assert_eq!(
            via,
            ["1.0 edge", "1.1 fulcrum"],
            "repeated headers keep their order"
        );
    }
}
