//! A monotonic millisecond clock that fits in an atomic.
//!
//! Deadlines kept in backends' atomics (ejection ends) are milliseconds since the first call in
//! this process. It reads `tokio::time::Instant`, so tests with paused time can move it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process's clock epoch; never 0, so 0 can mean "no deadline".
pub fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().duration_since(epoch).as_millis() as u64 + 1
}

/// `now_ms()` plus `duration`.
pub fn after_ms(duration: Duration) -> u64 {
    now_ms().saturating_add(duration.as_millis() as u64)
}

/// How far `deadline_ms` is from now, or zero when it has passed.
pub fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}
