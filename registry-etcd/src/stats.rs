//! Counters of what the registry had to do to stay correct.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};

/// The `registry` label of this crate's metrics.
pub(crate) const KIND: &str = "etcd";

/// This crate's metrics, registered on the process's registry (`jovian::metrics::registry()`)
/// the first time one is counted, so the governor's `/metrics` serves them.
struct EtcdMetrics {
    lease_renewals: IntCounterVec,
    reregistrations: IntCounterVec,
    watch_restarts: IntCounterVec,
    bad_entries: IntCounterVec,
}

fn metrics() -> &'static EtcdMetrics {
    static METRICS: OnceLock<EtcdMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            jovian::metrics::registry()
                .register(Box::new(family.clone()))
                .expect("metric registered once");
            family
        };
        EtcdMetrics {
            lease_renewals: counter(
                "jovian_registry_lease_renewals_total",
                "Lease keep-alives answered.",
                &["registry"],
            ),
            reregistrations: counter(
                "jovian_registry_reregistrations_total",
                "Times every key was put back under a new lease.",
                &["registry"],
            ),
            watch_restarts: counter(
                "jovian_registry_watch_restarts_total",
                "Watches restarted after trouble.",
                &["registry", "service"],
            ),
            bad_entries: counter(
                "jovian_registry_bad_entries_total",
                "Registry entries skipped because they were not valid.",
                &["registry", "service"],
            ),
        }
    })
}

/// How often the registry renewed, healed and skipped things since it was created.
#[derive(Debug, Default)]
pub struct Stats {
    lease_renewals: AtomicU64,
    reregistrations: AtomicU64,
    put_backs: AtomicU64,
    refused_keys: AtomicU64,
    watch_restarts: AtomicU64,
    bad_entries: AtomicU64,
    /// The latest bad writes seen, as (key, revision written): each is logged and counted once,
    /// however many lists and watches come across it. Bounded, because garbage under the
    /// prefix is anyone's to write: past the bound the oldest are forgotten (and a re-list may
    /// count them once more).
    reported: Mutex<Reported>,
}

/// What the registry had done to stay correct, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Lease keep-alives etcd answered.
    pub lease_renewals: u64,
    /// Times the lease was lost and every key was put again under a new one.
    pub reregistrations: u64,
    /// Times a key deleted or overwritten by someone else was put back.
    pub put_backs: u64,
    /// Times etcd refused to write one of our keys (a permission revoked, say) while the
    /// others were kept.
    pub refused_keys: u64,
    /// Times a watch was restarted (error, compaction, stream end) and the service re-listed.
    pub watch_restarts: u64,
    /// Registry values skipped because they were not valid entries.
    pub bad_entries: u64,
}

impl Stats {
    pub(crate) fn lease_renewed(&self) {
        self.lease_renewals.fetch_add(1, Ordering::Relaxed);
        metrics().lease_renewals.with_label_values(&[KIND]).inc();
    }
    pub(crate) fn reregistered(&self) {
        self.reregistrations.fetch_add(1, Ordering::Relaxed);
        metrics().reregistrations.with_label_values(&[KIND]).inc();
    }
    pub(crate) fn put_back(&self) {
        self.put_backs.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn key_refused(&self) {
        self.refused_keys.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn watch_restarted(&self, service: &str) {
        self.watch_restarts.fetch_add(1, Ordering::Relaxed);
        metrics().watch_restarts.with_label_values(&[KIND, service]).inc();
    }
    /// Logs and counts a value that is not a valid entry, unless this write was reported before.
    pub(crate) fn bad_entry(&self, service: &str, key: &[u8], revision: i64, reason: &str) {
        let first_time = self
            .reported
            .lock()
            .expect("stats lock")
            .insert((key.to_vec(), revision));
        if first_time {
            self.bad_entries.fetch_add(1, Ordering::Relaxed);
            metrics().bad_entries.with_label_values(&[KIND, service]).inc();
            tracing::warn!(
                service,
                key = %String::from_utf8_lossy(key),
                revision,
                reason,
                "skipping a registry entry that is not valid"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            lease_renewals: self.lease_renewals.load(Ordering::Relaxed),
            reregistrations: self.reregistrations.load(Ordering::Relaxed),
            put_backs: self.put_backs.load(Ordering::Relaxed),
            refused_keys: self.refused_keys.load(Ordering::Relaxed),
            watch_restarts: self.watch_restarts.load(Ordering::Relaxed),
            bad_entries: self.bad_entries.load(Ordering::Relaxed),
        }
    }
}

/// How many bad writes are remembered.
const REMEMBERED_BAD_WRITES: usize = 4096;

/// The latest bad writes, oldest forgotten first.
#[derive(Debug, Default)]
struct Reported {
    set: HashSet<(Vec<u8>, i64)>,
    order: VecDeque<(Vec<u8>, i64)>,
}

impl Reported {
    /// True if `write` was not remembered.
    fn insert(&mut self, write: (Vec<u8>, i64)) -> bool {
        if self.set.contains(&write) {
            return false;
        }
        if self.order.len() == REMEMBERED_BAD_WRITES
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(write.clone());
        self.set.insert(write);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_bad_writes_are_bounded() {
        let stats = Stats::default();
        for revision in 0..3 * REMEMBERED_BAD_WRITES as i64 {
            stats.bad_entry("s", b"/jovian/s/providers/junk", revision, "junk");
        }
        assert_eq!(stats.snapshot().bad_entries, 3 * REMEMBERED_BAD_WRITES as u64);
        let reported = stats.reported.lock().unwrap();
        assert_eq!(reported.set.len(), REMEMBERED_BAD_WRITES);
        assert_eq!(reported.order.len(), REMEMBERED_BAD_WRITES);
        drop(reported);
        stats.bad_entry(
            "s",
            b"/jovian/s/providers/junk",
            3 * REMEMBERED_BAD_WRITES as i64 - 1,
            "junk",
        );
        assert_eq!(
            stats.snapshot().bad_entries,
            3 * REMEMBERED_BAD_WRITES as u64,
            "a remembered write counts once"
        );
    }
}
