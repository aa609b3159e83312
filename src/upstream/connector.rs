//! `Connector`: hyper-util's TCP connector with a connect timeout that a reload can change.
//!
//! The pooled client is kept across reloads so that its idle keep-alive connections survive;
//! hyper-util fixes an `HttpConnector`'s timeout when the client is built, so the timeout is
//! applied here instead, read from an atomic that the next snapshot updates.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TCP connector whose connect timeout is shared with whoever configures it.
#[derive(Debug, Clone)]
pub struct Connector {
    inner: HttpConnector,
    timeout_ms: Arc<AtomicU64>,
}

impl Connector {
    pub fn new(timeout: Duration) -> Connector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        Connector {
            inner,
            timeout_ms: Arc::new(AtomicU64::new(timeout.as_millis() as u64)),
        }
    }

    /// Applies to connects started from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout").into()),
            }
        })
    }
}
