//! The proxy's clock: one reading per poll of a connection's task, and a monotonic millisecond
//! clock that fits in an atomic.
//!
//! A request on Fulcrum's own connection reads the time several times (its start, the backend
//! connection's idle age and response deadline, the connection's return to the pool, its answer,
//! the client's idle deadline), and each reading costs a `clock_gettime` (a `rdtsc` that is slow
//! in a VM). They happen in two or three polls of the connection's task, microseconds each, so a
//! task wrapped in [`Fresh`] reads the clock once per poll and [`now`] gives that reading, as
//! nginx and HAProxy update their clock once per event-loop turn. Outside such a task, [`now`]
//! reads the clock.
//!
//! Deadlines kept in backends' atomics (ejection ends) are milliseconds since the first call in
//! this process. It reads `tokio::time::Instant`, so tests with paused time can move it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// This poll's reading, while a [`Fresh`] task is polled.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// No [`Fresh`] task is being polled: every `now` reads the clock.
    Outside,
    /// A [`Fresh`] task is being polled and has not read the clock yet.
    Unread,
    Read(Instant),
}

thread_local! {
    static THIS_POLL: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// The time: this poll's reading inside a [`Fresh`] task, else the clock's.
pub fn now() -> Instant {
    THIS_POLL.with(|this| match this.get() {
        Reading::Read(now) => now,
        Reading::Outside => Instant::now(),
        Reading::Unread => {
            let now = Instant::now();
            this.set(Reading::Read(now));
            now
        }
    })
}

pin_project_lite::pin_project! {
    /// A task whose clock readings within one poll are one: everything a poll does happens
    /// within microseconds (tokio's budget makes a busy task yield), far below any timeout.
    pub struct Fresh<F> {
        #[pin]
        task: F,
    }
}

impl<F> Fresh<F> {
    pub fn new(task: F) -> Fresh<F> {
        Fresh { task }
    }
}

impl<F: Future> Future for Fresh<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = THIS_POLL.with(|this| this.replace(Reading::Unread));
        let polled = self.project().task.poll(cx);
        THIS_POLL.with(|this| this.set(outer));
        polled
    }
}

/// hyper's executor for the tasks it spawns (an HTTP/2 connection's streams), each one
/// [`Fresh`]: a stream's request reads the clock as often as one on Fulcrum's own connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshExecutor;

impl<F> hyper::rt::Executor<F> for FreshExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        drop(tokio::spawn(Fresh::new(task)));
    }
}

/// Milliseconds since the process's clock epoch; never 0, so 0 can mean "no deadline".
pub fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    now().saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// `now_ms()` plus `duration`.
pub fn after_ms(duration: Duration) -> u64 {
    now_ms().saturating_add(duration.as_millis() as u64)
}

/// How far `deadline_ms` is from now, or zero when it has passed.
pub fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_task_reads_the_clock_once_per_poll() {
        let (first, same, later) = Fresh::new(async {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            let same = now();
            // Yields: the next poll takes a new reading.
            tokio::task::yield_now().await;
            (first, same, now())
        })
        .await;
        assert_eq!(first, same, "one reading within a poll");
        assert!(later >= first + Duration::from_millis(2));
    }

    #[test]
    fn outside_a_fresh_task_every_call_reads_the_clock() {
        let first = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > first);
    }
}
