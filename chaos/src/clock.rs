//! The run's common clock: milliseconds since an epoch the orchestrator picks.
//!
//! Every process of a run is on this machine, so the wall clock is shared; the orchestrator
//! passes its epoch (Unix ms) to each process it starts and every line is stamped relative to
//! it. A wall-clock step during a run would skew the history; runs are short and the machine's
//! clock is not expected to step.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the run's epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch_ms: u64,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self { epoch_ms: unix_ms() }
    }

    /// A clock whose zero is `epoch_ms` (Unix ms).
    pub fn from_epoch(epoch_ms: u64) -> Self {
        Self { epoch_ms }
    }

    /// The epoch, for passing to child processes.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// Milliseconds since the epoch.
    pub fn now(&self) -> u64 {
        unix_ms().saturating_sub(self.epoch_ms)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
