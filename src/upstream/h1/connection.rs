//! One HTTP/1.1 connection to a backend and one exchange on it: the request head and body
//! written, the response head read (interim responses skipped), all by the task that serves the
//! request, on the codec (`http1/`).
//!
//! The head and whatever of the body is ready at once leave in one write. The rest of the body
//! is sent as it comes, while the response is already being read. A backend may answer before
//! it has the whole body. An error (a 413, a 401) says it wants no more: the rest is not sent.
//! A success (a streaming or echoing endpoint) gets the rest while its own body is read (full
//! duplex, as nginx and HAProxy send it, [`Upload`]). Either way the connection is reused only
//! if the body was sent whole before the response ended.
//!
//! The response timeout runs from the moment the body has been sent whole; before that, it
//! bounds how long the backend may take none of the body (nginx's `proxy_send_timeout`).

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::body::ResponseBody;
use crate::arena;
use crate::body::BoxError;
use crate::clock;
use crate::http1::BodyLength;
use crate::http1::chunked;
use crate::http1::encode;
use crate::http1::head::{self, Limits, Parsed, ResponseHead};
use crate::upstream::describe_io;
use crate::upstream::stream::Stream;

/// Bytes asked for by each read; a long body's reads ask for up to [`BODY_READ_SIZE`].
const READ_SIZE: usize = 16 * 1024;
const BODY_READ_SIZE: usize = 64 * 1024;
/// Request bytes gathered before they are written.
const FLUSH_AT: usize = 64 * 1024;

/// Largest response head accepted from a backend (a larger one is a 502). nginx's
/// `proxy_buffer_size` is 4 or 8 KiB; this leaves room for big cookies.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most fields accepted in a response head (more is a 502). hyper's 100, HAProxy's 101 and
/// Envoy's 100 turn a page setting a hundred cookies into a 502; nginx counts only bytes.
pub(crate) const MAX_RESPONSE_FIELDS: usize = 256;

const RESPONSE_LIMITS: Limits = Limits {
    max_head: MAX_RESPONSE_HEAD,
    max_fields: MAX_RESPONSE_FIELDS,
    max_line: MAX_RESPONSE_HEAD,
};

/// An HTTP/1.1 connection to a backend, idle between exchanges.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(super) stream: Stream,
    /// Bytes read from the backend and not yet consumed.
    pub(super) input: BytesMut,
    /// Bytes to write; kept to reuse its allocation.
    output: Vec<u8>,
    /// The response timeout, kept from one exchange to the next: moving a registered timer's
    /// deadline is one atomic operation, where a timer per exchange goes into tokio's timer
    /// wheel and out again, under its lock.
    timer: Option<Pin<Box<Sleep>>>,
    /// The backend's connections' epoch it was made in: one from before a reload changed how
    /// the backend is reached is not taken back (`connections.rs`).
    epoch: u64,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Writing the request's first bytes failed: the backend received none of it.
    NotSent(io::Error),
    /// The connection closed (or was reset) before any byte of a response: on a pooled
    /// connection, the backend closing it as the request went out (the keep-alive race).
    ClosedEarly,
    /// The response could not be read, or is not HTTP/1; the reason, for the client and log.
    Response(String),
    /// No response head within the response timeout after the request was sent whole, or the
    /// backend took none of the request for as long before.
    TimedOut,
    /// The request's body failed (the client's side: its fault, or its limits).
    Body(BoxError),
}

/// A response head, and what follows it.
#[derive(Debug)]
pub(crate) enum Exchanged {
    /// A final response; its body reads from the connection.
    Response(response::Parts, ResponseBody),
    /// A `101 Switching Protocols` to an upgrade request: the connection is the new
    /// protocol's, with the bytes the backend already sent after the head.
    Switched(response::Parts, Box<Connection>),
}

impl Connection {
    /// A connection on `stream`, made in `epoch`. Boxed: it moves between the idle stack and
    /// response bodies, which stay small.
    pub(crate) fn new(stream: Stream, epoch: u64) -> Box<Connection> {
        Box::new(Connection {
            stream,
            input: BytesMut::new(),
            output: Vec::new(),
            timer: None,
            epoch,
        })
    }

    /// The epoch it was made in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether it can carry another exchange: nothing unread, and the backend neither closed it
    /// nor sent anything while it was idle.
    pub(crate) fn is_reusable(&self) -> bool {
        self.input.is_empty() && self.stream.is_quiet()
    }

    /// Sends `request` and reads the response head, waiting at most `timeout` for it once the
    /// request is sent whole. A `101` is taken only if `upgrade` asked for one (it is otherwise
    /// an error: nothing after it could be read as HTTP).
    pub(crate) async fn exchange<B>(
        mut self: Box<Self>,
        request: &mut Request<B>,
        upgrade: bool,
        timeout: Duration,
    ) -> Result<Exchanged, ExchangeError>
    where
        B: Body<Data = Bytes> + Unpin + Default + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut sending = Sending::new(request.body());
        self.output.clear();
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        encode::request(
            request.method(),
            target,
            request.headers(),
            sending.framing,
            &mut self.output,
        );
        let method = request.method().clone();
        let body = request.body_mut();
        // What of the body is ready now goes with the head, in one write.
        poll_fn(|cx| {
            sending.gather(body, cx, &mut self.output);
            Poll::Ready(())
        })
        .await;
        let head = self
            .finish_and_read(body, &mut sending, &method, upgrade, timeout)
            .await?;
        let ResponseHead {
            parts,
            body: length,
            keep_alive,
            ..
        } = head;
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Exchanged::Switched(parts, self));
        }
        let pending = self.output.len();
        let sent_whole = sending.is_sent(pending);
        let upload = if !sent_whole && sending.goes_on() && takes_the_rest(parts.status) {
            let body = std::mem::take(body).map_err(Into::into);
            Some(Box::new(Upload {
                body: UnsyncBoxBody::new(body),
                sending,
            }))
        } else {
            self.output.clear();
            None
        };
        // A body not sent whole, nor being sent, leaves the connection unusable.
        let keep_alive = keep_alive && (sent_whole || upload.is_some());
        let body = ResponseBody::new(self, length, keep_alive, upload);
        Ok(Exchanged::Response(parts, body))
    }

    /// Makes what progress it can on the rest of a body sent while the response is read:
    /// `Ready(Ok(true))` once it has been sent whole, `Ready(Ok(false))` once given up on (the
    /// backend takes no more), `Ready(Err)` when the body failed.
    pub(super) fn poll_upload(
        &mut self,
        upload: &mut Upload,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, ExchangeError>> {
        loop {
            let pending = self.output.len();
            if upload.sending.is_over(pending) {
                return Poll::Ready(Ok(upload.sending.is_sent(pending)));
            }
            ready!(self.poll_send(&mut upload.body, &mut upload.sending, cx))?;
        }
    }

    /// Sends the head and the body while reading the response, until the final head.
    async fn finish_and_read<B>(
        &mut self,
        body: &mut B,
        sending: &mut Sending,
        method: &Method,
        upgrade: bool,
        timeout: Duration,
    ) -> Result<ResponseHead, ExchangeError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut timer = self.timer.take();
        let mut armed = false;
        let mut received = false;
        let outcome = poll_fn(|cx| {
            loop {
                // The body, as it comes, while the backend has not answered.
                if !sending.is_over(self.output.len()) {
                    match self.poll_send(body, sending, cx) {
                        Poll::Ready(Ok(())) => {
                            // Progress: a stall is timed from now.
                            armed = false;
                            continue;
                        }
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {}
                    }
                }
                // The backend's turn: the request has left, or the backend takes none of it. A
                // client slow to send its body is timed by its own timeout, not this one.
                if sending.waits_on_backend(self.output.len()) {
                    let timer = arm(&mut timer, &mut armed, timeout);
                    // Outside tokio's budget, as `tokio::time::timeout` polls: a backend that
                    // floods interim responses uses the budget up on every poll.
                    if pin!(tokio::task::unconstrained(timer.as_mut()))
                        .poll(cx)
                        .is_ready()
                    {
                        return Poll::Ready(Err(ExchangeError::TimedOut));
                    }
                }
                match self.poll_head(method, upgrade, &mut received, cx) {
                    Poll::Ready(Ok(Some(parts))) => return Poll::Ready(Ok(parts)),
                    Poll::Ready(Ok(None)) => continue,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        // Nobody is woken if the deadline passes while the connection sits idle.
        if let Some(timer) = &mut timer {
            let _ = timer.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
        self.timer = timer;
        outcome
    }

    /// Makes progress sending the body: `Ready(Ok)` when something moved, `Pending` when it
    /// waits (on the body or the socket), or has nothing left to do.
    fn poll_send<B>(
        &mut self,
        body: &mut B,
        sending: &mut Sending,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        if sending.written < self.output.len() {
            let wrote =
                ready!(Pin::new(&mut self.stream).poll_write(cx, &self.output[sending.written..]));
            match wrote {
                Ok(n) if n > 0 => {
                    sending.written += n;
                    sending.began = true;
                }
                Err(error) if !sending.began => {
                    return Poll::Ready(Err(ExchangeError::NotSent(error)));
                }
                Ok(_) if !sending.began => {
                    return Poll::Ready(Err(ExchangeError::NotSent(
                        io::ErrorKind::WriteZero.into(),
                    )));
                }
                // The backend closed or reset: what it answered, if anything, is still read
                // (it may have answered early, as a backend that refuses a body does, or to
                // the part of the head it got).
                _ => {
                    sending.stop();
                    self.output.clear();
                    return Poll::Ready(Ok(()));
                }
            }
            if sending.written == self.output.len() {
                self.output.clear();
                sending.written = 0;
                sending.flushed = false;
            }
            return Poll::Ready(Ok(()));
        }
        // A body that failed fails the exchange once what came before the failure is written:
        // the backend gets the same bytes however the client's arrived.
        if let Some(error) = sending.failed.take() {
            return Poll::Ready(Err(error));
        }
        if !sending.done {
            let before = self.output.len();
            sending.gather(body, cx, &mut self.output);
            if self.output.len() > before || sending.done || sending.failed.is_some() {
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        // All written: TLS may still hold what it encrypted.
        if ready!(Pin::new(&mut self.stream).poll_flush(cx)).is_err() {
            sending.stop();
            self.output.clear();
        }
        sending.flushed = true;
        Poll::Ready(Ok(()))
    }

    /// Reads until a response head is parsed: `Some` for a final one (or an asked-for 101),
    /// `None` when an interim one was skipped.
    fn poll_head(
        &mut self,
        method: &Method,
        upgrade: bool,
        received: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<ResponseHead>, ExchangeError>> {
        loop {
            // The head is copied out (into the thread's arena), so that the read buffer stays
            // the connection's alone and the next read reuses it.
            let parsed = head::parse_response(&self.input, method, &RESPONSE_LIMITS, |len| {
                arena::copy(&self.input[..len])
            });
            match parsed {
                Ok(Parsed::Complete(head)) => {
                    bytes::Buf::advance(&mut self.input, head.len);
                    let status = head.parts.status;
                    if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
                        return Poll::Ready(Err(ExchangeError::Response(
                            "unsolicited 101 Switching Protocols".into(),
                        )));
                    }
                    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(head)));
                }
                Ok(Parsed::Partial) => {}
                Err(error) => {
                    return Poll::Ready(Err(ExchangeError::Response(format!(
                        "invalid response: {error}"
                    ))));
                }
            }
            match ready!(self.poll_fill(READ_SIZE, cx)) {
                Ok(0) if !*received => return Poll::Ready(Err(ExchangeError::ClosedEarly)),
                Ok(0) => {
                    return Poll::Ready(Err(ExchangeError::Response(
                        "connection closed before the response head ended".into(),
                    )));
                }
                Ok(_) => *received = true,
                // The keep-alive race seen as a reset: the backend's RST behind its FIN.
                Err(error) if !*received && is_reset(&error) => {
                    return Poll::Ready(Err(ExchangeError::ClosedEarly));
                }
                Err(error) => {
                    return Poll::Ready(Err(ExchangeError::Response(describe_io(&error))));
                }
            }
        }
    }

    /// Reads what the socket has into `input`, up to about `wanted` bytes (more than
    /// [`READ_SIZE`] only for a long body): the count, 0 at the end of the stream.
    pub(super) fn poll_fill(
        &mut self,
        wanted: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.input.reserve(wanted.clamp(READ_SIZE, BODY_READ_SIZE));
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.input)
    }

    /// Lets go of a read buffer grown past the usual size (a long body's), as it goes idle: an
    /// idle connection holds at most [`READ_SIZE`] of it.
    pub(crate) fn shrink(&mut self) {
        if self.input.capacity() > READ_SIZE {
            self.input = BytesMut::new();
        }
    }
}

/// The timer, set for `timeout` from now the first time it is asked for after `armed` was
/// false.
fn arm<'t>(
    timer: &'t mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    timeout: Duration,
) -> &'t mut Pin<Box<Sleep>> {
    // This poll's reading (`clock.rs`): microseconds old at most, and one `clock_gettime` fewer.
    let deadline = clock::now() + timeout;
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if !*armed {
        *armed = true;
        timer.as_mut().reset(deadline);
    }
    timer
}

/// Whether a backend that answered with `status` before it had the whole body is sent the rest:
/// a success may be a streaming endpoint reading on; an error says it wants no more (RFC 9112
/// section 9.3), and sending on would only risk a reset that loses the answer.
fn takes_the_rest(status: StatusCode) -> bool {
    status.as_u16() < 400
}

/// A reset or broken pipe: the peer closed with unread data, or before it.
fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// The rest of a request body, sent while the response it already has is read.
pub(super) struct Upload {
    body: UnsyncBoxBody<Bytes, BoxError>,
    sending: Sending,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("sending", &self.sending)
            .finish_non_exhaustive()
    }
}

/// A request body being sent, framed as its head said.
#[derive(Debug)]
struct Sending {
    framing: BodyLength,
    /// What a `Content-Length` body has left to send.
    left: u64,
    /// The whole body is framed in the output.
    done: bool,
    /// Bytes of the output already written.
    written: usize,
    /// Some of the request has been written.
    began: bool,
    /// The stream has been flushed since the last write.
    flushed: bool,
    /// The body failed; the exchange fails once what was gathered before is written.
    failed: Option<ExchangeError>,
    /// Writing failed: nothing more is sent, and the request was not sent whole.
    stopped: bool,
}

impl Sending {
    /// The framing `body` is sent with: its exact length when it knows it, else chunked.
    fn new<B: Body>(body: &B) -> Sending {
        let framing = if body.is_end_stream() {
            BodyLength::Empty
        } else {
            match body.size_hint().exact() {
                Some(0) => BodyLength::Empty,
                Some(n) => BodyLength::Length(n),
                None => BodyLength::Chunked,
            }
        };
        let left = match framing {
            BodyLength::Length(n) => n,
            _ => 0,
        };
        Sending {
            framing,
            left,
            done: framing == BodyLength::Empty,
            written: 0,
            began: false,
            flushed: true,
            failed: None,
            stopped: false,
        }
    }

    /// Whether the whole request has left, `pending` bytes of output being left to write:
    /// framed, written and flushed.
    fn is_sent(&self, pending: usize) -> bool {
        self.done && !self.stopped && self.failed.is_none() && pending == 0 && self.flushed
    }

    /// Whether sending is over, the request sent whole or writing given up on: from then, only
    /// the response is waited for.
    fn is_over(&self, pending: usize) -> bool {
        self.stopped || self.is_sent(pending)
    }

    /// Whether what happens next is the backend's to do: answer a request that has left, or
    /// take the bytes waiting to be written (or flushed) to it.
    fn waits_on_backend(&self, pending: usize) -> bool {
        self.is_over(pending) || self.written < pending || (self.done && !self.flushed)
    }

    /// Whether the rest of the body can still be sent: writing has not failed, nor the body.
    fn goes_on(&self) -> bool {
        !self.stopped && self.failed.is_none()
    }

    /// Gives up sending: the connection would not take more.
    fn stop(&mut self) {
        self.stopped = true;
        self.done = true;
        self.written = 0;
        self.flushed = true;
    }

    /// Appends to `out` the body frames that are ready now, framed, up to [`FLUSH_AT`] bytes;
    /// a failure is kept in `failed`.
    fn gather<B>(&mut self, body: &mut B, cx: &mut Context<'_>, out: &mut Vec<u8>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        while !self.done && self.failed.is_none() && out.len() < FLUSH_AT {
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return,
                Poll::Ready(frame) => frame,
            };
            let framed = match frame {
                None => self.end(None, out),
                Some(Err(error)) => Err(ExchangeError::Body(error.into())),
                Some(Ok(frame)) => self.frame(frame, out),
            };
            if let Err(error) = framed {
                self.failed = Some(error);
            }
        }
    }

    fn frame(&mut self, frame: Frame<Bytes>, out: &mut Vec<u8>) -> Result<(), ExchangeError> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                // Trailers end the body; they can be sent only in a chunked one.
                let trailers = frame.into_trailers().ok();
                return self.end(trailers, out);
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            BodyLength::Length(_) => {
                if data.len() as u64 > self.left {
                    return Err(ExchangeError::Body(
                        "request body longer than its Content-Length".into(),
                    ));
                }
                self.left -= data.len() as u64;
                out.extend_from_slice(&data);
                if self.left == 0 {
                    self.done = true;
                }
            }
            _ => {
                chunked::encode_size(data.len() as u64, out);
                out.extend_from_slice(&data);
                out.extend_from_slice(chunked::CHUNK_END);
            }
        }
        Ok(())
    }

    fn end(
        &mut self,
        trailers: Option<http::HeaderMap>,
        out: &mut Vec<u8>,
    ) -> Result<(), ExchangeError> {
        match self.framing {
            BodyLength::Chunked => chunked::encode_end(trailers.as_ref(), out),
            BodyLength::Length(_) if self.left > 0 => {
                return Err(ExchangeError::Body(
                    "request body shorter than its Content-Length".into(),
                ));
            }
            _ => {}
        }
        self.done = true;
        Ok(())
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.input.is_empty() {
            let n = this.input.len().min(buf.remaining());
            buf.put_slice(&this.input.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
