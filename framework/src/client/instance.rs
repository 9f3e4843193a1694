//! One instance as a client sees it: its entry, its connection, and what calls to it taught.
//!
//! All of it is atomics, so calls on many tasks update it without a lock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::now_ms;
use crate::ServiceInfo;

pub(super) struct Instance {
    pub(super) info: ServiceInfo,
    /// Made on the first call, so a client of a large service holds no connection state for
    /// instances it never calls.
    channel: OnceLock<Channel>,
    in_flight: AtomicUsize,
    /// Exponentially weighted moving average of response latency, in microseconds.
    latency_ewma_us: AtomicU64,
    /// Failures in a row; reset by a success.
    failures: AtomicU32,
    /// Until when the instance is ejected, in milliseconds since [`epoch`]; 0 when it is not.
    ejected_until_ms: AtomicU64,
    /// Metric handles, looked up once on the first call instead of by label on every call.
    metrics: OnceLock<InstanceMetrics>,
}

/// The metric series of calls to one instance that every successful call touches.
pub(super) struct InstanceMetrics {
    pub(super) ok: prometheus::IntCounter,
    pub(super) latency: prometheus::Histogram,
}

/// Marks a call in flight on an instance until dropped.
pub(super) struct InFlight<'a> {
    instance: &'a Instance,
    started: Instant,
}

impl Instance {
    /// An instance whose channel is made on first use, or `channel` to keep an existing one.
    pub(super) fn new(info: ServiceInfo, channel: Option<Channel>) -> Self {
        Self {
            info,
            channel: channel.map(OnceLock::from).unwrap_or_default(),
            in_flight: AtomicUsize::new(0),
            latency_ewma_us: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            metrics: OnceLock::new(),
        }
    }

    /// This instance's metric series for calls to `service`.
    pub(super) fn metrics(&self, service: &str) -> &InstanceMetrics {
        self.metrics.get_or_init(|| {
            let metrics = crate::metrics::metrics();
            InstanceMetrics {
                ok: metrics
                    .client_calls
                    .with_label_values(&[service, &self.info.address, "Ok"]),
                latency: metrics.client_latency.with_label_values(&[service, &self.info.address]),
            }
        })
    }

    /// The channel to this instance, made by `connect` on first use.
    pub(super) fn channel<E>(&self, connect: impl FnOnce() -> Result<Channel, E>) -> Result<Channel, E> {
        if let Some(channel) = self.channel.get() {
            return Ok(channel.clone());
        }
        let channel = connect()?;
        Ok(self.channel.get_or_init(|| channel).clone())
    }

    /// The channel, if a call ever made it.
    pub(super) fn existing_channel(&self) -> Option<Channel> {
        self.channel.get().cloned()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn latency_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    pub(super) fn start_call(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            instance: self,
            started: Instant::now(),
        }
    }

    pub(super) fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Counts a failure and returns how long the instance should be ejected for.
    pub(super) fn failed(&self, base: Duration, max: Duration) -> Duration {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        base.saturating_mul(1 << failures).min(max)
    }

    pub(super) fn eject_for(&self, period: Duration) {
        self.ejected_until_ms
            .store(now_ms() + period.as_millis() as u64, Ordering::Relaxed);
    }

    fn succeeded(&self, latency: Duration) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        let sample = latency.as_micros() as u64;
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        // A lost update under contention only costs one sample; no lock is worth that.
        let new = if old == 0 { sample } else { (old * 7 + sample) / 8 };
        self.latency_ewma_us.store(new.max(1), Ordering::Relaxed);
    }
}

impl InFlight<'_> {
    /// Ends the call, recording its latency if it succeeded.
    pub(super) fn finish(self, succeeded: bool) {
        if succeeded {
            self.instance.succeeded(self.started.elapsed());
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
