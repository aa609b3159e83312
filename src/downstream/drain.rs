//! Finishing hyper's HTTP/2 connections gracefully: HTTP/1 closes once the response in progress is
//! done, HTTP/2 sends GOAWAY and closes once its streams are done. Every connection is asked on
//! shutdown, which waits until all have ended; an HTTP/2 connection idle for `client_idle` is
//! asked on its own, so its client is told with a GOAWAY rather than a bare close (RFC 9113
//! section 9.1), as nginx and Envoy tell it.
//!
//! hyper-util's `GracefulShutdown` does the first for any connection, but only for hyper's own
//! connection types (its trait is sealed), so it cannot be told of idleness: this is the same
//! mechanism, a `watch` channel whose receivers are the connections still open, plus that.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;

use tokio::sync::watch;

use crate::proxy::guard::Watch;

/// The signal that shutdown has started, and the count of connections yet to end.
pub(super) struct Drain {
    started: watch::Sender<()>,
}

impl Drain {
    pub(super) fn new() -> Drain {
        Drain {
            started: watch::channel(()).0,
        }
    }

    /// Connections not yet ended.
    pub(super) fn count(&self) -> usize {
        self.started.receiver_count()
    }

    /// Asks every connection to finish, and resolves once all have ended.
    pub(super) async fn shutdown(self) {
        // No receiver: no connection to wait for.
        self.started.send(()).ok();
        self.started.closed().await;
    }

    /// Serves `connection` to its end, asking it to finish gracefully (`finish`) once shutdown
    /// starts or `watch` says it has idled out.
    ///
    /// Boxed, once per connection: as an opaque type, its `Send` would have to hold for every
    /// lifetime of the borrows it holds across awaits, which rustc cannot prove of hyper's
    /// connection (rust-lang/rust#110338).
    pub(super) fn serve<C, F>(
        &self,
        connection: C,
        watch: Arc<Watch>,
        finish: F,
    ) -> Pin<Box<dyn Future<Output = C::Output> + Send>>
    where
        C: Future + Send + 'static,
        F: Fn(Pin<&mut C>) + Send + 'static,
    {
        let mut started = self.started.subscribe();
        Box::pin(async move {
            let mut connection = pin!(connection);
            let mut idled = pin!(watch.idled_out());
            let mut finishing = false;
            loop {
                tokio::select! {
                    // The connection first: the signals are seldom ready.
                    biased;
                    ended = connection.as_mut() => return ended,
                    // A closed channel (the server dropped) is a shutdown too.
                    _ = started.changed(), if !finishing => {
                        finishing = true;
                        finish(connection.as_mut());
                    }
                    () = &mut idled, if !finishing => {
                        finishing = true;
                        finish(connection.as_mut());
                    }
                }
            }
        })
    }
}
