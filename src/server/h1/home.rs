//! A connection of Fulcrum's own HTTP/1.1 server, as it lives between requests: parked, with no
//! task.
//!
//! A connection with nothing to read gives up its task. Its socket stays registered with tokio,
//! whose readiness now wakes the connection's [`Home`] instead of a task, and that wake spawns a
//! task to serve what arrived. An idle keep-alive connection so costs its `Home` and tokio's
//! registration, a few hundred bytes, and no timer: the roster's sweep (`roster.rs`) closes it
//! when its deadline passes, and, once it has been idle a while, moves its socket out of
//! tokio's registry (`deep.rs`), leaving only the `Home`.

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
    /// The connection while it waits for bytes; `None` while a task serves it.
    parked: Mutex<Option<Rest>>,
}

/// What a connection is made of, moved between its task and its home.
pub(super) struct Parked {
    pub(super) stream: TcpStream,
    /// Held until the connection ends: it counts as open.
    pub(super) open: Open,
    /// When it closes if no request comes (`clock::now_ms`).
    pub(super) deadline_ms: u64,
}

/// A parked connection.
struct Rest {
    socket: Socket,
    open: Open,
    deadline_ms: u64,
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
            parked: Mutex::new(None),
        }
    }

    /// Waits for the connection's next bytes without a task; if some have come already, serves
    /// them at once. A draining server closes it instead.
    pub(super) fn park(self: &Arc<Self>, connection: Parked) {
        // Checked under the lock, so a drain that starts now finds it parked.
        let mut parked = self.lock();
        if self.shared.roster.draining() {
            drop(parked);
            drop(connection);
            return self.leave();
        }
        let waker = Waker::from(Arc::clone(self));
        match connection
            .stream
            .poll_read_ready(&mut Context::from_waker(&waker))
        {
            Poll::Pending => {
                *parked = Some(Rest {
                    socket: Socket::Registered(connection.stream),
                    open: connection.open,
                    deadline_ms: connection.deadline_ms,
                    swept: false,
                });
            }
            // Bytes (or the end) arrived since the last read.
            Poll::Ready(_) => {
                drop(parked);
                self.run(connection);
            }
        }
    }

    /// A sweep's first look, under the roster's lock, so cheap: whether the connection is parked
    /// past its deadline, or parked since the last sweep and still with tokio (and `sinking`).
    /// Marks one found parked for the first time. A busy lock means it is not parked.
    pub(super) fn needs_sweep(&self, now_ms: u64, sinking: bool) -> bool {
        let Ok(mut parked) = self.parked.try_lock() else {
            return false;
        };
        let Some(rest) = parked.as_mut() else {
            return false;
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
    /// parked since the last sweep.
    pub(super) fn sweep(&self, now_ms: u64, sink: Option<&Registry>) {
        let mut parked = self.lock();
        let Some(rest) = parked.as_mut() else {
            return;
        };
        if rest.deadline_ms <= now_ms {
            let expired = parked.take();
            drop(parked);
            drop(expired);
            return self.leave();
        }
        if !rest.swept {
            return;
        }
        if let (Some(registry), Socket::Registered(_)) = (sink, &rest.socket) {
            let rest = parked.take().expect("matched as parked above");
            *parked = self.sunk(rest, registry);
            if parked.is_none() {
                drop(parked);
                self.leave();
            }
        }
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
            }),
            Err(error) => {
                debug!(peer = %self.peer, %error, "closing an idle connection that could not be resumed");
                drop(open);
                self.leave();
            }
        }
    }

    /// Closes the connection if it is parked: the server is draining.
    pub(super) fn close_parked(&self) {
        let taken = self.lock().take();
        if taken.is_some() {
            // Nothing unread: dropping the socket sends a FIN.
            drop(taken);
            self.leave();
        }
    }

    /// Takes it off the roster: it is closed, or hyper's.
    pub(super) fn leave(&self) {
        self.shared.roster.leave(self.slot);
    }

    /// Serves the connection on a task of its own.
    fn run(self: &Arc<Self>, connection: Parked) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(super::run(Arc::clone(self), connection))),
            // No runtime: it is being shut down.
            Err(_) => {
                drop(connection);
                self.leave();
            }
        }
    }

    /// Takes the parked connection if its socket is where `wanted` says.
    fn take_parked(&self, wanted: impl Fn(&Socket) -> bool) -> Option<Rest> {
        self.lock().take_if(|rest| wanted(&rest.socket))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Rest>> {
        self.parked
            .lock()
            .expect("a home's lock is never held across a panic")
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
            ..
        }) = self.take_parked(|socket| matches!(socket, Socket::Registered(_)))
        {
            self.run(Parked {
                stream,
                open,
                deadline_ms,
            });
        }
    }
}
