//! The retry budget: retries of calls that may have reached an instance are allowed up to a
//! share of all calls, plus a few per second, so retries can never multiply an overload.
//!
//! Lock-free: a call deposits a fraction of a token with one atomic add; a retry withdraws a
//! whole token with a compare-and-swap, first adding the per-second allowance for the time
//! since it was last added.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::clock::now_ms;

/// Tokens are counted in thousandths.
const TOKEN: i64 = 1000;
/// The balance is capped at this many seconds of the per-second allowance plus
/// [`BURST`] retries, so a long healthy spell cannot bank an unbounded burst of retries.
const WINDOW_SECONDS: i64 = 10;
const BURST: i64 = 100 * TOKEN;

pub(super) struct RetryBudget {
    balance: AtomicI64,
    per_call: i64,
    per_second: i64,
    cap: i64,
    refilled_at_ms: AtomicU64,
}

impl RetryBudget {
    /// `ratio` retries per call (0.0 to 1.0) plus `min_per_second`.
    pub(super) fn new(ratio: f32, min_per_second: u32) -> Self {
        let per_second = i64::from(min_per_second) * TOKEN;
        Self {
            balance: AtomicI64::new(per_second),
            per_call: (f64::from(ratio.clamp(0.0, 1.0)) * TOKEN as f64) as i64,
            per_second,
            cap: per_second * WINDOW_SECONDS + BURST,
            refilled_at_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Called once per call.
    pub(super) fn deposit(&self) {
        if self.per_call > 0 && self.balance.load(Ordering::Relaxed) < self.cap {
            self.balance.fetch_add(self.per_call, Ordering::Relaxed);
        }
    }

    /// Takes one retry's worth; false when the budget is spent.
    pub(super) fn withdraw(&self) -> bool {
        self.refill();
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |balance| {
                (balance >= TOKEN).then_some(balance - TOKEN)
            })
            .is_ok()
    }

    fn refill(&self) {
        let now = now_ms();
        let last = self.refilled_at_ms.swap(now, Ordering::AcqRel);
        let earned = (now.saturating_sub(last) as i64).saturating_mul(self.per_second) / 1000;
        if earned > 0 {
            let cap = self.cap;
            let _ = self
                .balance
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| Some((b + earned).min(cap)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_limited_to_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20, "20% of 100 calls");
        let floor = RetryBudget::new(0.0, 5);
        let granted = (0..100).filter(|_| floor.withdraw()).count();
        assert_eq!(granted, 5, "the per-second floor with no calls at all");
    }
}
