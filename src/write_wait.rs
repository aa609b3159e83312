//! How long writes to a client have waited for it to read: a client that reads nothing of what
//! it is sent for a limit (`client_idle`) is given up on, as nginx's `send_timeout` does. Used by
//! both client paths: `guard.rs` (hyper's connections) and `server/h1/stall.rs` (Fulcrum's own).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long writes to a client have waited for it to read, against a limit: a write that makes
/// no progress for the limit fails. The timer is made at the first wait only, so a response that
/// goes out at once, as almost all do, costs a flag.
#[derive(Debug)]
pub struct WriteWait {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl WriteWait {
    pub fn new(limit: Duration) -> WriteWait {
        WriteWait {
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// A write made progress: the next wait starts a new count.
    pub fn progressed(&mut self) {
        self.waiting = false;
    }

    /// A write has to wait: `Pending` until the limit passes without progress, then an error.
    pub fn waited<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(Instant::now() + limit);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response for client_idle",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `polled`, a write's or flush's result, with the wait counted.
    pub fn count<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.waited(cx),
            ready => {
                self.progressed();
                ready
            }
        }
    }
}
