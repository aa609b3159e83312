//! Waits without progress, timed against a limit: a client that reads nothing of what it is sent
//! ([`WriteWait`], nginx's `send_timeout`: both client paths, `proxy/guard.rs` for hyper's
//! connections and `downstream/h1/stall.rs` for Fulcrum's own), and a backend that sends nothing
//! more of a body (`upstream/relayed.rs`, nginx's `proxy_read_timeout`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long something has waited without progress, against a limit. The timer is made at the
/// first wait only, so what never waits, as almost every response, costs a flag.
#[derive(Debug)]
pub struct Pause {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Pause {
    pub fn new(limit: Duration) -> Pause {
        Pause {
            limit,
            timer: None,
            waiting: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Progress was made: the next wait starts a new count.
    pub fn progressed(&mut self) {
        self.waiting = false;
    }

    /// A wait: whether the limit has passed since it began; if not, `cx` is woken when it does.
    pub fn over(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(Instant::now() + limit);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// How long writes to a client have waited for it to read: a write that makes no progress for
/// the limit fails.
#[derive(Debug)]
pub struct WriteWait(Pause);

impl WriteWait {
    pub fn new(limit: Duration) -> WriteWait {
        WriteWait(Pause::new(limit))
    }

    /// `polled`, a write's or flush's result, with the wait counted: `Pending` until the limit
    /// passes without progress, then an error.
    pub fn count<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if self.0.over(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response for client_idle",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.0.progressed();
                ready
            }
        }
    }
}
