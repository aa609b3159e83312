//! One exchange with one backend, whichever protocol it speaks: the interface attempts, retries,
//! timeouts and metrics go through, so none of them knows what is below. An HTTP/1.1 backend is
//! spoken to by Fulcrum's own client (`h1/`), an HTTP/2 one by hyper's (`h2.rs`).
//!
//! Connecting comes first and is bounded by the connect timeout. The response timeout then runs
//! from the moment the request body has been sent whole (a large upload is not a slow backend).
//! What a failed exchange leaves to send again is returned with the failure ([`Replay`]).

use std::future::Future;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio_util::either::Either;

use super::relayed::UpstreamBody;
use super::{Backend, Client, Failure, h1, h2};
use crate::body::{Leftover, RequestBody};

/// A request body's report channel (`None` for an empty body): how an HTTP/2 attempt, which
/// gives its body away, learns what it sent.
pub(crate) type Report = Option<oneshot::Receiver<Leftover>>;

/// What a backend answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A final response, its body to be read from the backend.
    Response(Response<UpstreamBody>),
    /// A `101 Switching Protocols` to an upgrade: the connection is the new protocol's.
    Switched(Response<()>, Box<h1::Connection>),
}

/// Why an attempt produced no response.
#[derive(Debug)]
pub(crate) enum Cause {
    /// No response head within the response timeout.
    TimedOut,
    /// The connection or exchange failed.
    Failed(Failure),
}

impl Cause {
    /// Whether the request certainly never reached the backend.
    pub(crate) fn never_sent(&self) -> bool {
        match self {
            Cause::TimedOut => false,
            Cause::Failed(failure) => failure.never_sent(),
        }
    }

    /// Whether the backend is to blame.
    pub(crate) fn blames_backend(&self) -> bool {
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
pub(crate) enum Replay {
    /// The whole request.
    Request(Request<RequestBody>, Report),
    /// The body only (hyper kept the head): the head must come from a kept copy.
    Body(RequestBody, Report),
}

/// A failed attempt.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) cause: Cause,
    /// What can be sent again, when anything can.
    pub(crate) replay: Option<Replay>,
}

/// Sends `request` to `backend` and waits for its response head. An `upgrade` request (its
/// `Upgrade` field put back) may be answered with a switch; one to an HTTP/2 backend is the
/// caller's to refuse before.
///
/// The protocol is chosen before the future is made, so that the request goes straight into
/// the one client's future (see `Proxy::handle`).
pub(crate) fn exchange<'a>(
    client: &'a Client,
    backend: &'a Backend,
    request: Request<RequestBody>,
    report: Report,
    upgrade: bool,
    timeout: Duration,
) -> impl Future<Output = Result<Answer, Failed>> + 'a {
    if backend.http2() {
        // Boxed: hyper's futures are large, and HTTP/1.1's future should not carry their size.
        let exchanging = Box::pin(h2::exchange(client, backend, request, report, timeout));
        return Either::Left(async move {
            Ok(Answer::Response(exchanging.await?.map(UpstreamBody::H2)))
        });
    }
    Either::Right(h1::exchange(
        client, backend, request, report, upgrade, timeout,
    ))
}

/// Most of a probe's response body read before the connection is closed.
const PROBE_BODY: usize = 64 * 1024;

/// A health probe: `GET path` on a new connection, closed after it; the status, or why there is
/// none within `timeout`.
///
/// The status is the verdict, as HAProxy's `httpchk` takes it. The body is read to its end
/// within what is left of the timeout, so that the backend sees its answer taken, but at most
/// [`PROBE_BODY`] of it, and however it ends: a backend that answers with a large or endless
/// body, or one delimited by a close it never makes, is not failed for it.
pub(crate) async fn probe(
    backend: &Backend,
    path: &str,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let request = Request::get(path)
        .header(header::HOST, backend.address().as_str())
        .header(header::USER_AGENT, "fulcrum-health-check")
        .header(header::CONNECTION, "close")
        .body(RequestBody::empty())
        .map_err(|err| format!("cannot build the probe: {err}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let answered = async {
        if backend.http2() {
            let response = h2::probe(backend, request, timeout).await?;
            Ok::<_, String>(response.map(UpstreamBody::H2))
        } else {
            let response = h1::probe(backend, request, timeout).await?;
            Ok(response.map(UpstreamBody::H1))
        }
    };
    let response = tokio::time::timeout_at(deadline, answered)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    let status = response.status();
    let _ = tokio::time::timeout_at(deadline, read_some(response.into_body(), PROBE_BODY)).await;
    Ok(status)
}

/// Reads `body` to its end, a failure, or `limit` bytes, whichever comes first.
async fn read_some(mut body: UpstreamBody, limit: usize) {
    let mut read = 0;
    while read < limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Buf::remaining),
            Some(Err(_)) | None => return,
        }
    }
}
