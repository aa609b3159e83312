//! One backend: where it is, how much traffic it should get, and what it is doing now.
//!
//! A `Backend` is shared (`Arc`) by the snapshot that lists it and by every request in flight to
//! it, so its counters stay right while a request outlives the snapshot that picked it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::Authority;

use super::connections::Connections;
use super::health::Health;
use super::overload::{Gate, Limit};
use super::tls::UpstreamTls;
use crate::telemetry::metrics::BackendStats;
use arc_swap::ArcSwapOption;

/// A backend server of a pool.
#[derive(Debug)]
pub struct Backend {
    address: Authority,
    /// The address as a socket address, when its host is an IP literal (no lookup needed).
    socket_addr: Option<SocketAddr>,
    connections: Connections,
    weight: AtomicU32,
    in_flight: AtomicUsize,
    served: AtomicU64,
    health: Health,
    stats: BackendStats,
    /// TLS settings for an `https://` backend; changed by reloads.
    tls: ArcSwapOption<UpstreamTls>,
    /// Spoken to in HTTP/2 (its pool's `protocol`).
    http2: AtomicBool,
    /// How many requests it takes at once (`[pool.NAME.overload]`).
    limit: Limit,
    /// Its pool's gate, told when a slot frees (`overload/gate.rs`).
    gate: OnceLock<Arc<Gate>>,
}

impl Backend {
    /// A backend at `address` (`host:port`) with a selection weight of at least 1, healthy
    /// from the start unless `start_healthy` is false (it must then pass a health check first).
    pub fn new(address: Authority, weight: u32, start_healthy: bool) -> Arc<Backend> {
        let socket_addr = address
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .zip(address.port_u16())
            .map(|(ip, port)| SocketAddr::new(ip, port));
        let health = Health::new(start_healthy);
        Arc::new(Backend {
            stats: BackendStats::new(health.state()),
            socket_addr,
            connections: Connections::default(),
            address,
            weight: AtomicU32::new(weight.max(1)),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            health,
            tls: ArcSwapOption::empty(),
            http2: AtomicBool::new(false),
            limit: Limit::default(),
            gate: OnceLock::new(),
        })
    }

    /// Its health inputs and state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What it has served, how fast, and what happened to it.
    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    /// `host:port`, as written in the config.
    pub fn address(&self) -> &Authority {
        &self.address
    }

    /// The address as a socket address, when it needs no name lookup.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.socket_addr
    }

    /// Its idle keep-alive connections.
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// TLS settings, for an `https://` backend.
    pub fn tls(&self) -> Option<Arc<UpstreamTls>> {
        self.tls.load_full()
    }

    /// Sets how to reach it over TLS (or not); idle connections made otherwise are dropped.
    pub fn set_tls(&self, tls: Option<Arc<UpstreamTls>>) {
        let same = match (self.tls.load().as_deref(), tls.as_deref()) {
            (None, None) => true,
            (Some(before), Some(after)) => before.verifies_as(after),
            _ => false,
        };
        self.tls.store(tls);
        if !same {
            // Connections verified for another name or against other roots (or not at all)
            // are not reused: a CA taken out of `ca` must stop being trusted at once.
            self.connections.clear();
        }
    }

    /// Whether it is spoken to in HTTP/2.
    pub fn http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Sets the protocol it is spoken to in; idle connections in the other are dropped.
    pub fn set_http2(&self, http2: bool) {
        if self.http2.swap(http2, Ordering::Relaxed) != http2 {
            self.connections.clear();
        }
    }

    /// Selection weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight a reload gave it; balancers built from now on use it.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Requests forwarded to this backend that have not finished (response body included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests this backend has been given since it was created.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard is dropped, whatever its limit.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// [`Backend::start_request`] if it is below its limit.
    pub fn try_start_request(self: &Arc<Self>) -> Option<InFlight> {
        let limit = self.limit.get();
        if limit == 0 {
            return Some(self.start_request());
        }
        let mut now = self.in_flight.load(Ordering::SeqCst);
        loop {
            if now >= limit as usize {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(Arc::clone(self)))
    }

    /// Whether it is below its limit now.
    pub fn has_free_slot(&self) -> bool {
        // Sequentially consistent, as the gate's protocol needs: see `overload/gate.rs`.
        self.limit.admits(self.in_flight.load(Ordering::SeqCst))
    }

    /// Its limit on requests at once.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// A response head came `latency` after the request was sent, with `in_flight` requests at
    /// it: an adaptive limit learns from it, and a raised one lets queued requests go.
    pub fn record_latency(&self, latency: Duration, in_flight: usize) {
        if self.limit.record(latency, in_flight)
            && let Some(gate) = self.gate.get()
        {
            gate.opened();
        }
    }

    /// Makes `gate` the one its released slots are reported to (its pool's, for its lifetime).
    pub(super) fn join(&self, gate: &Arc<Gate>) {
        self.gate.get_or_init(|| Arc::clone(gate));
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address, f)
    }
}

/// One request in flight to a backend. Dropping it, on success, error or cancellation alike, ends
/// the count, so the count cannot leak.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// The backend this request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Sequentially consistent, then the gate reads who waits: see `overload/gate.rs`.
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(gate) = self.0.gate.get() {
            gate.released(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_guards_alive() {
        let backend = Backend::new(Authority::from_static("127.0.0.1:1"), 1, true);
        let first = backend.start_request();
        let second = backend.start_request();
        assert_eq!(backend.in_flight(), 2);
        drop(first);
        assert_eq!(backend.in_flight(), 1);
        drop(second);
        assert_eq!(backend.in_flight(), 0);
        assert_eq!(
            backend.served(),
            2,
            "served counts every request ever started"
        );
    }

    #[test]
    fn ip_literal_addresses_need_no_lookup() {
        let v4 = Backend::new(Authority::from_static("127.0.0.1:9001"), 1, true);
        assert_eq!(v4.socket_addr(), Some("127.0.0.1:9001".parse().unwrap()));
        let v6 = Backend::new(Authority::from_static("[::1]:9001"), 1, true);
        assert_eq!(v6.socket_addr(), Some("[::1]:9001".parse().unwrap()));
        let named = Backend::new(Authority::from_static("localhost:9001"), 1, true);
        assert_eq!(named.socket_addr(), None);
    }

    #[tokio::test]
    async fn cancelled_request_releases_its_count() {
        let backend = Backend::new(Authority::from_static("127.0.0.1:1"), 1, true);
        let guard = backend.start_request();
        let task = tokio::spawn(async move {
            let _held = guard;
            std::future::pending::<()>().await;
        });
        task.abort();
        let _ = task.await;
        assert_eq!(
            backend.in_flight(),
            0,
            "an aborted request must not leak its count"
        );
    }
}
