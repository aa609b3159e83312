//! A raw HTTP/1 client connection, plain or TLS, that writes requests exactly as given (in one
//! write, or a write per byte) and reads answers with [`wire::response`], so that a test sees
//! what the proxy sent rather than what a client library made of it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::wire::{self, Parsed, Response};

/// A byte stream to the proxy, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a request's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One write.
    Whole,
    /// A write (a TCP segment; over TLS, a record) per byte, [`BYTE_GAP`] apart, reading the
    /// answer meanwhile.
    ByteByByte,
}

/// The pause between the bytes of a [`Pace::ByteByByte`] request, long enough for the proxy to
/// read most bytes on their own: without it, the proxy reads a few dozen at a time. (Knowing
/// when it has read one costs more: `/proc/net/tcp` takes milliseconds to read here. And a
/// tokio timer rounds up to the millisecond, which would make a 4 KB head take 9 s, near the
/// proxy's request header timeout: the pause is spent yielding.)
pub const BYTE_GAP: Duration = Duration::from_micros(200);

/// The request [`RawConnection::closed_after`] sends to learn whether a connection is open.
pub const PROBE: &[u8] = b"GET /__probe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// One client connection to the proxy; TCP_NODELAY on, so each write is sent as it is made.
pub struct RawConnection {
    io: Box<dyn Io>,
    /// Read and not yet taken as a response.
    buf: Vec<u8>,
    eof: bool,
}

impl RawConnection {
    pub async fn plain(addr: SocketAddr) -> RawConnection {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        RawConnection::over(Box::new(tcp))
    }

    /// Over TLS (SNI `a.test`, ALPN `http/1.1`).
    pub async fn tls(addr: SocketAddr) -> RawConnection {
        let stream = super::tls::connect(addr, Some("a.test"), &[b"http/1.1"]).await;
        stream.get_ref().0.set_nodelay(true).unwrap();
        RawConnection::over(Box::new(stream))
    }

    fn over(io: Box<dyn Io>) -> RawConnection {
        RawConnection {
            io,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `request` at `pace` and reads the response to it (`to_head`: it was a HEAD) for
    /// at most `wait` from the last byte written. Byte by byte, writing stops once a final
    /// answer (or the end) has come, as a client stops sending what the server will not read.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        pace: Pace,
        to_head: bool,
        wait: Duration,
    ) -> Result<Response, String> {
        // A write the proxy no longer takes (it answered, or closed) is part of the answer.
        if pace == Pace::Whole {
            self.write(request).await;
        } else {
            for byte in request.chunks(1) {
                if self.eof || self.answered(to_head) || !self.write(byte).await {
                    break;
                }
                let written = std::time::Instant::now();
                while written.elapsed() < BYTE_GAP {
                    tokio::task::yield_now().await;
                }
                self.read_ready().await;
            }
        }
        let until = tokio::time::Instant::now() + wait;
        self.read_response(to_head, until).await
    }

    /// Whether the proxy closed the connection after the last answer: a request sent on it
    /// ([`PROBE`]) finds it closed or gets an answer, whose status line is told. Bytes that
    /// came unasked after the answer are told instead.
    pub async fn closed_after(&mut self, wait: Duration) -> String {
        if !self.buf.is_empty() {
            return format!("unasked-for bytes after the answer: {}", self.seen());
        }
        if self.eof {
            return "closed".to_owned();
        }
        let until = tokio::time::Instant::now() + wait;
        if !self.write(PROBE).await {
            return "closed".to_owned();
        }
        match self.read_response(false, until).await {
            Ok(next) => format!(
                "kept open: a request sent next was answered {:?}",
                next.head.start
            ),
            Err(_) if self.eof && self.buf.is_empty() => "closed".to_owned(),
            Err(why) => format!("kept open, then: {why}"),
        }
    }

    /// Writes and flushes; false when the connection no longer takes bytes.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Whether a final response is in `buf` already.
    fn answered(&self, to_head: bool) -> bool {
        matches!(wire::response(&self.buf, to_head, false), Parsed::Whole(_))
    }

    /// Takes whatever can be read without waiting: the read is polled once.
    async fn read_ready(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let mut read = ReadBuf::new(&mut chunk);
        let io = &mut self.io;
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *io).poll_read(cx, &mut read)))
                .await;
        match polled {
            Poll::Ready(Ok(())) if read.filled().is_empty() => self.eof = true,
            Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
            Poll::Ready(Err(_)) => self.eof = true,
            Poll::Pending => {}
        }
    }

    /// Reads until `buf` starts with a whole response (taken out of it), the end, or `until`.
    async fn read_response(
        &mut self,
        to_head: bool,
        until: tokio::time::Instant,
    ) -> Result<Response, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match wire::response(&self.buf, to_head, self.eof) {
                Parsed::Whole(response) => {
                    self.buf.drain(..response.len);
                    return Ok(response);
                }
                Parsed::Bad(why) => {
                    return Err(format!("malformed answer ({why}): {}", self.seen()));
                }
                Parsed::Incomplete if self.eof => {
                    return Err(match self.buf.is_empty() {
                        true => "closed with no answer".to_owned(),
                        false => format!("closed mid-answer: {}", self.seen()),
                    });
                }
                Parsed::Incomplete => {}
            }
            match tokio::time::timeout_at(until, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(format!("no whole answer in time: {}", self.seen())),
            }
        }
    }

    fn seen(&self) -> String {
        format!("{:?}", wire::escape(&self.buf))
    }
}
