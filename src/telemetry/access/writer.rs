//! The access log's writer: a thread that owns the file (or standard output) behind a bounded
//! queue. It wakes every [`WAKE_EVERY`], writes what has been queued in one batch and flushes.
//! It never blocks on the queue: a blocked receiver would have every request wake it (a futex
//! call and a context switch per line, measured at a third of the throughput).
//!
//! SIGUSR1 (or [`Sinks::reopen`]) reopens the file by name, for log rotation: after `mv
//! access.log access.log.1`, lines go to a fresh `access.log`. A file that cannot be reopened
//! leaves the old one in use.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::TryRecvError;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use tracing::warn;

use crate::config::{AccessFormat, AccessPath, Log};
use crate::telemetry::metrics::Counter;

/// Lines queued for the writer at most; beyond it, lines are dropped (and counted). Enough for
/// a [`WAKE_EVERY`] of a few hundred thousand requests per second.
const QUEUE: usize = 64 * 1024;

/// How often the writer writes what has been queued: a line reaches the file this long after
/// its request ended, at most.
const WAKE_EVERY: Duration = Duration::from_millis(20);

/// A live access log: where lines go and their format; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: AccessFormat,
    sink: Arc<Sink>,
}

impl AccessLog {
    pub fn format(&self) -> AccessFormat {
        self.format
    }

    /// Queues `line` without waiting; drops and counts it when the queue is full.
    pub fn write(&self, line: String) {
        match self.sink.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.sink.dropped.inc(),
        }
    }
}

/// One writer thread's queue.
#[derive(Debug)]
struct Sink {
    path: AccessPath,
    queue: SyncSender<Message>,
    dropped: Arc<Counter>,
}

#[derive(Debug)]
enum Message {
    Line(String),
    Reopen,
    /// Write everything queued before this now, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The access logs configured over time: a reload that keeps the path keeps the writer.
#[derive(Debug, Default)]
pub struct Sinks {
    current: Mutex<Option<Arc<Sink>>>,
    dropped: Arc<Counter>,
}

impl Sinks {
    /// The access log `log` asks for (`None` when off), opening its file if the path is new.
    pub fn open(&self, log: &Log) -> io::Result<Option<AccessLog>> {
        let Some(format) = log.access else {
            *self.lock() = None;
            return Ok(None);
        };
        let mut current = self.lock();
        let sink = match current.as_ref() {
            Some(sink) if sink.path == log.access_path => Arc::clone(sink),
            _ => {
                let sink = Arc::new(start(&log.access_path, Arc::clone(&self.dropped))?);
                *current = Some(Arc::clone(&sink));
                sink
            }
        };
        Ok(Some(AccessLog { format, sink }))
    }

    /// Reopens the current file by name (log rotation).
    pub fn reopen(&self) {
        if let Some(sink) = self.lock().as_ref() {
            // A full queue will be written to the old file; the next signal catches up.
            sink.queue.try_send(Message::Reopen).ok();
        }
    }

    /// Writes every line queued so far, waiting at most `timeout` (at shutdown: the writer
    /// thread does not outlive the process).
    pub fn flush(&self, timeout: Duration) {
        let Some(sink) = self.lock().clone() else {
            return;
        };
        let (done, flushed) = std::sync::mpsc::channel();
        if sink.queue.send(Message::Flush(done)).is_ok() {
            flushed.recv_timeout(timeout).ok();
        }
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Sink>>> {
        self.current.lock()
    }
}

/// Opens `path` and starts its writer thread.
fn start(path: &AccessPath, dropped: Arc<Counter>) -> io::Result<Sink> {
    let out = open(path)?;
    let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE);
    let target = path.clone();
    std::thread::Builder::new()
        .name("fulcrum-access-log".to_owned())
        .spawn(move || run(lines, &target, out))?;
    Ok(Sink {
        path: path.clone(),
        queue,
        dropped,
    })
}

fn open(path: &AccessPath) -> io::Result<Box<dyn Write + Send>> {
    match path {
        AccessPath::Stdout => Ok(Box::new(io::stdout())),
        AccessPath::File(file) => Ok(Box::new(append(file)?)),
    }
}

fn append(file: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|err| io::Error::new(err.kind(), format!("access log {}: {err}", file.display())))
}

/// Writes until every sender is gone.
fn run(lines: Receiver<Message>, path: &AccessPath, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    loop {
        let ended = loop {
            match lines.try_recv() {
                Ok(Message::Line(line)) => report(&mut failing, out.write_all(line.as_bytes())),
                Ok(Message::Reopen) => {
                    report(&mut failing, out.flush());
                    match open(path) {
                        Ok(fresh) => out = BufWriter::with_capacity(64 * 1024, fresh),
                        Err(error) => {
                            warn!(%error, "cannot reopen the access log; still writing to the old file")
                        }
                    }
                }
                Ok(Message::Flush(done)) => {
                    report(&mut failing, out.flush());
                    done.send(()).ok();
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        report(&mut failing, out.flush());
        if ended {
            return;
        }
        std::thread::sleep(WAKE_EVERY);
    }
}

/// Logs a write failure when writing starts to fail, not on every line.
fn report(failing: &mut bool, result: io::Result<()>) {
    match result {
        Ok(()) => *failing = false,
        Err(error) if !*failing => {
            *failing = true;
            warn!(%error, "cannot write the access log");
        }
        Err(_) => {}
    }
}
