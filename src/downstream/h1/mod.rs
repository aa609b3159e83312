//! Fulcrum's own HTTP/1.1 server connection, for plain-HTTP listeners. The common request
//! (HTTP/1.1, origin-form target, no body, no upgrade: `request.rs` says exactly) is read,
//! served and answered by a task of the connection's own; the first request that is anything
//! else hands the connection, with the bytes read so far, to hyper for the rest of its life
//! (`connection.rs`), which answers it as it always has.
//!
//! Why not hyper for all: under load hyper's server connection took about a fifth of the proxy's
//! core, and it holds an 8 KiB read and an 8 KiB write buffer, a task and a timer on every idle
//! keep-alive connection. Here an idle connection has none of these: it is parked (`home.rs`),
//! and a task is spawned when bytes arrive and ends when it has had nothing more to read for a
//! sweep or two. Bytes are read into the thread's arena chunk (`arena.rs`); a response is
//! gathered in a buffer kept per thread.
//!
//! What it keeps of hyper's behaviour and `proxy/guard.rs`'s: a connection with no request yet
//! gets `request_header` from accept, an idle one `client_idle` (both checked by the roster's
//! sweep, so late by at most an eighth of the shorter timeout, and never more than 100 ms); a
//! client that closes while its request is in progress has the request dropped (logged 499); pipelined requests are answered
//! in order; `Connection: close` closes after the response; a drain closes idle connections at
//! once and the busy ones after their response (with `Connection: close`). A head that arrives
//! in pieces is hyper's too, so the slow-client rules (408) stay `proxy/guard.rs`'s.
//!
//! - `mod.rs`: accept, and a woken connection's task: read, serve, answer, park, or hand over.
//! - `home.rs`: a connection between requests, parked without a task.
//! - `roster.rs`: every connection, for the deadline sweep and the drain.
//! - `deep.rs`: the epoll set connections idle a while sink to, out of tokio's registry.
//! - `request.rs`: a head parsed into a request, or judged hyper's.
//! - `response.rs`: the response head as hyper writes it, and its body, framed.
//! - `stall.rs`: a response to a client that stops reading gives up after `client_idle`.
//! - `date.rs`: the `Date` header, formatted once a second.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use super::connection::{Connection, serve_connection};
use super::prefixed::Prefixed;
use crate::proxy::Logged;
use crate::{arena, clock};

mod date;
mod deep;
mod home;
mod request;
mod response;
mod roster;
mod stall;

pub(super) use deep::surface;
use home::{Home, Parked};
use request::{Asks, Served};
pub(super) use roster::Roster;
use stall::Stall;

/// The most bytes one read takes: a head larger than this arrives in pieces, and is hyper's.
const READ_SIZE: usize = 8192;

/// Takes an accepted plain-HTTP connection: parked until its first bytes arrive, for at most
/// `request_header`.
pub(super) fn serve(shared: &Arc<Shared>, accepted: Connection<TcpStream>) {
    let Connection {
        stream,
        peer,
        timeouts,
        open,
        ..
    } = accepted;
    let home = shared
        .roster
        .join(|slot| Home::new(Arc::clone(shared), peer, slot));
    home.park(Parked {
        stream,
        open,
        deadline_ms: clock::after_ms(timeouts.request_header),
        served: false,
    });
}

/// Closes, every so often, the parked connections whose deadline has passed; ends with the
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

/// Serves a woken connection, request after request, until it has had nothing to read for a
/// while (`read_next`): then it is parked again and the task ends.
async fn run(home: Arc<Home>, mut connection: Parked) {
    // Ended any other way (a panic, the runtime shutting down), the task still takes the
    // connection off the roster, or a drain would wait for it in vain.
    let mut leaving = Leaving(Some(&home));
    let mut unread = None;
    // Only a connection back for another request lingers: one that made a single request and
    // went quiet parks at once, holding no task.
    let returning = connection.served;
    // The request's state: allocated once per task and refilled by each request it serves. It
    // is several KiB, which glibc serves on its slow path, and a task serves many requests. The
    // price: a connection lingering between requests holds it (4.6 KiB) until it parks, at most
    // two sweeps; a parked connection holds no task and none of this.
    let mut handling = Box::pin(None);
    loop {
        let bytes = match unread.take() {
            Some(bytes) => bytes,
            None => match read_next(&home, &mut connection.stream, returning).await {
                Poll::Ready(Ok(Some(bytes))) => bytes,
                Poll::Pending => {
                    leaving.0 = None;
                    return home.park(connection);
                }
                Poll::Ready(Ok(None)) => break,
                Poll::Ready(Err(error)) => {
                    debug!(peer = %home.peer, %error, "client connection failed");
                    break;
                }
            },
        };
        // Read once per request: a reload applies from the next one.
        let (limits, timeouts) = home.shared.proxy.settings();
        let Some(Served { request, len, asks }) = request::parse(&bytes, limits.max_headers) else {
            leaving.0 = None;
            return hand_over(&home, connection, bytes);
        };
        if bytes.len() > len {
            unread = Some(bytes.slice(len..));
        }
        drop(bytes);
        handling.as_mut().set(Some(
            home.shared.proxy.handle(request, home.peer, false, None),
        ));
        let answering = pin!(answer(
            &home,
            &mut connection.stream,
            handling.as_mut(),
            (asks, timeouts.client_idle),
            &mut unread,
        ));
        if !answering.await {
            break;
        }
        connection.deadline_ms = clock::after_ms(timeouts.client_idle);
        connection.served = true;
    }
    // The guard takes it off the roster once it is closed.
    close(&home, connection).await;
}

/// Reads the connection's next bytes; `Pending` when there are none to read now, or, if it
/// `lingers`, none came before a sweep or a drain ended the wait (`home.rs`).
async fn read_next(
    home: &Home,
    stream: &mut TcpStream,
    lingers: bool,
) -> Poll<io::Result<Option<Bytes>>> {
    if !lingers {
        return read_now(stream);
    }
    let mut waited = false;
    poll_fn(|cx| {
        // With the task's waker: the read that finds nothing also asks to be woken.
        let read = read_woken(stream, cx);
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

/// Waits for the response `handling` makes and writes it, giving up if the client reads none
/// of it for `send_limit`; whether the connection stays open. `handling` is emptied once it has
/// answered, or the client has gone.
async fn answer<F>(
    home: &Home,
    stream: &mut TcpStream,
    mut handling: Pin<&mut Option<F>>,
    (asks, send_limit): (Asks, Duration),
    unread: &mut Option<Bytes>,
) -> bool
where
    F: Future<Output = Response<Logged>>,
{
    // In a block: the response's storage ends before the write is awaited, so the future does
    // not hold both.
    let writing = {
        // The client closing before its answer drops the request (logged 499), as hyper does;
        // bytes of a pipelined request are kept for after this one.
        let response = poll_fn(|cx| {
            let Some(future) = handling.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            if let Poll::Ready(response) = future.poll(cx) {
                return Poll::Ready(Some(response));
            }
            if unread.is_none() {
                match read_woken(stream, cx) {
                    Poll::Ready(Ok(Some(bytes))) => *unread = Some(bytes),
                    Poll::Ready(Ok(None) | Err(_)) => return Poll::Ready(None),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        handling.set(None);
        let Some(response) = response else {
            return false;
        };
        let keep_alive = !asks.close && !home.shared.roster.draining();
        let stream = Stall::new(stream, send_limit);
        response::write(stream, response, keep_alive, asks.trailers)
    };
    writing.await
}

/// Gives the connection to hyper, `bytes` to be read first.
fn hand_over(home: &Home, connection: Parked, bytes: Bytes) {
    home.leave();
    let (limits, timeouts) = home.shared.proxy.settings();
    let connection = Connection {
        // Its own copy: hyper may keep the connection (and a slice of the arena) for long.
        stream: Prefixed::new(Bytes::copy_from_slice(&bytes), connection.stream),
        peer: home.peer,
        limits,
        timeouts,
        open: connection.open,
        tls: false,
    };
    serve_connection(&home.shared, connection);
}

/// Closes the sending side first, so the last response is not cut by a reset.
async fn close(home: &Home, mut connection: Parked) {
    if let Err(error) = connection.stream.shutdown().await {
        debug!(peer = %home.peer, %error, "closing the client connection");
    }
}

/// Reads what the socket has now into this thread's arena chunk (`None`: the client closed).
/// The buffer is the thread's, not the connection's, so an idle connection holds none.
///
/// Without a waker: the caller asks for readiness afterwards if it waits.
fn read_now(stream: &mut TcpStream) -> Poll<io::Result<Option<Bytes>>> {
    read_woken(stream, &mut Context::from_waker(Waker::noop()))
}

/// [`read_now`], `cx` woken when the socket becomes readable.
fn read_woken(stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
    let (bytes, read) = arena::fill(READ_SIZE, |chunk| {
        tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut chunk.limit(READ_SIZE))
    });
    match read {
        Poll::Ready(Ok(0)) => Poll::Ready(Ok(None)),
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(Some(bytes))),
        Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        Poll::Pending => Poll::Pending,
    }
}
