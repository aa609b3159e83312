//! Fulcrum's HTTP/1 server: every HTTP/1 connection, on plain and TLS listeners, from its first
//! byte to its close, on the codec (`http1/`). A connection's first bytes that are HTTP/2's
//! preface (h2c with prior knowledge) hand it to hyper's HTTP/2 server (`connection.rs`).
//!
//! An idle connection holds no task, no buffer and no timer: it is parked (`home.rs`); a task is
//! spawned when bytes arrive and ends when it has had nothing more to read for a sweep or two.
//! Bytes are read into the thread's arena chunk (`arena.rs`), so a head's values are slices of
//! the read that brought them.
//!
//! The timers of a connection between requests are one deadline, checked by the roster's sweep
//! (late by at most an eighth of the shorter timeout, and never more than 100 ms) and by the
//! task when bytes come: `request_header` from accept for a connection with no request yet, and
//! from a head's first byte for a head (408 when it passes, as nginx's `client_header_timeout`);
//! `client_idle` between requests (closed quietly). A request line longer than any target may be
//! is 414 as soon as it is seen; a head larger than `max_header_bytes`, 431.
//!
//! A client that closes while its request is in progress has the request dropped (logged 499);
//! pipelined requests are answered in order; `Connection: close` and HTTP/1.0 without
//! keep-alive close after the response; a drain closes idle connections at once and the busy
//! ones after their response (with `Connection: close`). A connection that closes with bytes
//! from the client unread lingers a moment reading them, so that the kernel does not answer them
//! with a reset that could destroy the response in flight.
//!
//! - `mod.rs`: accept, and a woken connection's task: read a head, serve it, park or close.
//! - `input.rs`: the bytes read and not yet used; heads taken from them.
//! - `exchange.rs`: one request, from its head to its response's last byte.
//! - `reader.rs`: a request body read as its request asks (`Expect: 100-continue` included).
//! - `write.rs`: a response written, head and body framed.
//! - `home.rs`: a connection between its bytes, parked without a task.
//! - `roster.rs`: every connection, for the deadline sweep and the drain.
//! - `sink.rs`: the epoll set idle plain connections sink to, out of tokio's registry.
//! - `date.rs`: the `Date` header, formatted once a second.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_service::Service;
use tracing::debug;

use super::Shared;
use super::connection::{Connection, serve_h2};
use super::stream::Stream;
use crate::arena;
use crate::body::ClientBody;
use crate::body::upgrade::{Promise, Upgraded};
use crate::clock;
use crate::config::{Limits, Timeouts};
use crate::http1::encode::{self, Asked, Known};
use crate::http1::head;
use crate::proxy::{Peer, Proxy, ResponseBody};
use crate::stream::Prefixed;

mod alone;
mod date;
mod exchange;
mod home;
mod input;
mod reader;
mod roster;
mod sink;
#[cfg(test)]
mod tests;
mod write;

pub(crate) use alone::serve_alone;
use exchange::{Next, Serving};
use home::{Home, Keep, Parked};
use input::Input;
pub(super) use roster::Roster;

/// Room in a request line beside its target: a method and ` HTTP/1.1\r\n`.
const REQUEST_LINE_SLACK: usize = 64;

/// How HTTP/2 with prior knowledge starts (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a closing connection reads what its client still sends, and how much of it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// Takes an accepted connection (a TLS one after its handshake): parked until its first bytes
/// arrive, for at most `request_header`.
pub(super) fn serve(shared: &Arc<Shared>, accepted: Connection<Stream>) {
    let Connection {
        stream,
        peer,
        timeouts,
        open,
        tls,
        ..
    } = accepted;
    let home = shared
        .roster
        .join(|slot| Home::new(Arc::clone(shared), peer, slot));
    let connection = Parked {
        input: Input::new(stream),
        keep: Keep {
            open,
            deadline_ms: clock::after_ms(timeouts.request_header),
            served: 0,
            tls,
            head_timed: false,
        },
    };
    if tls {
        // Its handshake may have read the first request's bytes already (a client sends it with
        // its last handshake message): they wait in the TLS session, not the socket, so the
        // socket's readiness would not tell of them. Its task looks first.
        home.serve_now(connection);
    } else {
        home.park(connection);
    }
}

/// Ends, every so often, the parked connections whose deadline has passed; ends with the
/// server.
pub(super) async fn sweep(shared: Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.roster.sweep(clock::now_ms());
        let (_, timeouts) = shared.proxy.settings();
        let pause = Roster::pause(timeouts.client_idle.min(timeouts.request_header));
        drop(shared);
        tokio::time::sleep(pause).await;
    }
}

/// What a woken connection's task does with a head not complete yet.
enum Wait {
    /// Reads on.
    Read,
    /// Answers 408: its time is up.
    TimedOut,
}

/// Serves a woken connection, request after request, until it has had nothing to read for a
/// while (then it is parked again and the task ends), closes, or is handed over.
async fn run(home: Arc<Home>, mut connection: Parked) {
    // Ended any other way (a panic, the runtime shutting down), the task still takes the
    // connection off the roster, or a drain would wait for it in vain.
    let mut leaving = Leaving(Some(&home));
    let mut linger = false;
    loop {
        // Read once per request: a reload applies from the next one.
        let (limits, timeouts) = home.shared.proxy.settings();
        let taken = match speaks_h2(&connection) {
            Some(true) => {
                leaving.0 = None;
                return hand_over(&home, connection);
            }
            Some(false) => connection.input.take_head(&head_limits(&limits)),
            // Too little has come to tell.
            None => Ok(None),
        };
        let head = match taken {
            Ok(Some(head)) => head,
            Ok(None) => {
                match wait(&mut connection, &timeouts) {
                    Wait::Read => {}
                    Wait::TimedOut => {
                        let took = timeouts.request_header;
                        let status = StatusCode::REQUEST_TIMEOUT;
                        refuse(&home, &mut connection, status, None, took).await;
                        linger = true;
                        break;
                    }
                }
                // Only a connection back for more, or with a head begun, lingers: one that made
                // a single request and went quiet parks at once, holding no task.
                let lingers = connection.keep.served >= 2 || connection.input.has_partial_head();
                match read_next(&home, &mut connection.input, lingers).await {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Pending => {
                        leaving.0 = None;
                        return home.park(connection);
                    }
                    Poll::Ready(Ok(false)) => break,
                    Poll::Ready(Err(error)) => {
                        debug!(peer = %home.peer, %error, "client connection failed");
                        break;
                    }
                }
            }
            Err(error) => {
                let status = error.status();
                debug!(peer = %home.peer, %error, "request head refused");
                let reason = Some(error.reason());
                refuse(&home, &mut connection, status, reason, Duration::ZERO).await;
                linger = true;
                break;
            }
        };
        let serving = Serving {
            draining: &|| home.shared.roster.draining(),
            date: date::today,
            send_limit: timeouts.client_idle,
            discard_limit: timeouts.request_body_idle,
        };
        let peer = Peer {
            addr: home.peer,
            tls: connection.keep.tls,
        };
        let call = |request| call(&home.shared.proxy, request, peer);
        match exchange::serve(&mut connection.input, head, call, serving).await {
            Next::KeepAlive => {
                connection.keep.deadline_ms = clock::after_ms(timeouts.client_idle);
                connection.keep.served = connection.keep.served.saturating_add(1).min(2);
                connection.keep.head_timed = false;
            }
            Next::Close { linger: unread } => {
                linger = unread || !connection.input.is_empty();
                break;
            }
            Next::Switch(promise) => {
                leaving.0 = None;
                home.leave();
                return switch(connection, promise);
            }
            Next::Reset => {
                reset(connection.input.stream.tcp());
                drop(connection);
                return;
            }
        }
    }
    // The guard takes it off the roster once it is closed.
    close(&home, connection, linger).await;
}

/// Calls the proxy, through its `Service` interface, with `request` from `peer`.
///
/// The call is made before the future: what is awaited is the service's boxed future alone, not
/// the request beside it (see `Proxy::handle`).
fn call(
    proxy: &Proxy,
    mut request: Request<ClientBody>,
    peer: Peer,
) -> impl Future<Output = Response<ResponseBody>> + use<> {
    if request.extensions().is_empty() {
        *request.extensions_mut() = arena::extensions();
    }
    request.extensions_mut().insert(peer);
    let answering = proxy.clone().call(request);
    async move {
        let Ok(response) = answering.await;
        response
    }
}

/// The codec's limits for request heads, from `[limits]`.
fn head_limits(limits: &Limits) -> head::Limits {
    head::Limits {
        max_head: limits.max_header_bytes,
        max_fields: limits.max_headers,
        max_line: limits.max_uri_bytes + REQUEST_LINE_SLACK,
    }
}

/// What to do while no whole head has come: time a head begun from its first byte (or, on a new
/// connection, from accept).
fn wait(connection: &mut Parked, timeouts: &Timeouts) -> Wait {
    if !connection.input.has_partial_head() {
        return Wait::Read;
    }
    if !connection.keep.head_timed {
        connection.keep.head_timed = true;
        // A new connection's first head keeps the time it had from accept.
        if connection.keep.served > 0 {
            connection.keep.deadline_ms = clock::after_ms(timeouts.request_header);
        }
    }
    if clock::now_ms() >= connection.keep.deadline_ms {
        return Wait::TimedOut;
    }
    Wait::Read
}

/// Whether the connection speaks HTTP/2 with prior knowledge: a plain one whose first bytes are
/// HTTP/2's preface; `None` while too little has come to tell.
fn speaks_h2(connection: &Parked) -> Option<bool> {
    if connection.keep.served > 0 || connection.keep.tls {
        return Some(false);
    }
    let read = connection.input.peek();
    let n = read.len().min(H2_PREFACE.len());
    if read[..n] != H2_PREFACE[..n] {
        return Some(false);
    }
    (n == H2_PREFACE.len()).then_some(true)
}

/// Gives the connection to hyper's HTTP/2 server, what was read to be read first.
fn hand_over(home: &Home, connection: Parked) {
    home.leave();
    let Parked { mut input, keep } = connection;
    // Its own copy: hyper keeps the connection (and would keep a slice of the arena) for long.
    let read = bytes::Bytes::copy_from_slice(&input.take_read());
    let (limits, timeouts) = home.shared.proxy.settings();
    let connection = Connection {
        stream: Prefixed::new(read, input.stream),
        peer: home.peer,
        limits,
        timeouts,
        open: keep.open,
        tls: false,
    };
    serve_h2(&home.shared, connection);
}

/// Hands the connection to the upgrade's tunnel, with what was read past the request's head.
fn switch(connection: Parked, promise: Promise) {
    let Parked { mut input, keep } = connection;
    let upgraded = Upgraded::new(input.take_read(), input.stream, keep.open);
    // A tunnel that gave up waiting drops the connection, closing it.
    promise.send(upgraded).ok();
}

/// Answers a head refused with `status` (its reason the status's own), closing, and counts and
/// logs it; `took` is how long the head was waited for.
async fn refuse(
    home: &Home,
    connection: &mut Parked,
    status: StatusCode,
    reason: Option<&str>,
    took: Duration,
) {
    let (answer, body) = refusal(status, reason);
    let (_, timeouts) = home.shared.proxy.settings();
    let writing = async {
        connection.input.stream.write_all(&answer).await?;
        connection.input.stream.flush().await
    };
    if let Err(error) = tokio::time::timeout(timeouts.client_idle, writing)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    {
        debug!(peer = %home.peer, %error, "answering a refused head");
    }
    home.shared
        .proxy
        .refused(home.peer, status.as_u16(), body as u64, took);
}

/// A refused head's answer: `status`, a line saying why (the codec's `reason` when it gave one),
/// and `Connection: close`; and the length of its body, the line.
fn refusal(status: StatusCode, reason: Option<&str>) -> (Vec<u8>, usize) {
    let reason = reason.unwrap_or(match status {
        StatusCode::REQUEST_TIMEOUT => "request header not received within time",
        StatusCode::URI_TOO_LONG => "request target too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request header too large",
        StatusCode::HTTP_VERSION_NOT_SUPPORTED => "HTTP version not supported",
        _ => "malformed request",
    });
    let mut response = Response::new(());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let (parts, ()) = response.into_parts();
    let asked = Asked {
        version: http::Version::HTTP_11,
        head: false,
        keep_alive: false,
        trailers: false,
    };
    let mut out = Vec::with_capacity(256);
    let known = Known::Exactly(reason.len() as u64);
    encode::response(&parts, known, &asked, &date::today(), &mut out);
    out.extend_from_slice(reason.as_bytes());
    (out, reason.len())
}

/// Reads the connection's next bytes: `Ready(Ok(true))` when some came; `Pending` when there
/// are none to read now, or, if it `lingers`, none came before a sweep or a drain ended the wait
/// (`home.rs`).
async fn read_next(
    home: &Home,
    input: &mut Input<Stream>,
    lingers: bool,
) -> Poll<io::Result<bool>> {
    if !lingers {
        return read_now(input);
    }
    let mut waited = false;
    poll_fn(|cx| {
        // With the task's waker: the read that finds nothing also asks to be woken.
        let read = input.poll_fill(cx);
        if read.is_ready() {
            if waited {
                home.busy();
            }
            return Poll::Ready(read);
        }
        waited = true;
        match home.linger(cx.waker()) {
            true => Poll::Pending,
            false => Poll::Ready(Poll::Pending),
        }
    })
    .await
}

/// Reads what the connection has now, without waiting. A TLS stream may answer `Pending` while
/// it holds bytes it has not decrypted yet, having woken its task to be polled again: such a
/// wake is noticed and the read tried again, for the socket's readiness would not tell of them.
fn read_now(input: &mut Input<Stream>) -> Poll<io::Result<bool>> {
    /// Wakes set a flag, which the reading task looks at.
    struct Noticed(AtomicBool);

    impl Wake for Noticed {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    thread_local! {
        static NOTICED: Arc<Noticed> = Arc::new(Noticed(AtomicBool::new(false)));
    }
    NOTICED.with(|noticed| {
        let waker = Waker::from(Arc::clone(noticed));
        let mut cx = Context::from_waker(&waker);
        // A few tries: a stream that keeps waking itself is left to its readiness.
        for _ in 0..4 {
            noticed.0.store(false, Ordering::Relaxed);
            let read = input.poll_fill(&mut cx);
            if read.is_ready() || !noticed.0.load(Ordering::Relaxed) {
                return read;
            }
        }
        Poll::Pending
    })
}

/// Takes a connection off the roster when its task ends before it is parked, handed over or
/// closed.
struct Leaving<'a>(Option<&'a Home>);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if let Some(home) = self.0 {
            home.leave();
        }
    }
}

/// Makes the connection's close a reset (`SO_LINGER` 0), which a client cannot take for the end
/// of a response, as a FIN (or TLS's `close_notify`) would be. What the kernel had not sent yet
/// is dropped with it: the body is cut either way, and the client learns that it was.
fn reset(stream: &impl AsFd) {
    if let Err(error) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        debug!(%error, "cannot make a connection's close a reset");
    }
}

/// Closes the connection. When the client may still be sending (`linger`), the sending side is
/// closed first and what the client sends is read and dropped for a moment, so that the kernel
/// does not answer it with a reset that could destroy the response in flight; a TLS connection
/// says `close_notify` first. Otherwise dropping the socket sends the FIN, with no system call
/// more.
async fn close(home: &Home, mut connection: Parked, linger: bool) {
    if !linger && matches!(connection.input.stream, Stream::Plain(_)) {
        return;
    }
    if let Err(error) = connection.input.stream.shutdown().await {
        debug!(peer = %home.peer, %error, "closing the client connection");
        return;
    }
    if !linger {
        return;
    }
    let mut drained = 0;
    // On the heap: on the stack it would be room in every connection's task, lingering or not.
    let mut buffer = vec![0u8; 4096];
    let reading = async {
        while drained < LINGER_BYTES {
            match connection.input.stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    tokio::time::timeout(LINGER, reading).await.ok();
}
