//! `RetryBudget`: retries stay a bounded share of a pool's traffic, so a failing backend cannot
//! turn into a retry storm that multiplies load on the rest (linkerd's and Envoy's approach).
//!
//! Each request earns the pool [`RATIO`] of a retry; each retry spends one whole. On top, a floor
//! of [`FLOOR_PER_SECOND`] retries per second accrues by time, so a quiet pool can still retry.
//! The balance is capped at [`CAP`] retries, which bounds a burst after a long calm. Tokens are
//! kept in thousandths in one atomic; refill is lazy, on the retry path only.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::clock;

/// Share of requests that may be retried (in thousandths: 200 = 20%).
pub const RATIO: i64 = 200;
/// Retries per second allowed whatever the traffic.
pub const FLOOR_PER_SECOND: i64 = 10;
/// Most retries the budget can hold.
pub const CAP: i64 = 100;

const ONE: i64 = 1000;

/// A pool's retry allowance.
#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
    refilled_at_ms: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget {
            // Start with one second of floor, so the first failures after start can be retried.
            milli_tokens: AtomicI64::new(FLOOR_PER_SECOND * ONE),
            refilled_at_ms: AtomicU64::new(clock::now_ms()),
        }
    }
}

impl RetryBudget {
    /// A request was sent: it earns a share of a retry.
    pub fn deposit(&self) {
        let before = self.milli_tokens.fetch_add(RATIO, Ordering::Relaxed);
        if before + RATIO > CAP * ONE {
            self.milli_tokens.fetch_sub(RATIO, Ordering::Relaxed);
        }
    }

    /// Spends one retry if the budget has it.
    pub fn try_withdraw(&self) -> bool {
        self.refill();
        let mut current = self.milli_tokens.load(Ordering::Relaxed);
        loop {
            if current < ONE {
                return false;
            }
            match self.milli_tokens.compare_exchange_weak(
                current,
                current - ONE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds the floor earned since the last refill.
    fn refill(&self) {
        let now = clock::now_ms();
        let last = self.refilled_at_ms.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(last) as i64;
        let earned = elapsed * FLOOR_PER_SECOND; // thousandths: ms × per-second rate
        if earned < ONE / 10 {
            return;
        }
        if self
            .refilled_at_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let before = self.milli_tokens.fetch_add(earned, Ordering::Relaxed);
            let excess = before + earned - CAP * ONE;
            if excess > 0 {
                self.milli_tokens
                    .fetch_sub(excess.min(earned), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_share_of_requests_plus_floor() {
        let budget = RetryBudget::default();
        let mut allowed = 0;
        for _ in 0..100 {
            budget.deposit();
            if budget.try_withdraw() {
                allowed += 1;
            }
        }
        // 10 from the starting floor plus 20% of 100 requests.
        assert_eq!(allowed, 10 + 20);
        assert!(!budget.try_withdraw(), "the budget is spent");
        tokio::time::advance(Duration::from_secs(1)).await;
        let refilled = (0..50).filter(|_| budget.try_withdraw()).count();
        assert_eq!(refilled, 10, "one second of floor");
    }

    #[tokio::test(start_paused = true)]
    async fn balance_is_capped() {
        let budget = RetryBudget::default();
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..10_000 {
            budget.deposit();
        }
        let allowed = (0..1000).filter(|_| budget.try_withdraw()).count();
        assert_eq!(allowed as i64, CAP);
    }
}
