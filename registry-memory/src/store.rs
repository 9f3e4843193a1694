//! The shared keyspace: entries bound to leases, a revision counter, and a watch per service.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jovian::service::EntryKind;
use jovian::{Instances, InstancesPublisher, InstancesWatch, MetricsTarget, ServiceInfo};
use tokio::time::Instant;

use crate::{DEFAULT_TTL, MemoryRegistry};

pub(crate) type LeaseId = u64;

/// Where governors' entries live, apart from every service, as in etcd's layout.
const METRICS_ROOT: &str = "/prometheus/job/";

/// The keyspace [`MemoryRegistry`]s share, like one etcd cluster. Cloning it shares it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Keyspace>>,
}

#[derive(Default)]
struct Keyspace {
    revision: i64,
    next_lease: LeaseId,
    services: HashMap<String, Service>,
    leases: HashMap<LeaseId, Lease>,
}

struct Service {
    /// The entries, kept as the snapshot watchers get, so a change costs O(1) whatever the size.
    endpoints: Instances,
    leases: HashMap<String, LeaseId>,
    publisher: Option<InstancesPublisher>,
}

impl Service {
    fn new(name: &str) -> Self {
        Self {
            endpoints: Instances::new(name, 0),
            leases: HashMap::new(),
            publisher: None,
        }
    }
}

struct Lease {
    deadline: Instant,
    keys: BTreeSet<(String, String)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new registry client on this store with the default TTL (10 s).
    pub fn registry(&self) -> MemoryRegistry {
        self.registry_with_ttl(DEFAULT_TTL)
    }

    /// A new registry client on this store whose lease lives `ttl` without renewal.
    pub fn registry_with_ttl(&self, ttl: Duration) -> MemoryRegistry {
        MemoryRegistry::on_store(self.clone(), ttl)
    }

    pub(crate) fn grant(&self, ttl: Duration) -> LeaseId {
        let mut keyspace = self.lock();
        keyspace.next_lease += 1;
        let id = keyspace.next_lease;
        let lease = Lease {
            deadline: Instant::now() + ttl,
            keys: BTreeSet::new(),
        };
        keyspace.leases.insert(id, lease);
        drop(keyspace);
        tokio::spawn(expire_when_due(Arc::downgrade(&self.inner), id));
        id
    }

    /// Extends the lease to `ttl` from now; false when it has expired or was revoked.
    pub(crate) fn keep_alive(&self, lease: LeaseId, ttl: Duration) -> bool {
        match self.lock().leases.get_mut(&lease) {
            Some(lease) => {
                lease.deadline = Instant::now() + ttl;
                true
            }
            None => false,
        }
    }

    pub(crate) fn revoke(&self, lease: LeaseId) {
        self.lock().drop_lease(lease);
    }

    pub(crate) fn put(&self, info: &ServiceInfo, lease: LeaseId) {
        let mut keyspace = self.lock();
        let key = entry_key(info);
        let Some(owner) = keyspace.leases.get_mut(&lease) else {
            return;
        };
        owner.keys.insert(key.clone());
        let service = keyspace
            .services
            .entry(key.0.clone())
            .or_insert_with(|| Service::new(&key.0));
        service.endpoints.insert(info.clone());
        let previous = service.leases.insert(key.1.clone(), lease);
        if let Some(old_lease) = previous.filter(|old| *old != lease)
            && let Some(old) = keyspace.leases.get_mut(&old_lease)
        {
            old.keys.remove(&key);
        }
        keyspace.changed([key.0]);
    }

    pub(crate) fn delete(&self, service: &str, uri: &str) {
        let mut keyspace = self.lock();
        let removed = keyspace.services.get_mut(service).and_then(|s| {
            s.endpoints.remove(uri);
            s.leases.remove(uri)
        });
        if let Some(lease) = removed {
            if let Some(lease) = keyspace.leases.get_mut(&lease) {
                lease.keys.remove(&(service.to_owned(), uri.to_owned()));
            }
            keyspace.changed([service.to_owned()]);
        }
    }

    pub(crate) fn snapshot(&self, service: &str) -> Instances {
        self.lock().snapshot(service)
    }

    /// Every service with an instance, sorted; metrics targets are not services.
    pub(crate) fn services(&self) -> Vec<String> {
        let keyspace = self.lock();
        let mut names: Vec<String> = keyspace
            .services
            .iter()
            .filter(|(name, s)| !s.endpoints.is_empty() && !name.starts_with(METRICS_ROOT))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Every governor entry as a metrics target, with the provider entries on the same lease
    /// (the same App's registry) whose app id is the App's or empty, as etcd's layout gives.
    pub(crate) fn metrics_targets(&self) -> Vec<MetricsTarget> {
        let keyspace = self.lock();
        let mut targets: Vec<MetricsTarget> = keyspace
            .services
            .iter()
            .filter(|(name, _)| name.starts_with(METRICS_ROOT))
            .flat_map(|(_, governors)| governors.endpoints.iter().map(move |info| (governors, info)))
            .map(|(governors, info)| {
                let lease = governors.leases.get(&info.uri()).and_then(|id| keyspace.leases.get(id));
                let mut instances: Vec<ServiceInfo> = lease
                    .into_iter()
                    .flat_map(|lease| lease.keys.iter())
                    .filter(|(service, _)| !service.starts_with(METRICS_ROOT))
                    .filter_map(|(service, uri)| keyspace.services.get(service)?.endpoints.get(uri))
                    .filter(|entry| entry.kind == EntryKind::Provider)
                    .filter(|entry| entry.app_id == info.name || entry.app_id.is_empty())
                    .map(|entry| ServiceInfo::clone(entry))
                    .collect();
                instances.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
                MetricsTarget::new(&info.name, &info.hostname, &info.address).with_instances(instances)
            })
            .collect();
        targets.sort_by(|a, b| (&a.app, &a.hostname, &a.target).cmp(&(&b.app, &b.hostname, &b.target)));
        targets
    }

    pub(crate) fn watch(&self, service: &str) -> InstancesWatch {
        let mut keyspace = self.lock();
        let snapshot = keyspace.snapshot(service);
        let entry = keyspace
            .services
            .entry(service.to_owned())
            .or_insert_with(|| Service::new(service));
        match &entry.publisher {
            Some(publisher) => publisher.subscribe(),
            None => {
                let (publisher, watch) = InstancesWatch::channel(snapshot);
                entry.publisher = Some(publisher);
                watch
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keyspace> {
        self.inner.lock().expect("memory store lock")
    }
}

/// Where an entry lives: providers under their service; governors (metrics targets) apart, as
/// etcd keeps them under `/prometheus/job/`, so they are never listed as providers.
pub(crate) fn entry_key(info: &ServiceInfo) -> (String, String) {
    let service = match info.kind {
        EntryKind::Governor => format!("{METRICS_ROOT}{}", info.name),
        _ => info.name.clone(),
    };
    (service, info.uri())
}

impl Keyspace {
    fn snapshot(&self, service: &str) -> Instances {
        let mut snapshot = match self.services.get(service) {
            Some(s) => s.endpoints.clone(),
            None => Instances::new(service, 0),
        };
        snapshot.set_revision(self.revision);
        snapshot
    }

    fn drop_lease(&mut self, lease: LeaseId) {
        let Some(lease) = self.leases.remove(&lease) else {
            return;
        };
        let mut touched = BTreeSet::new();
        for (service, uri) in lease.keys {
            if let Some(s) = self.services.get_mut(&service) {
                s.endpoints.remove(&uri);
                s.leases.remove(&uri);
                touched.insert(service);
            }
        }
        self.changed(touched);
    }

    /// Bumps the revision once for the change and publishes the new snapshot of every touched
    /// service that somebody watches.
    fn changed(&mut self, services: impl IntoIterator<Item = String>) {
        self.revision += 1;
        for service in services {
            let snapshot = self.snapshot(&service);
            if let Some(publisher) = self.services.get(&service).and_then(|s| s.publisher.as_ref()) {
                publisher.publish(snapshot);
            }
        }
    }
}

/// Drops the lease, and every entry bound to it, once its deadline passes without renewal.
async fn expire_when_due(keyspace: Weak<Mutex<Keyspace>>, lease: LeaseId) {
    loop {
        let deadline = {
            let Some(keyspace) = keyspace.upgrade() else {
                return;
            };
            let mut keyspace = keyspace.lock().expect("memory store lock");
            let Some(deadline) = keyspace.leases.get(&lease).map(|l| l.deadline) else {
                return;
            };
            if deadline <= Instant::now() {
                tracing::debug!(lease, "lease expired");
                keyspace.drop_lease(lease);
                return;
            }
            deadline
        };
        tokio::time::sleep_until(deadline).await;
    }
}
