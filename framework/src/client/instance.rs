//! One instance as a client sees it: its entry, its connection, and what calls to it taught.
//!
//! All of it is atomics, so calls on many tasks update it without a lock.
//!
//! Failures come in episodes: the first failure ejects the instance, and failures of calls
//! that were already in flight then belong to the same episode instead of doubling the
//! back-off once each. When the ejection ends the instance is on probation: it takes one call
//! at a time until a call succeeds, so an instance that is still dead fails one call, not
//! every call that picked it meanwhile.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::clock::now_ms;
use super::layer::InstanceService;
use super::metrics::InstanceMetrics;
use super::transport::{Connector, Link, TransportError};
use crate::ServiceInfo;
use crate::error::BoxError;

pub(super) struct Instance {
    pub(super) info: Arc<ServiceInfo>,
    /// `scheme://address`, the instance's key in the registry's snapshots.
    key: Arc<str>,
    /// Made on the first call, so a client of a large service holds no connection state for
    /// instances it never calls.
    link: OnceLock<Arc<Link>>,
    /// The application's layers around the link, made on the first call (with layers only).
    service: OnceLock<InstanceService>,
    /// Calls in flight here: from the pick until their response ends. Shared with the link,
    /// whose connection keeps itself alive only while calls are in flight.
    in_flight: Arc<AtomicUsize>,
    /// Exponentially weighted moving average of response latency, in microseconds.
    latency_ewma_us: AtomicU64,
    /// Failure episodes in a row; reset by a success.
    failures: AtomicU32,
    /// Calls that timed out in a row; reset by a success.
    timeouts: AtomicU32,
    /// Until when the instance is ejected, in milliseconds of the client clock; 0 when it is not.
    ejected_until_ms: AtomicU64,
    /// Metric handles, looked up once on the first call instead of by label on every call.
    metrics: OnceLock<InstanceMetrics>,
}

impl super::slots::Slotted for Arc<Instance> {
    fn key(&self) -> &Arc<str> {
        &self.key
    }
    fn weight(&self) -> u32 {
        self.info.weight
    }
}

/// Marks a call in flight on an instance until dropped: while its response streams in, too.
pub(super) struct InFlight {
    pub(super) instance: Arc<Instance>,
}

impl Instance {
    /// An instance whose link is made on first use, or `link` to keep an existing connection.
    pub(super) fn new(info: Arc<ServiceInfo>, link: Option<Arc<Link>>) -> Self {
        let in_flight = link
            .as_ref()
            .map_or_else(|| Arc::new(AtomicUsize::new(0)), |l| Arc::clone(l.in_flight()));
        Self {
            key: info.uri().into(),
            info,
            link: link.map(OnceLock::from).unwrap_or_default(),
            service: OnceLock::new(),
            in_flight,
            latency_ewma_us: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            metrics: OnceLock::new(),
        }
    }

    /// This instance's metric series for calls to `service`.
    pub(super) fn metrics(&self, service: &str) -> &InstanceMetrics {
        self.metrics
            .get_or_init(|| InstanceMetrics::new(service, &self.info.address))
    }

    /// The link to this instance, made on first use.
    pub(super) fn link(&self, connector: &Arc<Connector>) -> Result<&Arc<Link>, TransportError> {
        if let Some(link) = self.link.get() {
            return Ok(link);
        }
        let link = Link::new(&self.info, Arc::clone(connector), Arc::clone(&self.in_flight))?;
        Ok(self.link.get_or_init(|| Arc::new(link)))
    }

    /// The link, if a call ever made it.
    pub(super) fn existing_link(&self) -> Option<Arc<Link>> {
        self.link.get().cloned()
    }

    /// The application's layers around this instance's link, made by `make` on first use.
    pub(super) fn service(
        &self,
        make: impl FnOnce() -> Result<InstanceService, BoxError>,
    ) -> Result<InstanceService, BoxError> {
        if let Some(service) = self.service.get() {
            return Ok(service.clone());
        }
        let service = make()?;
        Ok(self.service.get_or_init(|| service).clone())
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn latency_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    pub(super) fn start_call(self: Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { instance: self }
    }

    pub(super) fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Whether a call may be sent here now: not ejected, and not already probing with a call
    /// in flight after an ejection.
    pub(super) fn is_usable(&self) -> bool {
        !self.is_ejected() && (self.failures.load(Ordering::Relaxed) == 0 || self.in_flight() == 0)
    }

    /// Starts a failure episode unless one is under way: ejects the instance for `base`,
    /// doubled for each episode in a row, at most `max`. Returns the ejection's length, or
    /// `None` when the failure belongs to the current episode.
    pub(super) fn eject(&self, base: Duration, max: Duration) -> Option<Duration> {
        let now = now_ms();
        let current = self.ejected_until_ms.load(Ordering::Relaxed);
        if current > now {
            return None;
        }
        let episodes = self.failures.load(Ordering::Relaxed).min(16);
        let period = base.saturating_mul(1 << episodes).min(max);
        let until = now + period.as_millis() as u64;
        self.ejected_until_ms
            .compare_exchange(current, until, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.failures.fetch_add(1, Ordering::Relaxed);
        Some(period)
    }

    /// Counts a failure that does not eject (the instance is the last one available), so it
    /// still goes on probation.
    pub(super) fn failed_without_ejection(&self) {
        self.failures.fetch_max(1, Ordering::Relaxed);
    }

    /// Counts a call that ran out of time here; returns the timeouts in a row so far.
    pub(super) fn timed_out(&self) -> u32 {
        self.timeouts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Drops this instance's metric series of calls to `service`, once it has left the set,
    /// so that churning addresses cannot grow the metrics without limit.
    pub(super) fn forget_metrics(&self, service: &str) {
        super::metrics::forget_instance(service, &self.info.address);
    }

    /// Counts a call that ended here within its deadline, ending a run of timeouts.
    pub(super) fn answered_in_time(&self) {
        if self.timeouts.load(Ordering::Relaxed) != 0 {
            self.timeouts.store(0, Ordering::Relaxed);
        }
    }

    /// Records a call whose response's head came back from here after `latency`. The call
    /// may still run out of time in its body, so a run of timeouts ends only with the call.
    pub(super) fn succeeded(&self, latency: Duration) {
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

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
