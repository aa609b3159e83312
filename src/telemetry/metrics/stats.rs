//! What the request path and the background tasks count, grouped by what owns the counts: a
//! backend (`BackendStats`, inside `Backend`, so it lives exactly as long as the backend does,
//! reloads included), a pool (`PoolStats`, carried from one snapshot's pool to the next by name),
//! and requests that matched no route (`Outcomes` held by the snapshot, carried the same way).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use super::series::{Counter, Histogram, StatusCounts};

/// Responses by status code and the time to their head.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub codes: StatusCounts,
    pub duration: Histogram,
}

impl Outcomes {
    /// One response with `status`, whose head was ready `elapsed` after the request arrived.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.codes.add(status);
        self.duration.observe(elapsed);
    }
}

/// What a backend is now, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Disabled,
    Draining,
    Ejected,
    Unhealthy,
    Healthy,
}

impl BackendState {
    pub const ALL: [BackendState; 5] = [
        BackendState::Healthy,
        BackendState::Unhealthy,
        BackendState::Ejected,
        BackendState::Draining,
        BackendState::Disabled,
    ];

    /// Its position in [`BackendState::ALL`].
    pub fn index(self) -> usize {
        match self {
            BackendState::Healthy => 0,
            BackendState::Unhealthy => 1,
            BackendState::Ejected => 2,
            BackendState::Draining => 3,
            BackendState::Disabled => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendState::Disabled => "disabled",
            BackendState::Draining => "draining",
            BackendState::Ejected => "ejected",
            BackendState::Unhealthy => "unhealthy",
            BackendState::Healthy => "healthy",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One backend's counts.
#[derive(Debug)]
pub struct BackendStats {
    /// Responses attributed to this backend (its own, or the proxy's 502/504 about it).
    pub outcomes: Outcomes,
    /// Time to open a TCP connection to it (successful connects only).
    pub connect: Histogram,
    pub ejections: Counter,
    pub checks_passed: Counter,
    pub checks_failed: Counter,
    /// Whether a health check has run yet.
    checked: AtomicBool,
    /// The state last reported (`BackendState::ALL` index).
    reported: AtomicU8,
    /// State changes, by the state changed to.
    changes: [Counter; BackendState::ALL.len()],
}

impl BackendStats {
    /// Counts for a backend that starts in `state`.
    pub fn new(state: BackendState) -> BackendStats {
        BackendStats {
            outcomes: Outcomes::default(),
            connect: Histogram::default(),
            ejections: Counter::default(),
            checks_passed: Counter::default(),
            checks_failed: Counter::default(),
            checked: AtomicBool::new(false),
            reported: AtomicU8::new(state.index() as u8),
            changes: Default::default(),
        }
    }

    /// Records `now` as the reported state; returns the one before when it differs (exactly one
    /// caller sees each change).
    pub fn state_changed(&self, now: BackendState) -> Option<BackendState> {
        let now_index = now.index() as u8;
        if self.reported.load(Ordering::Relaxed) == now_index {
            return None;
        }
        let before = self.reported.swap(now_index, Ordering::Relaxed);
        if before == now_index {
            return None;
        }
        self.changes[now.index()].inc();
        Some(BackendState::ALL[usize::from(before)])
    }

    /// The state last reported.
    pub fn last_state(&self) -> BackendState {
        BackendState::ALL[usize::from(self.reported.load(Ordering::Relaxed))]
    }

    /// Changes into `state` so far.
    pub fn changes_to(&self, state: BackendState) -> u64 {
        self.changes[state.index()].get()
    }

    /// True the first time only: whether this is the backend's first health check.
    pub fn first_check(&self) -> bool {
        !self.checked.swap(true, Ordering::Relaxed)
    }
}

/// Why a failed attempt was retried on another backend; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connect was refused or failed.
    ConnectFailure,
    /// The connect did not complete in time.
    ConnectTimeout,
    /// A connection closed before the request was written.
    ConnectionClosed,
    /// The backend reset or closed the connection, or answered with something not HTTP.
    UpstreamError,
    /// No response head within the response timeout.
    ResponseTimeout,
}

impl RetryReason {
    pub const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailure,
        RetryReason::ConnectTimeout,
        RetryReason::ConnectionClosed,
        RetryReason::UpstreamError,
        RetryReason::ResponseTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect_failure",
            RetryReason::ConnectTimeout => "connect_timeout",
            RetryReason::ConnectionClosed => "connection_closed",
            RetryReason::UpstreamError => "upstream_error",
            RetryReason::ResponseTimeout => "response_timeout",
        }
    }
}

/// One pool's counts.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Responses no backend is attributed to (503 with nothing available).
    pub unattributed: Outcomes,
    retries: [Counter; RetryReason::ALL.len()],
    /// Times fail-open started.
    pub fail_open_started: Counter,
    /// Whether the pool is failing open now; here so that it outlives a reload's new `Pool`.
    pub failing_open: AtomicBool,
    /// Mirrored requests under way to the pool, which bounds them.
    pub mirrors_in_flight: AtomicUsize,
    /// Mirrored requests not sent: too many under way, or no backend to take them.
    pub mirrors_dropped: Counter,
}

impl PoolStats {
    pub fn retried(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
    }

    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries[reason as usize].get()
    }
}
