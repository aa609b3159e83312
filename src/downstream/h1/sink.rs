//! Connections idle for a while leave tokio's registry for an epoll set of the server's own,
//! watched by a thread of its own.
//!
//! A parked connection still holds tokio's registration: 256 bytes (cache-line aligned) and, in
//! glibc, the fragments an aligned allocation leaves. That is most of what an idle keep-alive
//! connection costs. One that stays parked across two sweeps (`roster.rs`), so idle for 0.1 to
//! 0.2 s or more, is sunk: its socket is taken out of tokio's registry and put in this epoll set,
//! which costs it nothing in user memory; when it becomes readable it is put back and served as
//! before. Sinking and surfacing are a few system calls (four `epoll_ctl`), paid only by
//! connections that have been idle: a busy connection is never parked at two sweeps running.
//!
//! The set is waited on by a plain thread blocked in `epoll_wait` (mio's `Poll`), not by a
//! tokio task: registering an epoll descriptor with tokio takes `AsyncFd::register`, which is
//! `unsafe` (tokio#8587), and this crate takes unsafe code only for a measured win that needs it;
//! the thread costs nothing per connection. The thread enters the runtime to hand a woken
//! connection back to it.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Weak;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tracing::warn;

use super::super::Shared;

/// Events taken from the set at a time.
const EVENTS: usize = 256;
/// How often the thread checks that the server is still there.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Creates the epoll set and the thread that waits on it; returns the handle that adds and
/// removes sockets. The thread brings back readable connections through `shared`'s roster
/// until the server is gone. Must be called within the runtime.
pub(super) fn open(shared: Weak<Shared>) -> io::Result<Registry> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("fulcrum-idle".into())
        .spawn(move || {
            let _entered = runtime.enter();
            watch(poll, shared);
        })?;
    Ok(registry)
}

/// Waits for sunk connections to become readable and brings them back, until the server is
/// gone.
fn watch(mut poll: Poll, shared: Weak<Shared>) {
    let mut events = Events::with_capacity(EVENTS);
    loop {
        if let Err(error) = poll.poll(&mut events, Some(LOOK_AGAIN)) {
            if error.kind() != io::ErrorKind::Interrupted {
                warn!(%error, "waiting for idle connections' events");
                std::thread::sleep(LOOK_AGAIN);
            }
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for event in events.iter() {
            shared.roster.surface(event.token().0);
        }
    }
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
