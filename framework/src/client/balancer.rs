//! The instance set a [`ServiceChannel`](super::ServiceChannel) picks from and how snapshots
//! update it; `call.rs` dispatches calls over it.
//!
//! Picks read an immutable candidate list through an atomic pointer: no lock on the call path.
//! Each snapshot is applied as what changed since the last one (O(changed), not O(N)):
//! instances whose entry is unchanged are not touched and keep their state (connection,
//! in-flight count, latency, ejection), re-announced ones keep the connection with fresh state,
//! new ones get a connection on their first call (so a client of a large service holds nothing
//! per instance it never calls), removed ones are dropped with their metric series.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tonic::Status;

use super::budget::RetryBudget;
use super::instance::Instance;
use super::layer::LayerFn;
use super::metrics::Methods;
use super::options::{ClientOptions, HashKey, Policy};
use super::policy::{Picker, Ring, hash};
use super::slots::{Chunked, Slots};
use super::transport::{Connector, Link};
use crate::metrics::{GrpcType, metrics};
use crate::{Change, Discovery, Instances, InstancesWatch, ServiceInfo};

pub(super) struct Balancer {
    pub(super) service: Arc<str>,
    pub(super) options: ClientOptions,
    pub(super) connector: Arc<Connector>,
    /// The application's per-attempt layers, outermost first.
    pub(super) layers: Vec<LayerFn>,
    /// The gRPC type of methods that are not what their request says (see `GrpcType`).
    pub(super) method_types: HashMap<String, GrpcType>,
    /// The default deadline of methods that have their own.
    pub(super) method_timeouts: HashMap<String, std::time::Duration>,
    /// The metric series of the methods called.
    pub(super) methods: Methods,
    pub(super) set: ArcSwap<InstanceSet>,
    pub(super) sequence: AtomicU64,
    pub(super) budget: RetryBudget,
    pub(super) picks: prometheus::IntCounter,
    /// The updating side of `set`, used only by the task that follows the registry.
    updater: Mutex<Updater>,
}

/// One snapshot's worth of instances, ready to pick from.
pub(super) struct InstanceSet {
    /// Every instance that passes the filter.
    admitted: Chunked<Arc<Instance>>,
    /// Those calls go to: the preferred zone's, or all when that zone has too few.
    candidates: Chunked<Arc<Instance>>,
    picker: Picker,
    registered: usize,
}

/// What the instance set was built from, kept to apply the next snapshot as a change.
struct Updater {
    applied: Instances,
    admitted: Slots<Arc<Instance>>,
    /// The admitted instances in the filter's preferred zone (none without a preference).
    local: Slots<Arc<Instance>>,
    /// For the consistent-hash policy: the ring over the last candidates, and whether they
    /// were the local ones.
    ring: Option<(Ring, bool)>,
}

impl Balancer {
    pub(super) fn new(
        service: &str,
        options: ClientOptions,
        layers: Vec<LayerFn>,
        mut method_types: HashMap<String, GrpcType>,
    ) -> crate::Result<Arc<Self>> {
        // What code declared wins over what the options say.
        for (path, method) in &options.methods {
            if let Some(grpc_type) = method.grpc_type {
                method_types.entry(path.clone()).or_insert(grpc_type);
            }
        }
        let method_timeouts = options
            .methods
            .iter()
            .filter_map(|(path, method)| Some((path.clone(), method.timeout?)))
            .collect();
        let connector = Arc::new(Connector::new(service, &options.connection)?);
        let retry = &options.retry;
        let budget = RetryBudget::new(retry.budget_ratio, retry.budget_min_per_second);
        let set = InstanceSet::empty(&options.policy);
        let picks = metrics()
            .client_picks
            .with_label_values(&[service, options.policy.name()]);
        Ok(Arc::new(Self {
            service: service.into(),
            options,
            connector,
            layers,
            method_types,
            method_timeouts,
            methods: Methods::new(),
            set: ArcSwap::from_pointee(set),
            // A random start, so that short-lived clients do not all begin with the same instance.
            sequence: AtomicU64::new(rand::random::<u32>().into()),
            budget,
            picks,
            updater: Mutex::new(Updater {
                applied: Instances::new(service, 0),
                admitted: Slots::new(),
                local: Slots::new(),
                ring: None,
            }),
        }))
    }

    pub(super) fn service(&self) -> &str {
        &self.service
    }

    pub(super) fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(super) fn len(&self) -> usize {
        self.set.load().candidates.len()
    }

    pub(super) fn instances(&self) -> Vec<ServiceInfo> {
        self.set.load().candidates.iter().map(|i| (*i.info).clone()).collect()
    }

    /// Each candidate with whether it is ejected, its calls in flight and its latency (µs).
    pub(super) fn instance_states(&self) -> Vec<(ServiceInfo, bool, usize, u64)> {
        let set = self.set.load();
        set.candidates
            .iter()
            .map(|i| ((*i.info).clone(), i.is_ejected(), i.in_flight(), i.latency_us()))
            .collect()
    }

    /// One pick exactly as a call makes it, without the call.
    #[cfg(feature = "bench")]
    pub(super) fn pick_once(&self, key: Option<&[u8]>) -> bool {
        self.set.load().pick(&self.sequence, key.map(hash), &[]).is_some()
    }

    pub(super) fn ejected(&self) -> Vec<ServiceInfo> {
        let set = self.set.load();
        set.admitted
            .iter()
            .filter(|i| i.is_ejected())
            .map(|i| (*i.info).clone())
            .collect()
    }

    /// Applies the watch's current snapshot, then every later one, until the watch ends. On
    /// its end the last instance set stays: registry trouble never empties a client.
    pub(super) fn follow(
        self: &Arc<Self>,
        mut watch: InstancesWatch,
        registry: Arc<dyn Discovery>,
    ) -> tokio::task::JoinHandle<()> {
        self.apply(&watch.current());
        let balancer = Arc::clone(self);
        tokio::spawn(async move {
            let _registry = registry;
            while let Ok(snapshot) = watch.changed().await {
                balancer.apply(&snapshot);
            }
            tracing::debug!(service = %balancer.service, "registry watch ended; keeping the last instance set");
        })
    }

    /// Applies what changed from the last snapshot applied to `snapshot`.
    fn apply(&self, snapshot: &Instances) {
        let mut updater = self.updater.lock().expect("balancer updater lock");
        let updater = &mut *updater;
        let previous = std::mem::replace(&mut updater.applied, snapshot.clone());
        let mut gone = Vec::new();
        // The keys that changed, for the consistent-hash ring.
        let mut changed = Vec::new();
        let hashing = matches!(self.options.policy, Policy::ConsistentHash(_));
        for change in snapshot.changes_since(&previous) {
            if hashing {
                changed.push(change.info().uri());
            }
            match change {
                Change::Added(info) => self.admit(updater, info, None),
                Change::Removed(info) => gone.extend(updater.remove(&info.uri())),
                Change::Updated { new, .. } => {
                    // Re-announced or re-configured: fresh state, but the connection stays.
                    let old = updater.remove(&new.uri());
                    self.admit(updater, new, old.as_ref().and_then(|o| o.existing_link()));
                    gone.extend(old.filter(|_| updater.admitted.get(&new.uri()).is_none()));
                }
            }
        }
        let filter = &self.options.filter;
        let local_enough = updater.local.len() >= filter.min_zone_instances.max(1);
        let local = filter.zone.is_some() && local_enough;
        let chosen = match local {
            true => &updater.local,
            false => &updater.admitted,
        };
        let candidates = chosen.list().clone();
        let max_weight = chosen.max_weight();
        tracing::debug!(
            service = %self.service,
            registered = snapshot.len(),
            candidates = candidates.len(),
            revision = snapshot.revision(),
            "instance set updated"
        );
        metrics()
            .client_instances
            .with_label_values(&[&self.service])
            .set(candidates.len() as i64);
        let picker = Picker::build(&self.options.policy, max_weight, || updater.ring(local, &changed));
        self.set.store(Arc::new(InstanceSet {
            admitted: updater.admitted.list().clone(),
            candidates,
            picker,
            registered: snapshot.len(),
        }));
        // Their series would otherwise stay forever: addresses churn, the metrics must not grow.
        for instance in gone {
            instance.forget_metrics(&self.service);
        }
    }

    /// Adds `info` to the instance set if the filter admits it and its address can be dialled.
    fn admit(&self, updater: &mut Updater, info: &Arc<ServiceInfo>, link: Option<Arc<Link>>) {
        let filter = &self.options.filter;
        if !filter.admits(info) || !valid_address(info) {
            return;
        }
        let instance = Arc::new(Instance::new(Arc::clone(info), link));
        if filter.zone.as_ref().is_some_and(|zone| *zone == info.zone) {
            updater.local.put(Arc::clone(&instance));
        }
        updater.admitted.put(instance);
    }

    /// Sets a failing instance aside for its back-off, unless it is the last one available or
    /// already set aside for this failure episode.
    pub(super) fn eject(&self, set: &InstanceSet, instance: &Arc<Instance>, reason: &dyn std::fmt::Display) {
        let others = set
            .candidates
            .iter()
            .any(|c| !Arc::ptr_eq(c, instance) && !c.is_ejected());
        if !others {
            instance.failed_without_ejection();
            return;
        }
        let ejection = &self.options.ejection;
        if let Some(period) = instance.eject(ejection.base, ejection.max) {
            metrics()
                .client_ejections
                .with_label_values(&[&*self.service, instance.info.address.as_str()])
                .inc();
            tracing::info!(service = %self.service, instance = %instance.info.address, ?period, %reason, "instance ejected");
        }
    }

    pub(super) fn hash_key(&self, request: &http::Request<tonic::body::Body>) -> Option<u64> {
        let Policy::ConsistentHash(source) = &self.options.policy else {
            return None;
        };
        match source {
            HashKey::Header(name) => request.headers().get(name).map(|v| hash(v.as_bytes())),
            HashKey::Custom(key) => key(request).map(|k| hash(&k)),
        }
    }

    pub(super) fn unavailable(&self, set: &InstanceSet) -> Status {
        Status::unavailable(format!(
            "no available instance of service `{}` ({} registered, none {})",
            self.service, set.registered, self.options.filter
        ))
    }
}

impl Updater {
    /// Takes the instance at `uri` out of the set; returns it.
    fn remove(&mut self, uri: &str) -> Option<Arc<Instance>> {
        self.local.remove(uri);
        self.admitted.remove(uri)
    }

    /// The consistent-hash ring over the candidates (the `local` ones or every admitted one),
    /// updated for the keys `changed` since the last ring, or built anew when the candidates
    /// are another list or the ring does not fit their number.
    fn ring(&mut self, local: bool, changed: &[String]) -> Ring {
        let chosen = match local {
            true => &self.local,
            false => &self.admitted,
        };
        match &mut self.ring {
            Some((ring, of_local)) if *of_local == local && ring.fits(chosen.len()) => {
                for key in changed {
                    ring.remove(key);
                    if let Some(candidate) = chosen.get(key) {
                        ring.add(candidate);
                    }
                }
            }
            _ => self.ring = Some((Ring::new(chosen.list()), local)),
        }
        self.ring
            .as_ref()
            .map(|(ring, _)| ring.clone())
            .expect("a ring was just made")
    }
}

impl InstanceSet {
    fn empty(policy: &Policy) -> Self {
        Self {
            admitted: Chunked::new(),
            candidates: Chunked::new(),
            picker: Picker::build(policy, 0, || Ring::new(&Chunked::new())),
            registered: 0,
        }
    }

    /// The policy's choice if it can take the call; else the policy's next choices; else the
    /// first that can in the policy's fallback order; else, as a last resort, an unusable one
    /// not yet tried for this call.
    ///
    /// Drawing again (rather than taking the next in order) spreads an unusable instance's
    /// share over the others as the policy spreads everything: round robin skipping a dead
    /// instance stays even instead of doubling the load on the dead one's neighbour. A hashed
    /// key keeps its stable clockwise fallback instead.
    pub(super) fn pick(
        &self,
        sequence: &AtomicU64,
        key: Option<u64>,
        tried: &[Arc<Instance>],
    ) -> Option<Arc<Instance>> {
        let n = self.candidates.len();
        if self.candidates.is_empty() {
            return None;
        }
        let untried = |i: &Arc<Instance>| !tried.iter().any(|t| Arc::ptr_eq(t, i));
        let takes = |i: &Arc<Instance>| i.is_usable() && untried(i);
        if let (Picker::Hash(ring), Some(key)) = (&self.picker, key) {
            // The key's instance, else the next clockwise: a key's fallback is stable too.
            let usable = |last_resort: bool| {
                ring.clockwise(key)
                    .find(|c| untried(c) && (last_resort || c.is_usable()))
                    .cloned()
            };
            return usable(false).or_else(|| usable(true));
        }
        let first = self.picker.pick(&self.candidates, sequence);
        if takes(self.candidates.get(first)) {
            return Some(Arc::clone(self.candidates.get(first)));
        }
        for _ in 1..n.min(MAX_DRAWS) {
            let next = self.candidates.get(self.picker.pick(&self.candidates, sequence));
            if takes(next) {
                return Some(Arc::clone(next));
            }
        }
        let usable = |last_resort: bool| {
            (1..=n)
                .map(|step| self.candidates.get((first + step) % n))
                .find(|c| untried(c) && (last_resort || c.is_usable()))
                .cloned()
        };
        usable(false).or_else(|| usable(true))
    }
}

/// Draws of the policy per call before scanning for any usable instance.
const MAX_DRAWS: usize = 16;

/// Whether `info`'s address can be dialled at all; others are skipped when a snapshot is applied.
fn valid_address(info: &ServiceInfo) -> bool {
    let valid = info
        .address
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.port_u16().is_some());
    if !valid {
        tracing::warn!(instance = %info, "skipping an instance whose address is not a valid host:port");
    }
    valid
}

/// An error and its causes, for a message that says what actually happened.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
