//! One request on a client connection, from its parsed head to the last byte of its response:
//! its body made (none; whole, when it came with its head; else read on demand, `reader.rs`),
//! the proxy called, the client watched for leaving, the response written (`write.rs`) while the
//! body is still read as the request asks, and what the connection does next.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version, header};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::date::LEN as DATE_LEN;
use super::input::Input;
use super::reader::{BodyReader, Standing};
use super::write::{WriteError, Writer};
use crate::arena;
use crate::body::ClientBody;
use crate::body::feed;
use crate::body::upgrade::{OnUpgrade, Promise};
use crate::http1::BodyLength;
use crate::http1::encode::{self, Asked, Known};
use crate::http1::fields::lists;
use crate::http1::head::RequestHead;
use crate::pause::WriteWait;

/// What the connection does after a request.
#[derive(Debug)]
pub(crate) enum Next {
    /// Reads the next request.
    KeepAlive,
    /// Closes; `linger` when the client may still be sending (its body was not read whole).
    Close { linger: bool },
    /// Gives itself to the upgrade's tunnel, as promised.
    Switch(Promise),
    /// Resets the connection: its response was cut short where only the close ends the body
    /// (an HTTP/1.0 client's, without a length), so a clean close would pass for its end.
    Reset,
}

/// How a request is served on its connection.
#[derive(Clone, Copy)]
pub(crate) struct Serving<'a> {
    /// Whether the server is draining: the connection closes after this request. Asked when the
    /// response is written, for a drain may start while it is awaited.
    pub(crate) draining: &'a (dyn Fn() -> bool + Sync),
    /// The `Date` value, asked for when the response head is written: a response's date is
    /// when it is sent, not when its request came (RFC 9110 section 6.6.1).
    pub(crate) date: fn() -> [u8; DATE_LEN],
    /// How long a response may wait on a client that reads none of it (`client_idle`).
    pub(crate) send_limit: Duration,
    /// How long the rest of a body the answer did not need may take to come and be dropped
    /// (`request_body_idle`): then the connection closes.
    pub(crate) discard_limit: Duration,
}

/// Serves the request whose head was just taken from `input`: `call` makes its response.
///
/// The request is made and handed to `call` before the future is (see `Proxy::handle`).
pub(crate) fn serve<'a, S, F, Fut, B>(
    input: &'a mut Input<S>,
    head: RequestHead,
    call: F,
    serving: Serving<'a>,
) -> impl Future<Output = Next> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<B>> + 'a,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let RequestHead {
        mut parts,
        body: length,
        keep_alive,
        expect_continue,
        trailers,
        ..
    } = head;
    let mut asked = Asked {
        version: parts.version,
        head: parts.method == Method::HEAD,
        keep_alive,
        trailers,
    };
    let promise = wants_upgrade(&parts).then(|| {
        let (promise, upgrade) = OnUpgrade::pair();
        parts.extensions.insert(upgrade);
        promise
    });
    let (body, mut reader) = request_body(input, length, expect_continue);
    let answering = call(Request::from_parts(parts, body));
    async move {
        let mut answering = pin!(answering);
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = answering.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            let reading = match &mut reader {
                Some(reader) => reader.poll(input, cx) == Standing::Waiting,
                None => false,
            };
            // With no body to read, the client's stream is watched: a client that leaves drops its
            // request (logged 499, as nginx does); bytes of a pipelined request are kept for after
            // this one.
            if !reading && input.is_empty() {
                match input.poll_fill(cx) {
                    Poll::Ready(Ok(true)) | Poll::Pending => {}
                    Poll::Ready(Ok(false) | Err(_)) => return Poll::Ready(None),
                }
            }
            Poll::Pending
        })
        .await;
        let Some(response) = response else {
            return Next::Close { linger: false };
        };
        // A body refused as too large is not read on: the connection closes after the 413.
        asked.keep_alive &= !(serving.draining)()
            && response.status() != StatusCode::PAYLOAD_TOO_LARGE
            && body_done(&reader);
        let (parts, mut body) = response.into_parts();
        let known = if body.is_end_stream() {
            Known::Exactly(0)
        } else {
            body.size_hint()
                .exact()
                .map_or(Known::Unknown, Known::Exactly)
        };
        let mut head = arena::buffer(256 + 32 * parts.headers.len());
        let (framing, keep_alive) =
            encode::response(&parts, known, &asked, &(serving.date)(), &mut head);
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        arena::recycle(parts.headers);
        let mut writer = Writer::new(head, framing);
        let mut writes = WriteWait::new(serving.send_limit);
        let written = poll_fn(|cx| {
            if let Some(reader) = &mut reader {
                reader.poll(input, cx);
            }
            writer.poll(&mut input.stream, &mut body, &mut writes, cx)
        })
        .await;
        let cut_unseen = matches!(written, Err(WriteError::Body(_))) && writer.ends_at_close();
        // The body, and what it holds (the backend connection, the access log entry), ends here.
        drop(body);
        writer.recycle();
        match &written {
            // A client that stopped reading is the operator's to know of, as nginx's "client
            // timed out"; one that left is the usual end of a connection.
            Err(error @ WriteError::Client(cause)) if cause.kind() == io::ErrorKind::TimedOut => {
                info!(%error, "response abandoned: the client stopped reading it");
            }
            Err(error) => debug!(%error, "writing a response"),
            Ok(()) => {}
        }
        if written.is_ok()
            && keep_alive
            && let Some(reader) = &mut reader
            && reader.is_abandoned()
        {
            let discarding = poll_fn(|cx| reader.poll_discard(input, cx));
            if tokio::time::timeout(serving.discard_limit, discarding)
                .await
                .is_err()
            {
                debug!("the rest of a request body the answer did not need did not come");
            }
        }
        if cut_unseen {
            return Next::Reset;
        }
        match (written, promise) {
            (Ok(()), Some(promise)) if switching => Next::Switch(promise),
            (Ok(()), _) if keep_alive && reader.as_ref().is_none_or(BodyReader::is_complete) => {
                Next::KeepAlive
            }
            _ => Next::Close {
                linger: reader.as_ref().is_some_and(|reader| !reader.is_complete()),
            },
        }
    }
}

/// The request's body: none, whole when it all came with its head, else read on demand.
fn request_body<S>(
    input: &mut Input<S>,
    length: BodyLength,
    expect_continue: bool,
) -> (ClientBody, Option<BodyReader>) {
    let declared = match length {
        BodyLength::Empty | BodyLength::UntilClose => return (ClientBody::Empty, None),
        BodyLength::Length(n) => {
            if let Some(unread) = &mut input.unread
                && unread.len() as u64 >= n
            {
                let whole = unread.split_to(n as usize);
                input.settle();
                return (ClientBody::Full(Some(whole)), None);
            }
            Some(n)
        }
        BodyLength::Chunked => None,
    };
    let (feed, fed) = feed::channel(declared);
    // A client whose body has begun to come is not waiting for `100 Continue` (RFC 9110 section
    // 10.1.1 lets the server omit it then), as one whose whole body came is not.
    let waits = expect_continue && input.is_empty();
    (
        ClientBody::Fed(fed),
        Some(BodyReader::new(feed, declared, waits)),
    )
}

/// Whether the request's body is done with, or will be, so that the connection can read the
/// next request: read to its end, or let go of by the request and small enough to read and drop
/// once the response is written.
fn body_done(reader: &Option<BodyReader>) -> bool {
    match reader {
        None => true,
        Some(reader) if reader.is_complete() => true,
        Some(reader) if reader.is_abandoned() => reader.can_discard(),
        Some(_) => false,
    }
}

/// Whether the request asks to switch protocols (RFC 9110 section 7.8).
fn wants_upgrade(parts: &http::request::Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && lists(parts.headers.get_all(header::CONNECTION), b"upgrade")
}
