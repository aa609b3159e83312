//! A route's `mirror`: copies of a share of its requests sent to another pool, their answers
//! read and dropped, as nginx's `mirror` and Envoy's `request_mirror_policies` do.
//!
//! A mirror never delays or fails the request it copies. It is sent from a task of its own,
//! after the real request's body has been sent whole; a body larger than [`REPLAY_LIMIT`]
//! (64 KiB, the same bound as a retry's copy) is not mirrored, nor is a request whose body the
//! real attempt did not send to its end. At most [`MAX_IN_FLIGHT`] copies are under way to one
//! pool: beyond, a copy is dropped and counted (`fulcrum_mirror_dropped_total{pool}`), so a slow
//! shadow pool costs a bounded number of connections. A copy waiting for the real body holds no
//! place: there is one such wait per real request at most. Mirrors are not retried and
//! count for nothing in the shadow backends' health.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tracing::debug;

use crate::body::{REPLAY_LIMIT, RequestBody};
use crate::telemetry::metrics::PoolStats;
use crate::upstream::exchange::{self, Answer};
use crate::upstream::head::Head;
use crate::upstream::overload::Want;
use crate::upstream::{Client, InFlight, Pool};

/// Most mirrored requests under way to one pool.
pub const MAX_IN_FLIGHT: usize = 32;

/// A route's mirror: the pool copies go to, and the share of requests copied.
#[derive(Debug)]
pub struct Mirror {
    pool: Arc<Pool>,
    per_million: u32,
}

/// The body of a copy: at hand, or coming once the real request has sent it.
#[derive(Debug)]
pub enum Duplicate {
    Ready(RequestBody),
    Tapped(oneshot::Receiver<RequestBody>),
}

impl Duplicate {
    /// The copy of `body`, unless it is known to be too large to mirror.
    pub fn of(body: &mut RequestBody) -> Option<Duplicate> {
        use hyper::body::Body;
        if body.size_hint().lower() > REPLAY_LIMIT as u64 {
            return None;
        }
        match body.try_clone() {
            Some(copy) => Some(Duplicate::Ready(copy)),
            None => body.tap().map(Duplicate::Tapped),
        }
    }
}

impl Mirror {
    pub fn new(pool: Arc<Pool>, per_million: u32) -> Mirror {
        Mirror { pool, per_million }
    }

    /// The pool copies go to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The share of requests copied, in millionths.
    pub fn per_million(&self) -> u32 {
        self.per_million
    }

    /// Whether this request is one of the share copied.
    pub fn sampled(&self) -> bool {
        self.per_million >= 1_000_000 || fastrand::u32(0..1_000_000) < self.per_million
    }

    /// Sends a copy of the request (`head` as the real backend receives it, and its `body`),
    /// waiting at most `timeout` for the answer once sent; or drops it when the pool has too
    /// many under way.
    pub(crate) fn send(&self, client: &Client, head: Head, body: Duplicate, timeout: Duration) {
        let pool = Arc::clone(&self.pool);
        let client = client.clone();
        tokio::spawn(async move {
            let body = match body {
                Duplicate::Ready(body) => body,
                // Not sent whole within the limit by the real attempt: nothing to copy.
                Duplicate::Tapped(tapped) => match tapped.await {
                    Ok(body) => body,
                    Err(_) => return,
                },
            };
            // Counted once the copy is ready to go: a client's slow upload holds no slot.
            let Some(_slot) = Slot::take(&pool) else {
                pool.stats().mirrors_dropped.inc();
                return;
            };
            let sent = tokio::time::timeout(timeout, copy(&pool, &client, head, body, timeout));
            let why = match sent.await {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(why),
                Err(_) => Some("timed out"),
            };
            if let Some(why) = why {
                debug!(pool = %pool.name(), why, "mirrored request not answered");
            }
        });
    }
}

/// One of a pool's [`MAX_IN_FLIGHT`] places for a copy under way, given back when dropped,
/// however the copy ends.
struct Slot(Arc<PoolStats>);

impl Slot {
    fn take(pool: &Pool) -> Option<Slot> {
        let stats = pool.stats();
        if stats.mirrors_in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            stats.mirrors_in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(Arc::clone(stats)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one copy and reads its answer to the end.
async fn copy(
    pool: &Pool,
    client: &Client,
    head: Head,
    body: RequestBody,
    timeout: Duration,
) -> Result<(), &'static str> {
    let Some(in_flight) = slot(pool) else {
        pool.stats().mirrors_dropped.inc();
        return Err("no backend available");
    };
    let backend = Arc::clone(in_flight.backend());
    let request = head.into_request(body);
    match exchange::exchange(client, &backend, request, None, false, timeout).await {
        Ok(Answer::Response(response)) => {
            response
                .into_body()
                .collect()
                .await
                .map_err(|_| "body failed")?;
            Ok(())
        }
        Ok(Answer::Switched(..)) => Err("switched protocols"),
        Err(_) => Err("exchange failed"),
    }
}

/// A backend of `pool` for a copy, counted in flight: only one free now, never a queue.
fn slot(pool: &Pool) -> Option<InFlight> {
    if pool.limited() {
        let want = Want {
            key: None,
            pinned: None,
            tried: Vec::new(),
        };
        return pool.gate().admit_now(pool, &want)?.ok();
    }
    pool.pick(&[], None).map(|backend| backend.start_request())
}
