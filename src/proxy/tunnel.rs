//! Upgrades (WebSocket, and any other HTTP/1.1 `Upgrade`): the request's `Upgrade` is forwarded,
//! the backend's 101 relayed, and then bytes are bridged both ways until either side closes, or
//! neither sends anything for `client_idle`.
//!
//! A tunnel belongs to no request and no server connection once it is up, so open tunnels are
//! counted here: a reload leaves them alone, and shutdown waits for them up to its grace period.
//!
//! The upgrade request's access log line is written when the tunnel closes, as nginx and HAProxy
//! write theirs: its duration is the tunnel's life and its byte counts what crossed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Version, header};
use tokio::sync::{Notify, oneshot};
use tracing::debug;

use crate::body::upgrade::OnUpgrade;
use crate::clock;
use crate::telemetry::access::{AccessLog, Entry};
use crate::upstream::InFlight;
use crate::upstream::h1;

/// Where the upgrade request's access log entry is handed to its tunnel, once the 101 is answered.
pub type LogLater = oneshot::Receiver<(Box<Entry>, AccessLog)>;

/// The open tunnels.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: AtomicUsize,
    closed: Notify,
}

impl Tunnels {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Resolves once no tunnel is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// The protocol a request asks to upgrade to, when it is an HTTP/1.1 upgrade request
/// (`Connection: upgrade` and `Upgrade: ...`, RFC 9110 section 7.8).
///
/// `h2c` is never passed on: it upgrades the client's connection to the proxy, not a backend's,
/// and a backend that took it would serve HTTP/2 requests that no route, limit or forwarding
/// header ever saw (h2c smuggling). Like Envoy, Fulcrum drops the token and serves the request
/// as it is; other protocols offered beside it still upgrade.
pub fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let mut lines = headers.get_all(header::UPGRADE).iter();
    let first = lines.next()?;
    let is_h2c = |token: &str| token.trim().eq_ignore_ascii_case("h2c");
    let text = first.to_str().ok()?;
    if lines.next().is_none() && !text.split(',').any(is_h2c) {
        return Some(first.clone());
    }
    // Several lines are one list (RFC 9110 section 5.3), h2c taken out of it.
    let mut others: Vec<&str> = Vec::new();
    for line in headers.get_all(header::UPGRADE) {
        let tokens = line.to_str().ok()?.split(',').map(str::trim);
        others.extend(tokens.filter(|token| !token.is_empty() && !is_h2c(token)));
    }
    HeaderValue::from_str(&others.join(", "))
        .ok()
        .filter(|v| !v.is_empty())
}

/// Puts back the upgrade headers that hop-by-hop removal took out.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Bridges the client's and the backend's upgraded connections once both are ready, in a task of
/// its own; `held` counts the tunnel against its backend until it closes (the client's connection
/// counts as open as long as its stream lives). `log` brings the upgrade request's access log entry, finished at the close.
pub fn bridge(
    tunnels: &Arc<Tunnels>,
    (client, backend): (OnUpgrade, Box<h1::Connection>),
    held: InFlight,
    idle: Duration,
    log: Option<LogLater>,
) {
    tunnels.open.fetch_add(1, Ordering::Relaxed);
    let tunnels = Arc::clone(tunnels);
    tokio::spawn(async move {
        let _held = held;
        let mut crossed = (0, 0);
        match client.wait().await {
            Some(client) => {
                let activity = Arc::new(AtomicU64::new(clock::now_ms()));
                let mut client = Touched::new(client, &activity);
                let mut backend = Touched::new(backend, &activity);
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                        if let Err(error) = copied {
                            debug!(%error, "tunnel ended with an error");
                        }
                    }
                    () = quiet_for(&activity, idle) => debug!(?idle, "tunnel idle: closed"),
                }
                crossed = (client.read, backend.read);
            }
            None => debug!("upgrade failed: the client's connection was not handed over"),
        }
        if let Some(log) = log
            && let Ok((mut entry, log)) = log.await
        {
            let (from_client, from_backend) = crossed;
            entry.add_received(from_client);
            entry.add_sent(from_backend);
            log.write(entry.line(log.format()));
        }
        if tunnels.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            tunnels.closed.notify_waiters();
        }
    });
}

/// Resolves once nothing has moved for `idle`.
async fn quiet_for(activity: &AtomicU64, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let last = activity.load(Ordering::Relaxed);
        let now = clock::now_ms();
        if now >= last + idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(last + idle_ms - now)).await;
    }
}

/// A stream that notes when bytes last moved through it, and counts the bytes read from it.
struct Touched<S> {
    stream: S,
    activity: Arc<AtomicU64>,
    read: u64,
}

impl<S> Touched<S> {
    fn new(stream: S, activity: &Arc<AtomicU64>) -> Touched<S> {
        Touched {
            stream,
            activity: Arc::clone(activity),
            read: 0,
        }
    }

    fn touch(&self) {
        self.activity.store(clock::now_ms(), Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Touched<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.stream).poll_read(cx, buf);
        if polled.is_ready() {
            this.touch();
            this.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Touched<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(upgrade: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_str(upgrade).unwrap());
        headers
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade_and_http_1_1() {
        let headers = asking("websocket");
        assert_eq!(requested(Version::HTTP_11, &headers).unwrap(), "websocket");
        assert_eq!(requested(Version::HTTP_10, &headers), None);
        let mut without = headers.clone();
        without.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(requested(Version::HTTP_11, &without), None);
    }

    #[test]
    fn h2c_is_never_requested_of_a_backend() {
        assert_eq!(requested(Version::HTTP_11, &asking("h2c")), None);
        assert_eq!(requested(Version::HTTP_11, &asking(" H2C ")), None);
        assert_eq!(
            requested(Version::HTTP_11, &asking("h2c, websocket")).unwrap(),
            "websocket"
        );
        assert_eq!(
            requested(Version::HTTP_11, &asking("foo/2, h2c,bar")).unwrap(),
            "foo/2, bar"
        );
        let mut two_lines = asking("h2c");
        two_lines.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            requested(Version::HTTP_11, &two_lines).unwrap(),
            "websocket",
            "several Upgrade lines are one list"
        );
    }
}
