//! A connection of Fulcrum's HTTP/1 server as it lives between its bytes: parked, with no task.
//!
//! A connection with nothing to read gives up its task. Its socket stays registered with tokio,
//! whose readiness now wakes the connection's [`Home`] instead of a task, and that wake spawns a
//! task to serve what arrived. An idle keep-alive connection so costs its `Home` and tokio's
//! registration, a few hundred bytes, and no timer: the roster's sweep (`roster.rs`) ends it
//! when its deadline passes, and, once it has been idle a while, moves a plain socket out of
//! tokio's registry (`sink.rs`), leaving only the `Home`.
//!
//! Before it parks, the task lingers: it waits for the next bytes itself until a sweep has seen
//! it waiting twice (one to two sweep pauses), or a drain starts. Under load the next request
//! comes long before that, and is served without spawning a task (an allocation, and the
//! runtime's bookkeeping, per request); a connection that goes quiet parks soon after.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use mio::Registry;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpStream;
use tracing::debug;

use super::super::Shared;
use super::super::connection::Open;
use super::super::stream::Stream;
use super::input::Input;
use super::sink;

/// One connection, known to the roster from accept until it closes or is handed over.
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

/// A connection as its task holds it: its bytes, and what it keeps beside them.
pub(super) struct Parked {
    pub(super) input: Input<Stream>,
    pub(super) keep: Keep,
}

/// What a connection keeps beside its bytes, wherever it is.
pub(super) struct Keep {
    /// Held until the connection ends: it counts as open.
    pub(super) open: Open,
    /// When it is given up on if nothing more comes (`clock::now_ms`): the end of its idle time,
    /// or of the time its head has to arrive in (`request_header`).
    pub(super) deadline_ms: u64,
    /// Requests served on it, counted up to two: a connection that came back for a second is
    /// worth a task that lingers for its next one; one that made a single request and went quiet
    /// is not.
    pub(super) served: u8,
    /// It came over TLS.
    pub(super) tls: bool,
    /// The head being read has been given its `request_header` deadline.
    pub(super) head_timed: bool,
}

/// A parked connection.
struct Rest {
    socket: Socket,
    keep: Keep,
    /// A sweep has found it parked: the next one sinks it.
    swept: bool,
}

/// A parked connection's bytes.
enum Socket {
    /// Registered with tokio, which wakes the home. Boxed: every home is as large as its largest
    /// place, and a connection idle a while sinks to the small variant below.
    Registered(Box<Input<Stream>>),
    /// In the server's own epoll set (`sink.rs`): a plain socket with nothing read.
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
        let mut place = self.place.lock();
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
        *self.place.lock() = Place::Busy;
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
        let mut place = self.place.lock();
        if self.shared.roster.draining() {
            *place = Place::Busy;
            drop(place);
            drop(connection);
            return self.leave();
        }
        let waker = Waker::from(Arc::clone(self));
        let ready = connection
            .input
            .stream
            .poll_read_ready(&mut Context::from_waker(&waker));
        match ready {
            Poll::Pending => {
                *place = Place::Parked(Rest {
                    socket: Socket::Registered(Box::new(connection.input)),
                    keep: connection.keep,
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
        let Some(mut place) = self.place.try_lock() else {
            return false;
        };
        let rest = match &mut *place {
            Place::Parked(rest) => rest,
            Place::Lingering { swept, .. } => return std::mem::replace(swept, true),
            Place::Busy | Place::LingerOver => return false,
        };
        if rest.keep.deadline_ms <= now_ms {
            return true;
        }
        if !rest.swept {
            rest.swept = true;
            return false;
        }
        sinking && sinkable(&rest.socket)
    }

    /// Ends the connection if it is parked past its deadline, or sinks it if it has been parked
    /// since the last sweep; ends the wait of a task lingering since the last sweep.
    pub(super) fn sweep(self: &Arc<Self>, now_ms: u64, sink: Option<&Registry>) {
        let mut place = self.place.lock();
        let rest = match &*place {
            Place::Parked(rest) => rest,
            Place::Lingering { swept: true, .. } => return self.end_linger(place),
            _ => return,
        };
        if rest.keep.deadline_ms <= now_ms {
            return self.expire(place);
        }
        if !rest.swept {
            return;
        }
        if let Some(registry) = sink
            && sinkable(&rest.socket)
        {
            match take_rest(&mut place).and_then(|rest| self.sunk(rest, registry)) {
                Some(rest) => *place = Place::Parked(rest),
                None => {
                    drop(place);
                    self.leave();
                }
            }
        }
    }

    /// The parked connection in `place` is past its deadline: one with a head begun has its task
    /// answer 408; any other is closed.
    fn expire(self: &Arc<Self>, mut place: MutexGuard<'_, Place>) {
        let Some(rest) = take_rest(&mut place) else {
            return;
        };
        drop(place);
        match rest.socket {
            Socket::Registered(input) if input.has_partial_head() => self.run(Parked {
                input: *input,
                keep: rest.keep,
            }),
            // Nothing unread: dropping the socket sends a FIN.
            _ => self.leave(),
        }
    }

    /// `rest` with its socket moved to the server's epoll set; `None` (closed) if that fails, as
    /// an idle connection may always be.
    fn sunk(&self, rest: Rest, registry: &Registry) -> Option<Rest> {
        let Socket::Registered(input) = rest.socket else {
            return Some(rest);
        };
        let Input {
            stream: Stream::Plain(stream),
            ..
        } = *input
        else {
            unreachable!("only a plain connection with nothing read sinks")
        };
        let moved = stream
            .into_std()
            .and_then(|socket| sink::sink(registry, &socket, self.slot).map(|()| socket));
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
            keep,
            ..
        }) = self.take_parked(|socket| matches!(socket, Socket::Sunk(_)))
        else {
            return;
        };
        // Closing the socket would remove it too; failing here only leaves that to happen.
        sink::unsink(registry, &socket).ok();
        match TcpStream::from_std(socket) {
            Ok(stream) => self.run(Parked {
                input: Input::new(Stream::Plain(stream)),
                keep,
            }),
            Err(error) => {
                debug!(peer = %self.peer, %error, "closing an idle connection that could not be resumed");
                drop(keep);
                self.leave();
            }
        }
    }

    /// Closes the connection if it is parked, or has its task park it (and so close it) if it
    /// is lingering: the server is draining.
    pub(super) fn close_parked(&self) {
        let mut place = self.place.lock();
        match &*place {
            Place::Parked(_) => {
                let closed = take_rest(&mut place);
                drop(place);
                drop(closed);
                self.leave();
            }
            Place::Lingering { .. } => self.end_linger(place),
            Place::Busy | Place::LingerOver => {}
        }
    }

    /// Takes it off the roster: it is closed, or handed over.
    pub(super) fn leave(&self) {
        self.shared.roster.leave(self.slot);
    }

    /// Serves the connection on a task of its own now, whatever its socket says.
    pub(super) fn serve_now(self: &Arc<Self>, connection: Parked) {
        self.run(connection);
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
        let mut place = self.place.lock();
        match &*place {
            Place::Parked(rest) if wanted(&rest.socket) => take_rest(&mut place),
            _ => None,
        }
    }
}

/// Whether a parked socket can sink: plain, with tokio still, and nothing read from it.
fn sinkable(socket: &Socket) -> bool {
    matches!(socket, Socket::Registered(input) if input.is_empty() && matches!(input.stream, Stream::Plain(_)))
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
            socket: Socket::Registered(input),
            keep,
            ..
        }) = self.take_parked(|socket| matches!(socket, Socket::Registered(_)))
        {
            self.run(Parked {
                input: *input,
                keep,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle keep-alive connection costs its home and little else (`sink.rs`): what it holds
    /// stays within a small allocation (with the `Arc`'s counts, 160 bytes in glibc's bins).
    #[test]
    fn a_home_stays_small() {
        assert!(
            std::mem::size_of::<Home>() <= 136,
            "a home is {} bytes",
            std::mem::size_of::<Home>()
        );
    }
}
