//! A connection of Fulcrum's own HTTP/1.1 server, as it lives between requests: parked, with no
//! task.
//!
//! A connection with nothing to read gives up its task. Its socket stays registered with tokio,
//! whose readiness now wakes the connection's [`Home`] instead of a task, and that wake spawns a
//! task to serve what arrived. An idle keep-alive connection so costs its `Home` and tokio's
//! registration, a few hundred bytes, and no timer: the roster's sweep (`roster.rs`) closes it
//! when its deadline passes, and, once it has been idle a while, moves its socket out of
//! tokio's registry (`deep.rs`), leaving only the `Home`.
//!
//! Before it parks, the task lingers: it waits for the next request itself until a sweep has
//! seen it waiting twice (one to two sweep pauses), or a drain starts. Under load the next
//! request comes long before that, and is served without spawning a task (an allocation, and
//! the runtime's bookkeeping, per request); a connection that goes quiet parks soon after.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use mio::Registry;
use tokio::net::TcpStream;
use tracing::debug;

use super::super::Shared;
use super::super::connection::Open;
use super::deep;

/// One connection, known to the roster from accept until it closes or becomes hyper's.
pub(super) struct Home {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    /// Its place in the roster.
    slot: usize,
    place: Mutex<Place>,
}

/// Where a connection is between its bytes.
enum Place {
    /// A task serves it.
    Busy,
    /// Its task waits for its next bytes; a sweep that finds it so twice (`swept`) ends the
    /// wait, as does a drain.
    Lingering { waker: Waker, swept: bool },
    /// A sweep or a drain ended the wait: the task parks it when it next looks.
    LingerOver,
    /// Waiting for bytes without a task.
    Parked(Rest),
}

/// What a connection is made of, moved between its task and its home.
pub(super) struct Parked {
    pub(super) stream: TcpStream,
    /// Held until the connection ends: it counts as open.
    pub(super) open: Open,
    /// When it closes if no request comes (`clock::now_ms`).
    pub(super) deadline_ms: u64,
    /// Whether a request has been served on it: a connection that comes back for more is
    /// worth a task that lingers for its next request.
    pub(super) served: bool,
}

/// A parked connection.
struct Rest {
    socket: Socket,
    open: Open,
    deadline_ms: u64,
    served: bool,
    /// A sweep has found it parked: the next one sinks it.
    swept: bool,
}

/// A parked connection's socket.
enum Socket {
    /// Registered with tokio, which wakes the home.
    Registered(TcpStream),
    /// In the server's own epoll set (`deep.rs`).
    Sunk(std::net::TcpStream),
}

impl Home {
    pub(super) fn new(shared: Arc<Shared>, peer: SocketAddr, slot: usize) -> Home {
        Home {
            shared,
            peer,
            slot,
            place: Mutex::new(Place::Busy),
        }
    }

    /// The task waits on, woken by `waker`, unless a sweep or a drain has ended its wait.
    pub(super) fn linger(&self, waker: &Waker) -> bool {
        let mut place = self.lock();
        match &mut *place {
            _ if self.shared.roster.draining() => {
                *place = Place::Busy;
                false
            }
            Place::Busy => {
                *place = Place::Lingering {
                    waker: waker.clone(),
                    swept: false,
                };
                true
            }
            Place::Lingering { waker: kept, .. } => {
                kept.clone_from(waker);
                true
            }
            Place::LingerOver | Place::Parked(_) => {
                *place = Place::Busy;
                false
            }
        }
    }

    /// The task's wait is over: its bytes came.
    pub(super) fn busy(&self) {
        *self.lock() = Place::Busy;
    }

    /// Ends a lingering task's wait; wakes it to park.
    fn end_linger(&self, mut place: MutexGuard<'_, Place>) {
        match std::mem::replace(&mut *place, Place::LingerOver) {
            Place::Lingering { waker, .. } => {
                drop(place);
                waker.wake();
            }
            other => *place = other,
        }
    }

    /// Waits for the connection's next bytes without a task; if some have come already, serves
    /// them at once. A draining server closes it instead.
    pub(super) fn park(self: &Arc<Self>, connection: Parked) {
        // Checked under the lock, so a drain that starts now finds it parked.
        let mut place = self.lock();
        if self.shared.roster.draining() {
            *place = Place::Busy;
            drop(place);
            drop(connection);
            return self.leave();
        }
        let waker = Waker::from(Arc::clone(self));
        match connection
            .stream
            .poll_read_ready(&mut Context::from_waker(&waker))
        {
            Poll::Pending => {
                *place = Place::Parked(Rest {
                    socket: Socket::Registered(connection.stream),
                    open: connection.open,
                    deadline_ms: connection.deadline_ms,
                    served: connection.served,
                    swept: false,
                });
            }
            // Bytes (or the end) arrived since the last read.
            Poll::Ready(_) => {
                *place = Place::Busy;
                drop(place);
                self.run(connection);
            }
        }
    }

    /// A sweep's first look, under the roster's lock, so cheap: whether the connection is parked
    /// past its deadline, or parked since the last sweep and still with tokio (and `sinking`), or
    /// lingering since the last sweep. Marks one found parked or lingering for the first time. A
    /// busy lock means it is neither.
    pub(super) fn needs_sweep(&self, now_ms: u64, sinking: bool) -> bool {
        let Ok(mut place) = self.place.try_lock() else {
            return false;
        };
        let rest = match &mut *place {
            Place::Parked(rest) => rest,
            Place::Lingering { swept, .. } => return std::mem::replace(swept, true),
            Place::Busy | Place::LingerOver => return false,
        };
        if rest.deadline_ms <= now_ms {
            return true;
        }
        if !rest.swept {
            rest.swept = true;
            return false;
        }
        sinking && matches!(rest.socket, Socket::Registered(_))
    }

    /// Closes the connection if it is parked past its deadline, or sinks it if it has been
    /// parked since the last sweep; ends the wait of a task lingering since the last sweep.
    pub(super) fn sweep(&self, now_ms: u64, sink: Option<&Registry>) {
        let place = self.lock();
        let rest = match &*place {
            Place::Parked(rest) => rest,
            Place::Lingering { swept: true, .. } => return self.end_linger(place),
            _ => return,
        };
        if rest.deadline_ms <= now_ms {
            return self.close(place);
        }
        if !rest.swept {
            return;
        }
        if let (Some(registry), Socket::Registered(_)) = (sink, &rest.socket) {
            let mut place = place;
            match take_rest(&mut place).and_then(|rest| self.sunk(rest, registry)) {
                Some(rest) => *place = Place::Parked(rest),
                None => {
                    drop(place);
                    self.leave();
                }
            }
        }
    }

    /// Closes the parked connection in `place`.
    fn close(&self, mut place: MutexGuard<'_, Place>) {
        let closed = std::mem::replace(&mut *place, Place::Busy);
        drop(place);
        // Nothing unread: dropping the socket sends a FIN.
        drop(closed);
        self.leave();
    }

    /// `rest` with its socket moved to the server's epoll set; `None` (closed) if that fails, as
    /// an idle connection may always be.
    fn sunk(&self, rest: Rest, registry: &Registry) -> Option<Rest> {
        let Socket::Registered(stream) = rest.socket else {
            return Some(rest);
        };
        let moved = stream
            .into_std()
            .and_then(|socket| deep::sink(registry, &socket, self.slot).map(|()| socket));
        match moved {
            Ok(socket) => Some(Rest {
                socket: Socket::Sunk(socket),
                ..rest
            }),
            Err(error) => {
                debug!(peer = %self.peer, %error, "closing an idle connection that could not be sunk");
                None
            }
        }
    }

    /// The sunk connection became readable: back to tokio, and served.
    pub(super) fn surface(self: &Arc<Self>, registry: &Registry) {
        // Served or parked with tokio already: a stale event.
        let Some(Rest {
            socket: Socket::Sunk(socket),
            open,
            deadline_ms,
            served,
            ..
        }) = self.take_parked(|socket| matches!(socket, Socket::Sunk(_)))
        else {
            return;
        };
        // Closing the socket would remove it too; failing here only leaves that to happen.
        deep::unsink(registry, &socket).ok();
        match TcpStream::from_std(socket) {
            Ok(stream) => self.run(Parked {
                stream,
                open,
                deadline_ms,
                served,
            }),
            Err(error) => {
                debug!(peer = %self.peer, %error, "closing an idle connection that could not be resumed");
                drop(open);
                self.leave();
            }
        }
    }

    /// Closes the connection if it is parked, or has its task park it (and so close it) if it
    /// is lingering: the server is draining.
    pub(super) fn close_parked(&self) {
        let place = self.lock();
        match &*place {
            Place::Parked(_) => self.close(place),
            Place::Lingering { .. } => self.end_linger(place),
            Place::Busy | Place::LingerOver => {}
        }
    }

    /// Takes it off the roster: it is closed, or hyper's.
    pub(super) fn leave(&self) {
        self.shared.roster.leave(self.slot);
    }

    /// Serves the connection on a task of its own.
    fn run(self: &Arc<Self>, connection: Parked) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = super::run(Arc::clone(self), connection);
                drop(runtime.spawn(crate::clock::Fresh::new(task)));
            }
            // No runtime: it is being shut down.
            Err(_) => {
                drop(connection);
                self.leave();
            }
        }
    }

    /// Takes the parked connection if its socket is where `wanted` says.
    fn take_parked(&self, wanted: impl Fn(&Socket) -> bool) -> Option<Rest> {
        let mut place = self.lock();
        match &*place {
            Place::Parked(rest) if wanted(&rest.socket) => take_rest(&mut place),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Place> {
        self.place
            .lock()
            .expect("a home's lock is never held across a panic")
    }
}

/// The parked connection in `place`, which becomes busy; `None` (and `place` unchanged) if it
/// is not parked.
fn take_rest(place: &mut Place) -> Option<Rest> {
    match std::mem::replace(place, Place::Busy) {
        Place::Parked(rest) => Some(rest),
        other => {
            *place = other;
            None
        }
    }
}

/// Readiness of a parked connection's socket: a task takes it over.
impl Wake for Home {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(Rest {
            socket: Socket::Registered(stream),
            open,
            deadline_ms,
            served,
            ..
        }) = self.take_parked(|socket| matches!(socket, Socket::Registered(_)))
        {
            self.run(Parked {
                stream,
                open,
                deadline_ms,
                served,
            });
        }
    }
}
