//! Raw HTTP/1.1 backends on 127.0.0.1:0 that read requests byte for byte, framed as they say
//! (Content-Length or chunked), so that a keep-alive connection is answered request by request:
//! [`Recorder`] keeps the exact bytes of every request and answers `200 ok`;
//! [`scripted_keep_alive_backend`] answers with bytes no well-behaved server would send.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::wire::{self, Chunked, Framing, Head};

/// The Recorder's answer to every request (its head only, to a `HEAD`).
pub const RECORDER_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// One request as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The head, byte for byte, up to and including its empty line.
    pub head: Vec<u8>,
    /// The body bytes as they came (chunk framing included).
    pub body: Vec<u8>,
    pub framing: Framing,
    /// `None` for a whole request; else why it ended early.
    pub cut: Option<String>,
}

impl Received {
    pub fn target(&self) -> &str {
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = std::str::from_utf8(line).unwrap_or("");
        line.split(' ').nth(1).unwrap_or("")
    }

    /// The body as a reader sees it: a Content-Length body as is, a chunked body as its data
    /// and trailers, or as far as it reads (chunk boundaries carry no meaning, RFC 9112
    /// section 7.1, and a proxy cuts them where its reads ended).
    pub fn show_body(&self) -> String {
        match self.framing {
            Framing::None if self.body.is_empty() => String::new(),
            Framing::Chunked => match wire::chunked(&self.body) {
                Chunked::Whole { data, trailers, .. } => format!(
                    "chunked body {:?}, trailers {:?}",
                    wire::escape(&data),
                    wire::escape(&trailers)
                ),
                _ => {
                    let (data, rest) = wire::chunked_prefix(&self.body);
                    let mut text = format!("chunked body, unfinished: {:?}", wire::escape(&data));
                    if !rest.is_empty() {
                        text += &format!(", then {:?}", wire::escape(rest));
                    }
                    text
                }
            },
            _ => format!("body {:?}", wire::escape(&self.body)),
        }
    }
}

/// Reads one request from `stream` (`buf` holds what was read beyond the last one). With
/// `continue_100`, a `100 Continue` is written when the head expects one and a body follows.
/// `Err` carries what arrived of a request cut short; `Ok(None)` is a clean end.
pub async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    continue_100: bool,
) -> Result<Option<Received>, Received> {
    let end = loop {
        if let Some(end) = wire::head_end(buf) {
            break end;
        }
        if !read_more(stream, buf).await {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(cut(std::mem::take(buf), Vec::new(), Framing::None, "head")),
            };
        }
    };
    let head: Vec<u8> = buf.drain(..end).collect();
    let parsed = Head::parse(&head);
    let framing = parsed.framing(Framing::None);
    let expects = parsed
        .values("expect")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("100-continue"));
    if continue_100 && expects && framing != Framing::None && framing != Framing::Length(0) {
        // The peer may be gone; reading on says so.
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .ok();
    }
    loop {
        let whole = match framing {
            Framing::None => Some(0),
            Framing::Length(n) => (buf.len() >= n).then_some(n),
            Framing::Chunked => match wire::chunked(buf) {
                Chunked::Whole { len, .. } => Some(len),
                Chunked::Incomplete => None,
                Chunked::Bad(why) => return Err(cut(head, std::mem::take(buf), framing, &why)),
            },
            Framing::UntilClose => None,
        };
        if let Some(len) = whole {
            let body = buf.drain(..len).collect();
            return Ok(Some(Received {
                head,
                body,
                framing,
                cut: None,
            }));
        }
        if !read_more(stream, buf).await {
            let why = match framing {
                Framing::UntilClose => None,
                _ => Some("body: the connection ended"),
            };
            let body = std::mem::take(buf);
            return match why {
                None => Ok(Some(Received {
                    head,
                    body,
                    framing,
                    cut: None,
                })),
                Some(why) => Err(cut(head, body, framing, why)),
            };
        }
    }
}

fn cut(head: Vec<u8>, body: Vec<u8>, framing: Framing, why: &str) -> Received {
    Received {
        head,
        body,
        framing,
        cut: Some(why.to_owned()),
    }
}

/// Reads more into `buf`; false at the end of the stream (or an error).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    /// Connections accepted and not yet ended.
    open: usize,
}

/// A backend that records every request byte for byte and answers each with
/// [`RECORDER_REPLY`], keeping the connection open; stops when dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    _tasks: JoinSet<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, Arc::clone(&log)));
        Recorder {
            addr,
            log,
            _tasks: tasks,
        }
    }

    /// Every request received so far, in the order they were complete (or cut).
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().received.clone()
    }

    /// Waits until every connection has ended: once its peer has closed them all, everything
    /// it sent has been read. False if that has not happened within `deadline`.
    pub async fn all_closed(&self, deadline: Duration) -> bool {
        let start = tokio::time::Instant::now();
        while self.log.lock().unwrap().open > 0 {
            if start.elapsed() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

async fn accept(listener: TcpListener, log: Arc<Mutex<Log>>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        log.lock().unwrap().open += 1;
        connections.spawn(record(stream, Arc::clone(&log)));
    }
}

async fn record(mut stream: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    loop {
        match read_request(&mut stream, &mut buf, true).await {
            Ok(Some(received)) => {
                let head_only = Head::parse(&received.head).method() == "HEAD";
                log.lock().unwrap().received.push(received);
                let reply = match head_only {
                    true => &RECORDER_REPLY[..RECORDER_REPLY.len() - 2],
                    false => RECORDER_REPLY,
                };
                if stream.write_all(reply).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(received) => {
                log.lock().unwrap().received.push(received);
                break;
            }
        }
    }
    log.lock().unwrap().open -= 1;
}

/// A backend that reads each request whole and answers the first on each connection with
/// `first` and every later one with `later`, verbatim (to a `HEAD`, only up to the end of the
/// final head: a server sends no body there). With `close`, it closes after each answer.
pub async fn scripted_keep_alive_backend(
    first: &'static [u8],
    later: &'static [u8],
    close: bool,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut reply = first;
                while let Ok(Some(request)) = read_request(&mut stream, &mut buf, false).await {
                    let bytes = match Head::parse(&request.head).method() == "HEAD" {
                        true => &reply[..heads_len(reply)],
                        false => reply,
                    };
                    if stream.write_all(bytes).await.is_err() || close {
                        return;
                    }
                    reply = later;
                }
            });
        }
    });
    addr
}

/// The length of the heads at the start of `reply`: interim ones and the final one.
pub fn heads_len(reply: &[u8]) -> usize {
    let mut at = 0;
    while let Some(end) = wire::head_end(&reply[at..]) {
        let status = Head::parse(&reply[at..at + end]).status().unwrap_or(0);
        at += end;
        if !(100..200).contains(&status) {
            break;
        }
    }
    at
}
