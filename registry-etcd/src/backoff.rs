//! Exponential back-off with jitter, for retrying forever without a thundering herd.

use std::time::Duration;

use rand::Rng;

pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(50);

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self { next: FIRST, max }
    }

    /// The next delay: doubling up to the cap, each drawn at random from its upper half so that
    /// many clients retrying after one outage spread out.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }
}
