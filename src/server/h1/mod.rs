//! Fulcrum's own HTTP/1.1 server connection, for plain-HTTP listeners. The common request
//! (HTTP/1.1, origin-form target, no body, no upgrade: `request.rs` says exactly) is read,
//! served and answered by the connection's own task; the first request that is anything else
//! hands the connection, with the bytes read so far, to hyper for the rest of its life
//! (`connection.rs`), which answers it as it always has.
//!
//! Why not hyper for all: under load hyper's server connection took about a fifth of the proxy's
//! core, and it holds an 8 KiB read and an 8 KiB write buffer on every idle keep-alive
//! connection. Here an idle connection holds no buffer: bytes are read into the stack and copied
//! out at the size they arrived, and a response is gathered in a buffer that lives as long as
//! the response.
//!
//! What it keeps of hyper's behaviour and `guard.rs`'s: a connection with no request yet gets
//! `request_header` from accept, an idle one `client_idle`; a client that closes while its
//! request is in progress has the request dropped (logged 499); pipelined requests are answered
//! in order; `Connection: close` closes after the response; a drain closes idle connections at
//! once and the busy ones after their response (with `Connection: close`). A head that arrives
//! in pieces is hyper's too, so the slow-client rules (408) stay `guard.rs`'s.
//!
//! - `mod.rs`: the connection's loop: wait, read, serve, answer, or hand over.
//! - `request.rs`: a head parsed into a request, or judged hyper's.
//! - `response.rs`: the response head as hyper writes it, and its body, framed.
//! - `date.rs`: the `Date` header, formatted once a second.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use super::Shared;
use super::connection::{Connection, serve_connection};
use super::prefixed::Prefixed;
use crate::clock;
use crate::guard::{Alarm, Watch};
use crate::inbound::ClientBody;

mod date;
mod request;
mod response;

use request::{Asks, Served};

/// The most bytes one read takes: a head larger than this arrives in pieces, and is hyper's.
const READ_SIZE: usize = 8192;

/// Serves a plain-HTTP connection on a task of its own.
pub(super) fn serve(shared: Arc<Shared>, accepted: Connection<TcpStream>) {
    let drain = Drain::new(shared.drain.subscribe());
    let watch = Arc::new(Watch::new());
    let opened_ms = clock::now_ms();
    tokio::spawn(
        Lean {
            shared,
            accepted,
            watch,
            alarm: Alarm::default(),
            drain,
            unread: None,
            opened_ms: Some(opened_ms),
        }
        .run(),
    );
}

/// One connection, between and during requests.
struct Lean {
    shared: Arc<Shared>,
    accepted: Connection<TcpStream>,
    watch: Arc<Watch>,
    alarm: Alarm,
    drain: Drain,
    /// Bytes read past the last head: the next request's, pipelined.
    unread: Option<Bytes>,
    /// When the connection opened, until its first request arrives.
    opened_ms: Option<u64>,
}

/// What became of the bytes of a request.
enum Taken {
    /// Answered; the connection stays open.
    Served,
    Close,
    /// Not a request this connection serves: hyper's, from these bytes on.
    Hyper(Bytes),
}

/// What waiting for a request came to.
enum Next {
    Bytes(Bytes),
    /// The client closed, went idle too long, or the server is draining.
    Close,
}

impl Lean {
    async fn run(mut self) {
        loop {
            let bytes = match self.unread.take() {
                Some(bytes) => bytes,
                None => match self.next_bytes().await {
                    Next::Bytes(bytes) => bytes,
                    Next::Close => break,
                },
            };
            // Boxed: an idle connection's future is then only what waiting needs, and a
            // request's state is allocated while it lasts.
            match Box::pin(self.take(bytes)).await {
                Taken::Served => {}
                Taken::Close => break,
                Taken::Hyper(bytes) => return self.hand_over(bytes),
            }
        }
        self.close().await;
    }

    /// Serves the request at the start of `bytes`, or says it is hyper's.
    async fn take(&mut self, bytes: Bytes) -> Taken {
        let Some(Served { request, len, asks }) =
            request::parse(&bytes, self.accepted.limits.max_headers)
        else {
            return Taken::Hyper(bytes);
        };
        self.opened_ms = None;
        if bytes.len() > len {
            self.unread = Some(bytes.slice(len..));
        }
        drop(bytes);
        if self.serve(request, asks).await {
            Taken::Served
        } else {
            Taken::Close
        }
    }

    /// Waits for the next bytes from the client, within the idle or first-request deadline.
    async fn next_bytes(&mut self) -> Next {
        let deadline_ms = match self.opened_ms {
            Some(opened) => opened.saturating_add(ms(self.accepted.timeouts.request_header)),
            None => self
                .watch
                .idle_since_ms()
                .saturating_add(ms(self.accepted.timeouts.client_idle)),
        };
        let peer = self.accepted.peer;
        poll_fn(|cx| {
            match read_now(&mut self.accepted.stream, cx) {
                Poll::Ready(Ok(Some(bytes))) => return Poll::Ready(Next::Bytes(bytes)),
                Poll::Ready(Ok(None)) => return Poll::Ready(Next::Close),
                Poll::Ready(Err(error)) => {
                    debug!(%peer, %error, "client connection failed");
                    return Poll::Ready(Next::Close);
                }
                Poll::Pending => {}
            }
            if self.drain.started(cx) || self.alarm.passed(deadline_ms, cx) {
                return Poll::Ready(Next::Close);
            }
            Poll::Pending
        })
        .await
    }

    /// Serves one request and writes its response; whether the connection stays open.
    async fn serve(&mut self, request: Request<ClientBody>, asks: Asks) -> bool {
        let Lean {
            shared,
            accepted,
            watch,
            unread,
            ..
        } = self;
        let mut handling = Box::pin(shared.proxy.handle(request, accepted.peer, false, watch));
        let stream = &mut accepted.stream;
        // The client closing before its answer drops the request (logged 499), as hyper does;
        // bytes of a pipelined request are kept for after this one.
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if unread.is_none() {
                match read_now(stream, cx) {
                    Poll::Ready(Ok(Some(bytes))) => *unread = Some(bytes),
                    Poll::Ready(Ok(None) | Err(_)) => return Poll::Ready(None),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        drop(handling);
        let Some(response) = response else {
            return false;
        };
        let draining = poll_fn(|cx| Poll::Ready(self.drain.started(cx))).await;
        let keep_alive = !asks.close && !draining;
        response::write(
            &mut self.accepted.stream,
            response,
            keep_alive,
            asks.trailers,
        )
        .await
    }

    /// Gives the connection to hyper, `bytes` to be read first.
    fn hand_over(self, bytes: Bytes) {
        let Connection {
            stream,
            peer,
            limits,
            timeouts,
            open,
            tls,
        } = self.accepted;
        let connection = Connection {
            stream: Prefixed::new(bytes, stream),
            peer,
            limits,
            timeouts,
            open,
            tls,
        };
        serve_connection(&self.shared, connection);
    }

    /// Closes the sending side first, so the last response is not cut by a reset.
    async fn close(&mut self) {
        if let Err(error) = self.accepted.stream.shutdown().await {
            debug!(peer = %self.accepted.peer, %error, "closing the client connection");
        }
    }
}

/// Reads what the socket has now into the stack, and copies it out at its size (`None`: the
/// client closed). The stack buffer is not part of the connection's future, so an idle
/// connection holds none.
fn read_now(stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
    let mut space = [const { MaybeUninit::<u8>::uninit() }; READ_SIZE];
    let mut buf = ReadBuf::uninit(&mut space);
    match Pin::new(stream).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
        Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(Bytes::copy_from_slice(buf.filled())))),
        Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        Poll::Pending => Poll::Pending,
    }
}

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

/// The server's drain as one connection waits for it: registered once, checked without a lock.
struct Drain {
    waiting: Pin<Box<dyn Future<Output = ()> + Send>>,
    started: bool,
}

impl Drain {
    fn new(mut signal: watch::Receiver<bool>) -> Drain {
        Drain {
            // A server gone (the sender dropped) counts as draining too.
            waiting: Box::pin(async move {
                // An error: the server is gone, which is as good as draining.
                let _drained = signal.wait_for(|draining| *draining).await;
            }),
            started: false,
        }
    }

    /// Whether the drain has started; if not, `cx` is woken when it does.
    fn started(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.started {
            self.started = self.waiting.as_mut().poll(cx).is_ready();
        }
        self.started
    }
}
