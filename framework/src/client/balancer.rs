//! The instance set a [`ServiceChannel`](super::ServiceChannel) picks from, and how snapshots
//! update it.
//!
//! Picks read an immutable instance list through an atomic pointer and advance one atomic
//! counter: no lock on the call path. Updates build a new list, reusing the channel (and so the
//! connection) of every instance that stays, and swap it in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::ClientOptions;
use crate::{Endpoints, EndpointsWatch, Registry, ServiceInfo};

pub(super) struct Balancer {
    service: String,
    options: ClientOptions,
    instances: ArcSwap<Vec<Instance>>,
    next: AtomicUsize,
}

#[derive(Clone)]
struct Instance {
    info: ServiceInfo,
    channel: Channel,
}

impl Balancer {
    pub(super) fn new(service: &str, options: ClientOptions) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_owned(),
            options,
            instances: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn service(&self) -> &str {
        &self.service
    }

    pub(super) fn len(&self) -> usize {
        self.instances.load().len()
    }

    pub(super) fn instances(&self) -> Vec<ServiceInfo> {
        self.instances
            .load()
            .iter()
            .map(|i| i.info.clone())
            .collect()
    }

    /// The channel of the next instance in round-robin order, or `Unavailable` naming the
    /// service when there is none.
    pub(super) fn pick(&self) -> Result<Channel, Status> {
        let instances = self.instances.load();
        if instances.is_empty() {
            return Err(Status::unavailable(format!(
                "no available instance of service `{}` (none registered, enabled and healthy with scheme `{}`)",
                self.service, self.options.scheme
            )));
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % instances.len();
        Ok(instances[index].channel.clone())
    }

    /// Applies the watch's current snapshot, then every later one, until the watch ends. On
    /// its end the last instance set stays: registry trouble never empties a client.
    pub(super) fn follow(
        self: &Arc<Self>,
        mut watch: EndpointsWatch,
        registry: Arc<dyn Registry>,
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

    fn apply(&self, snapshot: &Endpoints) {
        let current = self.instances.load();
        let mut reusable: HashMap<&str, &Channel> = current
            .iter()
            .map(|i| (i.info.address.as_str(), &i.channel))
            .collect();
        let next: Vec<Instance> = snapshot
            .instances
            .values()
            .filter(|info| info.is_available() && info.scheme == self.options.scheme)
            .filter_map(|info| {
                let channel = match reusable.remove(info.address.as_str()) {
                    Some(channel) => channel.clone(),
                    None => self.connect_lazily(info)?,
                };
                Some(Instance {
                    info: info.clone(),
                    channel,
                })
            })
            .collect();
        tracing::debug!(service = %self.service, instances = next.len(), revision = snapshot.revision, "instance set updated");
        self.instances.store(Arc::new(next));
    }

    fn connect_lazily(&self, info: &ServiceInfo) -> Option<Channel> {
        let endpoint = match Endpoint::from_shared(format!("http://{}", info.address)) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::warn!(instance = %info, %error, "skipping an instance whose address is not a valid URI authority");
                return None;
            }
        };
        let options = &self.options;
        let endpoint = endpoint
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(true);
        Some(endpoint.connect_lazy())
    }
}
