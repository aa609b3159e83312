//! HTTP/1.1 exchanges on plain-TCP backend connections, driven by the task that serves the
//! client.
//!
//! hyper's client connection runs in a task of its own: each request crosses over to that task,
//! its response crosses back, and so does every piece of the response body, a few wake-ups and
//! channel hand-offs per request. For the commonest exchange, a request without a body to a
//! plain-HTTP/1.1 backend, this module does the work where the request already is: the head goes
//! out in one `write`, the response head is parsed with httparse, and [`PlainBody`] reads the
//! body as the client connection asks for it. Requests with a body, upgrades, and TLS or HTTP/2
//! backends still go through hyper (`proxy/attempt.rs` chooses).
//!
//! An idle connection is checked for reuse without a system call: tokio's readiness for the
//! socket says whether anything (a close, stray bytes) arrived while it sat idle; only when it
//! did is the socket read to tell which.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::connections::{MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS};
use crate::body::{RequestBody, strip_trailer_fields};
use crate::{arena, clock, names};

/// How much room each read asks for.
const READ_SIZE: usize = 16 * 1024;
/// Longest chunk-size line, and most trailer bytes, accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A plain-TCP HTTP/1.1 connection to a backend, idle between exchanges.
#[derive(Debug)]
pub struct Plain {
    stream: TcpStream,
    /// Bytes read from the backend and not yet consumed.
    input: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    output: Vec<u8>,
    /// The response timeout, kept from one exchange to the next: moving a registered timer's
    /// deadline later is one atomic operation, where a timer per exchange is put into tokio's
    /// timer wheel and taken out again, under its lock, for every request.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Why an exchange on a [`Plain`] connection failed.
#[derive(Debug)]
pub enum PlainError {
    /// The request head could not be written: the backend has not received the request.
    Write(io::Error),
    /// The connection closed before any byte of a response came back.
    ClosedEarly,
    /// Reading or parsing the response head failed after the request was written.
    Read(String),
    /// No response head within the timeout (the request may have been written).
    TimedOut,
}

impl Plain {
    /// Boxed: it moves between the idle stack and response bodies, which stay small.
    pub fn new(stream: TcpStream) -> Box<Plain> {
        Box::new(Plain {
            stream,
            input: BytesMut::new(),
            output: Vec::new(),
            timer: None,
        })
    }

    /// Whether it can carry another exchange: the backend neither closed it nor sent anything
    /// while it was idle.
    pub fn is_reusable(&self) -> bool {
        if !self.input.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        // Readiness can linger after a read that filled its buffer exactly: look.
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `request` (its body is empty) and reads the response head, skipping interim (1xx)
    /// responses, all within `timeout`. The response's body reads from this connection, which it
    /// owns until the end. After [`PlainError::TimedOut`] the connection must not be reused.
    pub async fn exchange(
        mut self: Box<Self>,
        request: &Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<PlainBody>, (PlainError, Box<Plain>)> {
        let mut timer = self.arm(timeout);
        let exchanged = {
            let mut exchanging = pin!(self.send_and_read(request));
            poll_fn(|cx| match exchanging.as_mut().poll(cx) {
                Poll::Ready(exchanged) => Poll::Ready(exchanged),
                Poll::Pending => poll_timer(&mut timer, cx).map(|()| Err(PlainError::TimedOut)),
            })
            .await
        };
        // Nobody to wake if the deadline passes while the connection sits idle. (The timer stays
        // registered meanwhile: under tokio's paused test clock, an idle runtime jumps to it.)
        let _ = poll_timer(&mut timer, &mut Context::from_waker(Waker::noop()));
        self.timer = Some(timer);
        let (parts, asked, framing) = match exchanged {
            Ok(head) => head,
            Err(error) => return Err((error, self)),
        };
        let keep_alive = asked.keeps_alive(parts.version) && framing != Framing::Close;
        let body = PlainBody::new(self, framing, keep_alive);
        Ok(Response::from_parts(parts, body))
    }

    /// The connection's timer, set to fire `timeout` from now.
    fn arm(&mut self, timeout: Duration) -> Pin<Box<Sleep>> {
        let deadline = clock::now() + timeout;
        match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Writes the request head and reads the response's.
    async fn send_and_read(
        &mut self,
        request: &Request<RequestBody>,
    ) -> Result<(http::response::Parts, Asked, Framing), PlainError> {
        encode_head(request, &mut self.output);
        if let Err(error) = self.stream.write_all(&self.output).await {
            return Err(PlainError::Write(error));
        }
        self.read_head(request.method() == Method::HEAD).await
    }

    /// Reads until a final response head is complete.
    async fn read_head(
        &mut self,
        no_body: bool,
    ) -> Result<(http::response::Parts, Asked, Framing), PlainError> {
        let mut received = false;
        loop {
            if let Some((parts, asked)) = parse_head(&mut self.input).map_err(PlainError::Read)? {
                if parts.status.is_informational()
                    && parts.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                let framing = framing(&parts, no_body).map_err(PlainError::Read)?;
                return Ok((parts, asked, framing));
            }
            if self.input.len() >= MAX_RESPONSE_HEAD {
                return Err(PlainError::Read("response head too large".to_owned()));
            }
            let read = poll_fn(|cx| self.poll_fill(cx)).await;
            match read {
                Ok(0) if !received => return Err(PlainError::ClosedEarly),
                Ok(0) => {
                    let reason = "connection closed before message completed";
                    return Err(PlainError::Read(reason.to_owned()));
                }
                Ok(_) => received = true,
                // The keep-alive race seen as a reset: the backend's RST behind its FIN.
                Err(error)
                    if !received
                        && matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Err(PlainError::ClosedEarly);
                }
                Err(error) => return Err(PlainError::Read(super::client::describe_io(&error))),
            }
        }
    }

    /// Reads what the socket has into `input`: the count, 0 at the end of the stream.
    ///
    /// Through `AsyncRead`, not `try_read`: a read shorter than the room given clears tokio's
    /// readiness for the socket, so the next exchange does not first make a read that can only
    /// answer "would block" (one system call per request saved), and [`Plain::is_reusable`]
    /// can trust the readiness.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.input.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.input)
    }
}

/// Polls `timer` outside tokio's per-task budget, as `tokio::time::timeout` does: an exchange
/// that always has bytes to read (a backend flooding interim responses) uses the budget up on
/// every poll, and a budgeted timer would then never look at its deadline.
fn poll_timer(timer: &mut Pin<Box<Sleep>>, cx: &mut Context<'_>) -> Poll<()> {
    Pin::new(&mut tokio::task::unconstrained(timer.as_mut())).poll(cx)
}

/// The request head as hyper's client would write it: target in origin form, names in lower
/// case, no `Transfer-Encoding` since there is no body.
fn encode_head(request: &Request<RequestBody>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        if name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head at the start of `input` and consumes it, if it is complete; with
/// what its `Connection` fields ask.
///
/// A `Connection` field that lists only `close` and `keep-alive` is left out of the headers:
/// it is hop-by-hop and names no other field, so the proxy would remove it anyway
/// (`proxy::headers::rewrite_response`), after a lookup and a removal.
fn parse_head(input: &mut BytesMut) -> Result<Option<(http::response::Parts, Asked)>, String> {
    if input.is_empty() {
        return Ok(None);
    }
    // Uninitialised: 256 empty fields would be 8 KiB written for every response.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default();
    let length = match parsing.parse_response_with_uninit_headers(&mut parsed, input, &mut slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("invalid response head: {error}")),
    };
    let code = parsed.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("invalid response status {code}"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // The head's bytes copied out once (into the arena); each value is a slice of them.
    let bytes = arena::copy(&input[..length]);
    let start = input.as_ptr() as usize;
    // Room for what the proxy adds (`Via`, `X-Request-Id`, a cookie): growing re-hashes the map.
    let mut headers = arena::header_map(parsed.headers.len() + 3);
    let mut asked = Asked::default();
    for field in parsed.headers.iter() {
        let name = names::header_name(field.name.as_bytes())
            .map_err(|_| format!("invalid response header name {:?}", field.name))?;
        // An empty value's slice need not point into the input.
        let value = match (field.value.as_ptr() as usize).checked_sub(start) {
            Some(offset) if !field.value.is_empty() && offset + field.value.len() <= length => {
                HeaderValue::from_maybe_shared(bytes.slice(offset..offset + field.value.len()))
            }
            _ => HeaderValue::from_bytes(field.value),
        }
        .map_err(|_| format!("invalid value for response header {name}"))?;
        if name == http::header::CONNECTION && asked.note(value.as_bytes()) {
            continue;
        }
        headers.append(name, value);
    }
    let reason = parsed
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .and_then(|reason| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok());
    input.advance(length);
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    if let Some(reason) = reason {
        parts.extensions.insert(reason);
    }
    Ok(Some((parts, asked)))
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: a response to HEAD, 1xx, 204, 304, or a length of 0.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the backend closes the connection.
    Close,
}

fn framing(parts: &http::response::Parts, no_body: bool) -> Result<Framing, String> {
    let status = parts.status;
    if no_body
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    // One pass over the few fields of a response, rather than two lookups.
    let mut last_coding = None;
    let mut length = Ok(None);
    for (name, value) in &parts.headers {
        if name == http::header::TRANSFER_ENCODING {
            last_coding = Some(value);
        } else if name == http::header::CONTENT_LENGTH {
            length = length.and_then(|seen| declared_length(seen, value));
        }
    }
    if let Some(last) = last_coding {
        let chunked = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // Anything else is refused by the proxy's response screening; read it to the close.
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    Ok(match length? {
        Some(0) => Framing::Empty,
        Some(length) => Framing::Length(length),
        None => Framing::Close,
    })
}

/// The length `value` (one `Content-Length` field) declares, given the one declared before
/// (`seen`): each item must be digits, and all must agree.
fn declared_length(seen: Option<u64>, value: &HeaderValue) -> Result<Option<u64>, String> {
    let mut length = seen;
    for item in value.as_bytes().split(|&b| b == b',') {
        let parsed = std::str::from_utf8(item.trim_ascii())
            .ok()
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or_else(|| "invalid Content-Length in response".to_owned())?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err("conflicting Content-Length values in response".to_owned());
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// What a response's `Connection` fields ask of the connection.
#[derive(Debug, Default, Clone, Copy)]
struct Asked {
    close: bool,
    keep_alive: bool,
}

impl Asked {
    /// Notes the tokens of one `Connection` value; whether it lists nothing else.
    fn note(&mut self, value: &[u8]) -> bool {
        let mut only_these = true;
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            let close = token.eq_ignore_ascii_case(b"close");
            let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            only_these &= close || keep_alive || token.is_empty();
        }
        only_these
    }

    /// Whether the connection may carry another exchange after this response (RFC 9112
    /// section 9.3).
    fn keeps_alive(self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.close,
            _ => self.keep_alive && !self.close,
        }
    }
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this much left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(Chunk),
    Close,
    /// Reading failed; the error is reported at the next poll (see [`PlainBody::fail`]).
    Failed(String),
    Done,
}

/// A response body read from a [`Plain`] connection as the client takes it. Once read to its end
/// the connection can be taken back ([`PlainBody::reusable`]) for the next exchange.
#[derive(Debug)]
pub struct PlainBody {
    connection: Option<Box<Plain>>,
    reading: Reading,
    keep_alive: bool,
    trailers: Option<HeaderMap>,
}

impl PlainBody {
    fn new(connection: Box<Plain>, framing: Framing, keep_alive: bool) -> PlainBody {
        let reading = match framing {
            Framing::Empty => Reading::Done,
            Framing::Length(length) => Reading::Length(length),
            Framing::Chunked => Reading::Chunked(Chunk::Size),
            Framing::Close => Reading::Close,
        };
        PlainBody {
            connection: Some(connection),
            reading,
            keep_alive,
            trailers: None,
        }
    }

    /// The connection, once the body has been read to its end and the backend allows reuse.
    pub fn reusable(&mut self) -> Option<Box<Plain>> {
        if !matches!(self.reading, Reading::Done) || !self.keep_alive {
            return None;
        }
        self.connection.take()
    }

    /// Gives up on the body. The error comes at the next poll, not this one: hyper abandons
    /// the client connection at the error, and the head and data already relayed must first be
    /// flushed (this poll returning pending does that), as they would be with hyper's client.
    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        reason: impl Into<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.connection = None;
        self.keep_alive = false;
        self.reading = Reading::Failed(reason.into());
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads more from the backend; `Ok(false)` at the end of the stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        Poll::Ready(ready!(connection.poll_fill(cx)).map(|read| read > 0))
    }

    fn input(&mut self) -> &mut BytesMut {
        &mut self
            .connection
            .as_mut()
            .expect("a body being read has its connection")
            .input
    }

    /// The next frame of a chunked body, or what to wait for.
    fn poll_chunked(
        &mut self,
        cx: &mut Context<'_>,
        mut at: Chunk,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            let step = match at {
                Chunk::Size => self.chunk_size(),
                Chunk::Data(left) => {
                    let input = self.input();
                    if input.is_empty() {
                        Ok(None)
                    } else {
                        let take = (left as usize).min(input.len());
                        let data = take_bytes(input, take);
                        let left = left - take as u64;
                        self.reading = Reading::Chunked(if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        });
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Chunk::DataEnd => {
                    let input = self.input();
                    match input.get(..2) {
                        Some(b"\r\n") => {
                            input.advance(2);
                            Ok(Some(Chunk::Size))
                        }
                        Some(_) => Err("chunk data not followed by CRLF"),
                        None => Ok(None),
                    }
                }
                Chunk::Trailers => match self.trailer_line() {
                    Ok(Some(true)) => {
                        self.reading = Reading::Done;
                        return Poll::Ready(self.trailers.take().map(|mut trailers| {
                            strip_trailer_fields(&mut trailers);
                            Ok(Frame::trailers(trailers))
                        }));
                    }
                    Ok(Some(false)) => Ok(Some(Chunk::Trailers)),
                    Ok(None) => Ok(None),
                    Err(reason) => Err(reason),
                },
            };
            match step {
                Ok(Some(next)) => {
                    at = next;
                    self.reading = Reading::Chunked(next);
                }
                Ok(None) => match ready!(self.poll_more(cx)) {
                    Ok(true) => {}
                    Ok(false) => return self.fail(cx, "connection closed in a chunked body"),
                    Err(error) => return self.fail(cx, error.to_string()),
                },
                Err(reason) => return self.fail(cx, reason),
            }
        }
    }

    /// Consumes a chunk-size line: the state after it, or `None` if it is not complete yet.
    fn chunk_size(&mut self) -> Result<Option<Chunk>, &'static str> {
        let input = self.input();
        let Some(end) = memchr::memchr(b'\n', input) else {
            return if input.len() > MAX_CHUNK_LINE {
                Err("chunk-size line too long")
            } else {
                Ok(None)
            };
        };
        let line = input[..end]
            .strip_suffix(b"\r")
            .ok_or("chunk-size line without CRLF")?;
        // Chunk extensions (after `;`) are ignored, as RFC 9112 section 7.1.1 allows.
        let digits = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if digits.is_empty() || digits.len() > 16 {
            return Err("invalid chunk size");
        }
        let mut size: u64 = 0;
        for &digit in digits {
            let value = (digit as char).to_digit(16).ok_or("invalid chunk size")?;
            size = size << 4 | u64::from(value);
        }
        input.advance(end + 1);
        Ok(Some(if size == 0 {
            Chunk::Trailers
        } else {
            Chunk::Data(size)
        }))
    }

    /// Consumes one trailer line: `Some(true)` at the empty line that ends the body.
    fn trailer_line(&mut self) -> Result<Option<bool>, &'static str> {
        let input = self.input();
        let Some(end) = memchr::memchr(b'\n', input) else {
            return if input.len() > MAX_TRAILERS {
                Err("trailers too large")
            } else {
                Ok(None)
            };
        };
        let line = input.split_to(end + 1);
        let line = line
            .strip_suffix(b"\r\n")
            .ok_or("trailer line without CRLF")?;
        if line.is_empty() {
            return Ok(Some(true));
        }
        let colon = memchr::memchr(b':', line).ok_or("invalid trailer line")?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| "invalid trailer name")?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| "invalid trailer")?;
        let trailers = self.trailers.get_or_insert_default();
        if trailers.len() >= MAX_RESPONSE_HEADERS {
            return Err("too many trailers");
        }
        trailers.append(name, value);
        Ok(Some(false))
    }
}

/// The first `count` bytes of `input`, copied out (into the arena): sharing them instead would
/// make the connection's buffer shared, and the next read would have to allocate a new one.
fn take_bytes(input: &mut BytesMut, count: usize) -> Bytes {
    let data = arena::copy(&input[..count]);
    input.advance(count);
    data
}

impl Body for PlainBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Failed(reason) => {
                    let error = io::Error::other(std::mem::take(reason));
                    this.reading = Reading::Done;
                    return Poll::Ready(Some(Err(error)));
                }
                Reading::Chunked(at) => {
                    let at = *at;
                    return this.poll_chunked(cx, at);
                }
                Reading::Length(left) => {
                    let left = *left;
                    let input = this.input();
                    if !input.is_empty() {
                        let take = (left as usize).min(input.len());
                        let data = take_bytes(input, take);
                        let left = left - take as u64;
                        this.reading = if left == 0 {
                            Reading::Done
                        } else {
                            Reading::Length(left)
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this.fail(cx, "connection closed before message completed");
                        }
                        Err(error) => return this.fail(cx, error.to_string()),
                    }
                }
                Reading::Close => {
                    let input = this.input();
                    if !input.is_empty() {
                        let data = take_bytes(input, input.len());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            this.reading = Reading::Done;
                            return Poll::Ready(None);
                        }
                        Err(error) => return this.fail(cx, error.to_string()),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(left) => SizeHint::with_exact(left),
            Reading::Chunked(_) | Reading::Close | Reading::Failed(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_response_timeout_fires_when_the_task_has_spent_its_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        // Accepted, and never answered.
        let _backend = listener.accept().await.unwrap();
        let request = Request::get("/").body(RequestBody::empty()).unwrap();
        let mut exchanging = pin!(Plain::new(stream).exchange(&request, Duration::from_millis(50)));
        // Each poll first spends all of tokio's per-task budget, as an exchange with bytes always
        // ready to read does: the deadline must still be seen.
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| {
                while pin!(tokio::task::consume_budget()).poll(cx).is_ready() {}
                exchanging.as_mut().poll(cx)
            }),
        )
        .await
        .expect("the response timeout, not the test's, ends the exchange");
        assert!(matches!(outcome, Err((PlainError::TimedOut, _))));
    }

    fn parts(head: &str) -> http::response::Parts {
        let mut input = BytesMut::from(head);
        parse_head(&mut input).unwrap().unwrap().0
    }

    fn asked(head: &str) -> Asked {
        let mut input = BytesMut::from(head);
        parse_head(&mut input).unwrap().unwrap().1
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut input =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n");
        let (parts, _) = parse_head(&mut input).unwrap().unwrap();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.headers["x-a"], "b");
        assert_eq!(&input[..], b"ok\n");
        assert_eq!(framing(&parts, false), Ok(Framing::Length(3)));
    }

    #[test]
    fn empty_and_repeated_values_are_kept() {
        let parts = parts("HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Two: a\r\nX-Two: b\r\n\r\n");
        assert_eq!(parts.headers["x-empty"], "");
        let two: Vec<_> = parts.headers.get_all("x-two").iter().collect();
        assert_eq!(two, ["a", "b"]);
    }

    #[test]
    fn partial_heads_wait_and_garbage_fails() {
        let mut input = BytesMut::from("HTTP/1.1 200 OK\r\nContent-");
        assert!(matches!(parse_head(&mut input), Ok(None)));
        let mut input = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(parse_head(&mut input).is_err());
    }

    #[test]
    fn a_custom_reason_is_kept() {
        let parts = parts("HTTP/1.1 200 Fine Thanks\r\n\r\n");
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"Fine Thanks");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let head = |h: &str| parts(&format!("HTTP/1.1 200 OK\r\n{h}\r\n"));
        assert_eq!(
            framing(&head("Content-Length: 0\r\n"), false),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing(&head("Content-Length: 5\r\n"), true),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing(&head("Transfer-Encoding: chunked\r\n"), false),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(&head("Transfer-Encoding: gzip\r\n"), false),
            Ok(Framing::Close)
        );
        assert_eq!(framing(&head(""), false), Ok(Framing::Close));
        assert_eq!(
            framing(&head("Content-Length: 4\r\nContent-Length: 4\r\n"), false),
            Ok(Framing::Length(4))
        );
        assert!(framing(&head("Content-Length: 4\r\nContent-Length: 5\r\n"), false).is_err());
        assert!(framing(&head("Content-Length: +4\r\n"), false).is_err());
        let no_content = parts("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(framing(&no_content, false), Ok(Framing::Empty));
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let bare = asked("HTTP/1.1 200 OK\r\n\r\n");
        assert!(bare.keeps_alive(Version::HTTP_11));
        assert!(!bare.keeps_alive(Version::HTTP_10));
        let keep = asked("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(keep.keeps_alive(Version::HTTP_10));
        let close = asked("HTTP/1.1 200 OK\r\nConnection: foo, close\r\n\r\n");
        assert!(!close.keeps_alive(Version::HTTP_11));
        let split = asked("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n");
        assert!(!split.keeps_alive(Version::HTTP_11));
    }

    #[test]
    fn a_connection_field_naming_only_keep_alive_or_close_is_left_out() {
        let plain = parts("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n");
        assert!(!plain.headers.contains_key("connection"));
        assert_eq!(plain.headers["x-a"], "b");
        // One that names another field stays, for the proxy to remove that field too.
        let naming = parts("HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: b\r\n\r\n");
        assert_eq!(naming.headers["connection"], "close, X-A");
    }
}
