//! One attempt: the request sent to one backend, the wait for its response head, and, when it
//! fails, what is left to send the same request elsewhere.
//!
//! The response timeout runs from the moment the request body has been sent whole (a large
//! upload is not a slow backend); until then the wait is unbounded here, and the client's own
//! pace bounds it. The request head is kept by the caller across attempts.

use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::body::{Leftover, RequestBody};
use crate::upstream::{Client, Failure, classify};

/// How long to wait for a dropped request body to report what it sent. It reports as it is
/// dropped, which the client does on failure; this only bounds a surprise.
const LEFTOVER_WAIT: Duration = Duration::from_secs(1);

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

/// A failed attempt.
#[derive(Debug)]
pub struct Failed {
    pub cause: Cause,
    /// The same body, ready to send again, when that is possible.
    pub replay: Option<(RequestBody, Option<oneshot::Receiver<Leftover>>)>,
}

/// The request for one attempt: `head` (already rewritten) aimed at `backend`. The head's
/// headers are cloned, except on the `last` attempt, which takes them.
pub fn request_for(
    head: &mut Parts,
    backend: &Authority,
    body: RequestBody,
    last: bool,
) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = upstream_uri(&head.uri, backend);
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = if last {
        std::mem::take(&mut head.headers)
    } else {
        head.headers.clone()
    };
    request
}

/// `http://backend/path?query`, the path and query kept byte for byte.
pub fn upstream_uri(original: &Uri, backend: &Authority) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.clone());
    parts.path_and_query = Some(
        original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).expect("scheme, authority and an origin-form path make a valid URI")
}

/// Sends `request` and waits for its response head. `leftover` is the body's report channel: the
/// body reports when it is all sent, or is dropped, which hyper-util only does once a connection
/// is ready. So the response timeout covers neither connecting (the connect timeout does) nor
/// sending the body.
pub async fn exchange(
    client: &Client,
    request: Request<RequestBody>,
    leftover: Option<oneshot::Receiver<Leftover>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failed> {
    let sent = client.request(request);
    tokio::pin!(sent);
    let mut pending = leftover;
    let mut reported = None;
    if let Some(report) = pending.as_mut() {
        let first = tokio::select! {
            response = &mut sent => First::Response(response),
            // Sent whole, or dropped unsent: from here the response timeout runs.
            leftover = report => First::Reported(leftover.ok()),
        };
        match first {
            First::Response(Ok(response)) => return Ok(response),
            First::Response(Err(error)) => {
                let cause = Cause::Failed(classify(&error));
                return Err(failed(cause, None, pending).await);
            }
            First::Reported(leftover) => {
                reported = leftover;
                pending = None;
            }
        }
    }
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => {
            let cause = Cause::Failed(classify(&error));
            Err(failed(cause, reported, pending).await)
        }
        Err(_) => Err(failed(Cause::TimedOut, reported, pending).await),
    }
}

/// What finished first while the body was still being sent.
enum First {
    Response(Result<Response<Incoming>, hyper_util::client::legacy::Error>),
    Reported(Option<Leftover>),
}

/// A failed attempt, with the body to replay if there is one, as the body's report says (waited
/// for if it has not arrived yet).
async fn failed(
    cause: Cause,
    reported: Option<Leftover>,
    pending: Option<oneshot::Receiver<Leftover>>,
) -> Failed {
    let leftover = match (reported, pending) {
        (Some(leftover), _) => Some(leftover),
        (None, Some(report)) => tokio::time::timeout(LEFTOVER_WAIT, report)
            .await
            .ok()
            .and_then(Result::ok),
        (None, None) => None,
    };
    Failed {
        cause,
        replay: leftover
            .and_then(|leftover| leftover.replay)
            .map(|replay| replay.into_body()),
    }
}
