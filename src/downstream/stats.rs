//! A listener's counts: client connections open now, accepted and refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A listener's client connections: open now, and accepted in all.
#[derive(Debug)]
pub struct ListenerStats {
    address: String,
    open: AtomicI64,
    accepted: crate::telemetry::metrics::Counter,
    /// Connections closed at once because a connection limit was reached.
    pub(super) rejected: crate::telemetry::metrics::Counter,
}

impl ListenerStats {
    pub(super) fn new(address: SocketAddr) -> ListenerStats {
        ListenerStats {
            address: address.to_string(),
            open: AtomicI64::new(0),
            accepted: Default::default(),
            rejected: Default::default(),
        }
    }

    /// The bound address, the `listener` label.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.get()
    }

    /// Counts a connection as open until the guard drops.
    pub(super) fn opened(self: &Arc<Self>) -> OpenConnection {
        self.accepted.inc();
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }
}

/// One open client connection of a listener.
pub(super) struct OpenConnection(Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
