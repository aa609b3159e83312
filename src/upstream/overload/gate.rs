//! A pool's gate: where a request gets a slot on a backend, or waits for one in the pool's queue,
//! or is shed. One per pool name, shared by the snapshots before and after a reload, so that
//! its queue and counts survive one.
//!
//! # Taking a slot
//! With nobody waiting, a request takes a free slot at once (`Pool::acquire`: the pool's
//! strategy among the backends with one) without the lock. Otherwise it takes the lock, joins
//! the queue (`queue.rs`: priority first, then arrival) and waits; a slot that frees goes to
//! the first waiter that can use it, so a request never overtakes a more important or an older
//! one. A consistent-hash or sticky request can use only its own backend; a retry, none it
//! already tried.
//!
//! # Never a lost wake-up
//! A slot's release (`Backend`'s `InFlight` dropped) decrements the backend's count, then reads
//! `waiting`; a request about to wait increments `waiting`, then looks for a slot once more
//! (under the lock). Both sequentially consistent: either the release sees the waiter and
//! serves the queue, or the waiter sees the freed slot.
//!
//! # Shedding
//! A full queue sheds the newest request of the lowest priority below the arriving one, or, if
//! none is lower, the arriving one; a request still waiting after `queue_timeout` is shed too.
//! Shedding takes the lock for a few pointer moves and allocates nothing. The lock is never held
//! across an await, and nothing is dropped under it that could take it again (a grant whose
//! waiter has gone is released after the lock).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::queue::{Queue, Step};
use crate::config::Priority;
use crate::telemetry::metrics::{Counter, Histogram, HistogramSnapshot};
use crate::upstream::{Backend, InFlight, Pool};

/// Why a request was shed: the `reason` label of `fulcrum_requests_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The queue was full and held nothing less important.
    QueueFull,
    /// A more important request took its place in a full queue.
    Evicted,
    /// It waited `queue_timeout`.
    QueueTimeout,
}

impl ShedReason {
    pub const ALL: [ShedReason; 3] = [
        ShedReason::QueueFull,
        ShedReason::Evicted,
        ShedReason::QueueTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Evicted => "evicted",
            ShedReason::QueueTimeout => "queue_timeout",
        }
    }

    /// As the shed answer's body says it.
    pub fn describe(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue full",
            ShedReason::Evicted => "evicted by a more important request",
            ShedReason::QueueTimeout => "waited too long in the queue",
        }
    }
}

/// What a request needs from a backend: which ones it may use.
#[derive(Debug, Default)]
pub struct Want {
    /// Its consistent-hash key: only the key's backend (or, that one unavailable, its replicas).
    pub key: Option<u64>,
    /// Its sticky-session token: only that backend while it is available.
    pub pinned: Option<u64>,
    /// Backends that already failed it.
    pub tried: Vec<Arc<Backend>>,
}

/// A pool's answer to "a slot for this request, now".
#[derive(Debug)]
pub enum Acquire {
    Got(InFlight),
    /// Every backend it may use is at its limit.
    Full,
    /// The one backend it may use (its sticky or consistent-hash backend) is at its limit.
    Busy(Arc<Backend>),
    /// No backend may take it at all (none available).
    Nothing,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Shed(ShedReason),
    /// No backend is available.
    NoBackend,
    /// A reload removed the pool while the request waited.
    PoolRemoved,
}

/// What a waiting request is told.
#[derive(Debug)]
enum Outcome {
    Granted(InFlight),
    Refused(Refused),
}

#[derive(Debug)]
struct Waiter {
    want: Want,
    /// The one backend it waits for, when it is tied to one: a release elsewhere passes it
    /// over without a lookup.
    target: Option<Arc<Backend>>,
    reply: Option<oneshot::Sender<Outcome>>,
}

#[derive(Debug, Default)]
struct Inner {
    queue: Queue<Waiter>,
    /// The pool in the newest snapshot, whose strategy serves the queue.
    pool: Weak<Pool>,
    /// The pool was removed by a reload: nobody waits any more.
    closed: bool,
}

/// A pool's queue and its counts.
#[derive(Debug, Default)]
pub struct Gate {
    inner: Mutex<Inner>,
    /// Requests waiting; read without the lock by every release.
    waiting: AtomicUsize,
    /// Requests waiting, per priority.
    depth: [AtomicUsize; 4],
    /// Requests shed, per priority and reason.
    shed: [[Counter; 3]; 4],
    /// Time spent waiting, by every request that waited.
    wait: Histogram,
}

impl Gate {
    /// Makes `pool` (of the newest snapshot) the one that serves the queue, binds its backends
    /// to this gate so their releases serve it, and serves it: a reload may have raised limits
    /// or added backends.
    pub fn attach(self: &Arc<Self>, pool: &Arc<Pool>) {
        for (backend, _) in pool.members() {
            backend.join(self);
        }
        let mut unsent = Vec::new();
        {
            let mut inner = self.inner.lock();
            inner.pool = Arc::downgrade(pool);
            inner.closed = false;
            self.serve(&mut inner, pool, None, &mut unsent);
        }
        drop(unsent);
    }

    /// The pool is gone from the config: its waiting requests are answered now.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.pool = Weak::new();
        for (priority, mut waiter) in inner.queue.drain() {
            self.left(priority);
            if let Some(reply) = waiter.reply.take() {
                // Nothing was granted: a failed send drops nothing that takes the lock.
                reply.send(Outcome::Refused(Refused::PoolRemoved)).ok();
            }
        }
    }

    /// A slot on `backend` was released: serves the queue if anyone waits.
    pub fn released(&self, backend: &Backend) {
        self.serve_waiting(Some(backend));
    }

    /// Capacity may have come without a release (a limit raised, a backend available again):
    /// serves the queue if anyone waits.
    pub fn opened(&self) {
        self.serve_waiting(None);
    }

    fn serve_waiting(&self, released: Option<&Backend>) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut unsent = Vec::new();
        {
            let mut inner = self.inner.lock();
            if let Some(pool) = inner.pool.upgrade() {
                self.serve(&mut inner, &pool, released, &mut unsent);
            }
        }
        drop(unsent);
    }

    /// A slot on a backend of `pool` for a request that can use what `want` says, at once: when
    /// nobody waits and one is free (or none could ever be). `None`: the request must [`wait`].
    ///
    /// [`wait`]: Gate::wait
    pub fn admit_now(&self, pool: &Pool, want: &Want) -> Option<Result<InFlight, Refused>> {
        if self.waiting.load(Ordering::SeqCst) != 0 {
            return None;
        }
        match pool.acquire(want) {
            Acquire::Got(in_flight) => Some(Ok(in_flight)),
            Acquire::Nothing => Some(Err(Refused::NoBackend)),
            Acquire::Full | Acquire::Busy(_) => None,
        }
    }

    /// A slot on a backend of `pool` for a request of `priority` that can use what `want`
    /// says, after waiting its turn in the queue; or why not. Also how long it waited.
    pub async fn wait(
        &self,
        pool: &Pool,
        priority: Priority,
        want: Want,
    ) -> (Result<InFlight, Refused>, Duration) {
        let settings = pool.policy().overload;
        let mut unsent = Vec::new();
        let (number, replied) = {
            let mut inner = self.inner.lock();
            // Announced before looking again: see "Never a lost wake-up".
            self.waiting.fetch_add(1, Ordering::SeqCst);
            // A slot free while others wait is theirs first. Where requests are tied to their
            // backends, serving them all would cost a lookup per waiter on every arrival; a
            // slot freed in the instant before is then this request's, if it can use it.
            if !pool.targeted()
                && let Some(current) = inner.pool.upgrade()
            {
                self.serve(&mut inner, &current, None, &mut unsent);
            }
            let mut target = None;
            let early = match pool.acquire(&want) {
                Acquire::Got(in_flight) => Some(Ok(in_flight)),
                Acquire::Nothing => Some(Err(Refused::NoBackend)),
                _ if inner.closed => Some(Err(Refused::PoolRemoved)),
                Acquire::Busy(backend) if inner.queue.len() < settings.queue => {
                    target = Some(backend);
                    None
                }
                Acquire::Full if inner.queue.len() < settings.queue => None,
                Acquire::Full | Acquire::Busy(_) => match inner.queue.evict_below(priority) {
                    Some((lower, mut victim)) => {
                        self.left(lower);
                        self.count_shed(lower, ShedReason::Evicted);
                        if let Some(reply) = victim.reply.take() {
                            reply
                                .send(Outcome::Refused(Refused::Shed(ShedReason::Evicted)))
                                .ok();
                        }
                        None
                    }
                    None => {
                        self.count_shed(priority, ShedReason::QueueFull);
                        Some(Err(Refused::Shed(ShedReason::QueueFull)))
                    }
                },
            };
            if let Some(early) = early {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                drop(inner);
                drop(unsent);
                return (early, Duration::ZERO);
            }
            self.depth[priority.index()].fetch_add(1, Ordering::Relaxed);
            // Made only for a request that waits: a shed one allocates nothing.
            let (reply, replied) = oneshot::channel();
            let waiter = Waiter {
                want,
                target,
                reply: Some(reply),
            };
            (inner.queue.push(priority, waiter), replied)
        };
        drop(unsent);
        let since = Instant::now();
        let mut queued = Queued {
            gate: self,
            priority,
            number,
            replied,
            settled: false,
        };
        let outcome = match tokio::time::timeout(settings.queue_timeout, &mut queued.replied).await
        {
            Ok(Ok(outcome)) => outcome,
            // Every waiter taken out is answered first; this is for completeness.
            Ok(Err(_)) => Outcome::Refused(Refused::PoolRemoved),
            Err(_) => queued.timed_out(),
        };
        queued.settled = true;
        let waited = since.elapsed();
        self.wait.observe(waited);
        let admitted = match outcome {
            Outcome::Granted(in_flight) => Ok(in_flight),
            Outcome::Refused(why) => Err(why),
        };
        (admitted, waited)
    }

    /// Gives free slots to waiters, in order, while there are both; `released` is the backend
    /// whose slot just freed, if that is why. Grants whose waiter went away meanwhile go to
    /// `unsent`, to be released after the lock.
    fn serve(
        &self,
        inner: &mut Inner,
        pool: &Pool,
        released: Option<&Backend>,
        unsent: &mut Vec<InFlight>,
    ) {
        inner.queue.serve(|priority, waiter| {
            // A waiter tied to a backend that is still available and has no free slot (or not
            // the one released) stays, without a lookup.
            if let Some(target) = &waiter.target {
                let elsewhere = released.is_some_and(|b| !std::ptr::eq(b, &**target));
                if (elsewhere || !target.has_free_slot()) && target.health().is_available() {
                    return Step::Keep;
                }
            }
            let outcome = match pool.acquire(&waiter.want) {
                Acquire::Busy(backend) => {
                    waiter.target = Some(backend);
                    return Step::Keep;
                }
                // One excluded from some backends says nothing about those behind it.
                Acquire::Full if !waiter.want.tried.is_empty() => return Step::Keep,
                // No slot for one that may use any: none for those behind it either.
                Acquire::Full => return Step::Stop,
                Acquire::Got(in_flight) => Outcome::Granted(in_flight),
                Acquire::Nothing => Outcome::Refused(Refused::NoBackend),
            };
            self.left(priority);
            if let Some(reply) = waiter.reply.take()
                && let Err(Outcome::Granted(in_flight)) = reply.send(outcome)
            {
                unsent.push(in_flight);
            }
            Step::Remove
        });
    }

    /// A waiter of `priority` left the queue.
    fn left(&self, priority: Priority) {
        self.depth[priority.index()].fetch_sub(1, Ordering::Relaxed);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn count_shed(&self, priority: Priority, reason: ShedReason) {
        self.shed[priority.index()][reason as usize].inc();
    }

    /// Requests waiting now, of `priority`.
    pub fn queued(&self, priority: Priority) -> usize {
        self.depth[priority.index()].load(Ordering::Relaxed)
    }

    /// Requests of `priority` shed for `reason` since the pool was first configured.
    pub fn shed(&self, priority: Priority, reason: ShedReason) -> u64 {
        self.shed[priority.index()][reason as usize].get()
    }

    /// Time spent waiting, of every request that waited.
    pub fn waited(&self) -> HistogramSnapshot {
        self.wait.snapshot()
    }
}

/// A request in the queue; dropped unanswered (its client went away), it leaves the queue.
struct Queued<'g> {
    gate: &'g Gate,
    priority: Priority,
    number: u64,
    replied: oneshot::Receiver<Outcome>,
    settled: bool,
}

impl Queued<'_> {
    /// Takes it out of the queue; false if it was out already (answered meanwhile).
    fn leave(&self) -> bool {
        let removed = self
            .gate
            .inner
            .lock()
            .queue
            .remove(self.priority, self.number)
            .is_some();
        if removed {
            self.gate.left(self.priority);
        }
        removed
    }

    /// Its wait ran out: shed now, unless an answer came at the same moment.
    fn timed_out(&mut self) -> Outcome {
        if self.leave() {
            self.gate
                .count_shed(self.priority, ShedReason::QueueTimeout);
            return Outcome::Refused(Refused::Shed(ShedReason::QueueTimeout));
        }
        self.replied
            .try_recv()
            .unwrap_or(Outcome::Refused(Refused::PoolRemoved))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.leave();
        }
        // A grant already sent is released when `replied` drops, after the lock.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::uri::Authority;

    use super::*;
    use crate::config::{Overload, Strategy};
    use crate::upstream::Policy;

    fn pool(limit: u32, queue: usize) -> Arc<Pool> {
        let backends = (1..=2)
            .map(|port| {
                let address: Authority = format!("127.0.0.1:{port}").parse().unwrap();
                Backend::new(address, 1, true)
            })
            .collect();
        let policy = Policy {
            overload: Overload {
                max_in_flight: limit,
                queue,
                queue_timeout: Duration::from_secs(30),
                ..Overload::default()
            },
            ..Policy::default()
        };
        let pool = Arc::new(Pool::new(
            "p",
            Strategy::LeastConnections,
            backends,
            Vec::new(),
            policy,
        ));
        pool.gate().attach(&pool);
        pool
    }

    async fn admit(pool: &Pool, priority: Priority) -> Result<InFlight, Refused> {
        let gate = pool.gate();
        match gate.admit_now(pool, &Want::default()) {
            Some(now) => now,
            None => gate.wait(pool, priority, Want::default()).await.0,
        }
    }

    /// Many requests racing for few slots on two threads: each gets one in the end (no wake-up
    /// is lost), and no backend ever holds more than its limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_requests_all_get_a_slot_within_the_limits() {
        let pool = pool(2, 10_000);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..2000 {
            let pool = Arc::clone(&pool);
            tasks.spawn(async move {
                let priority = Priority::ALL[i % 4];
                let in_flight = admit(&pool, priority).await.expect("a slot, in the end");
                assert!(in_flight.backend().in_flight() <= 2, "over the limit");
                tokio::task::yield_now().await;
                drop(in_flight);
            });
        }
        let all = async {
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("no request waits forever");
        assert_eq!(pool.gate().waiting.load(Ordering::SeqCst), 0);
        for priority in Priority::ALL {
            assert_eq!(pool.gate().queued(priority), 0);
        }
        for (backend, _) in pool.members() {
            assert_eq!(backend.in_flight(), 0);
        }
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_the_queue() {
        let pool = pool(1, 10);
        let _a = admit(&pool, Priority::Normal).await.unwrap();
        let _b = admit(&pool, Priority::Normal).await.unwrap();
        let gate = Arc::clone(pool.gate());
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { admit(&pool, Priority::High).await.is_ok() })
        };
        while gate.queued(Priority::High) == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        assert!(waiting.await.is_err(), "aborted");
        assert_eq!(gate.queued(Priority::High), 0);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_answers_its_waiters() {
        let pool = pool(1, 10);
        let _slots = [
            admit(&pool, Priority::Normal).await.unwrap(),
            admit(&pool, Priority::Normal).await.unwrap(),
        ];
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { admit(&pool, Priority::Low).await.err() })
        };
        while pool.gate().queued(Priority::Low) == 0 {
            tokio::task::yield_now().await;
        }
        pool.gate().close();
        assert_eq!(waiting.await.unwrap(), Some(Refused::PoolRemoved));
    }
}
