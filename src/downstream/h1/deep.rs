//! Connections idle for a while leave tokio's registry for an epoll set of the server's own.
//!
//! A parked connection still holds tokio's registration: 256 bytes (cache-line aligned) and, in
//! glibc, the fragments an aligned allocation leaves. That is most of what an idle keep-alive
//! connection costs. One that stays parked across two sweeps (`roster.rs`), so idle for 0.1 to
//! 0.2 s or more, is sunk: its socket is taken out of tokio's registry and put in this epoll set,
//! which costs it nothing in user memory; when it becomes readable it is put back and served as
//! before. Sinking and surfacing are a few system calls (four `epoll_ctl`), paid only by
//! connections that have been idle: a busy connection is never parked at two sweeps running.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Weak;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::super::Shared;

/// Events taken from the set at a time.
const EVENTS: usize = 256;
/// How often the waiting task checks that the server is still there.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The epoll set, registered with tokio so a task can wait for its events.
pub(in crate::downstream) type Set = AsyncFd<Poll>;

/// Creates the epoll set: the handle that adds and removes sockets, and the set itself, to be
/// watched by [`surface`]. Must be called within the runtime.
pub(super) fn open() -> io::Result<(Registry, Set)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    // Deprecated for types whose descriptor may change or close under tokio (tokio#8587); a
    // `Poll` owns its epoll descriptor, unchanged, until it is dropped with the `AsyncFd`.
    #[allow(deprecated)]
    let set = AsyncFd::new(poll)?;
    Ok((registry, set))
}

/// Adds a sunk connection's socket, known by its roster slot.
pub(super) fn sink(registry: &Registry, socket: &impl AsRawFd, slot: usize) -> io::Result<()> {
    registry.register(
        &mut SourceFd(&socket.as_raw_fd()),
        Token(slot),
        Interest::READABLE,
    )
}

/// Removes a socket before it goes back to tokio.
pub(super) fn unsink(registry: &Registry, socket: &impl AsRawFd) -> io::Result<()> {
    registry.deregister(&mut SourceFd(&socket.as_raw_fd()))
}

/// Brings back the sunk connections that became readable, until the server is gone.
pub(in crate::downstream) async fn surface(shared: Weak<Shared>, mut set: Set) {
    let mut events = Events::with_capacity(EVENTS);
    loop {
        // Woken now and then without events too, to notice a server that is gone.
        let Ok(ready) = tokio::time::timeout(LOOK_AGAIN, set.readable_mut()).await else {
            if shared.strong_count() == 0 {
                return;
            }
            continue;
        };
        let Ok(mut ready) = ready else {
            return;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        loop {
            // Never blocks: the set said it has events.
            if let Err(error) = ready
                .get_inner_mut()
                .poll(&mut events, Some(Duration::ZERO))
            {
                warn!(%error, "reading the idle connections' events");
            }
            if events.is_empty() {
                ready.clear_ready();
                break;
            }
            for event in events.iter() {
                shared.roster.surface(event.token().0);
            }
        }
    }
}
