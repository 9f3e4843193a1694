//! A [`Discovery`] of fixed addresses: [`Static`], for the services a client calls at known
//! places (a sidecar on localhost, a single backend, a test) rather than through a registry.
//! Its instances never change and never expire; what balancing, ejection, retries and
//! deadlines do for a registry's instances they do for these.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::Discovery;
use crate::{Instances, InstancesPublisher, InstancesWatch, Result, ServiceInfo};

/// Fixed instances per service, each an address and nothing else (no zone, weight or
/// metadata, so such an instance is pinged only as stock gRPC servers allow).
///
/// ```
/// # async fn demo() -> jovian::Result<()> {
/// use jovian::ClientBuilder;
/// use jovian::registry::Static;
///
/// let sidecar = Static::new().service("greeter", ["127.0.0.1:50051", "127.0.0.1:50052"]);
/// let channel = ClientBuilder::new(sidecar).build("greeter").await?;
/// assert_eq!(channel.instance_count(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Static {
    services: BTreeMap<String, InstancesPublisher>,
}

impl Static {
    /// No service at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` at `addresses` (`host:port`), replacing what it had.
    pub fn service<A: Into<String>>(mut self, name: &str, addresses: impl IntoIterator<Item = A>) -> Self {
        let instances = addresses.into_iter().map(|address| ServiceInfo::new(name, address));
        let (publisher, _) = InstancesWatch::channel(Instances::from_instances(name, 0, instances));
        self.services.insert(name.to_owned(), publisher);
        self
    }
}

#[async_trait]
impl Discovery for Static {
    /// `name`'s instances; none for a service it was not given.
    async fn list(&self, name: &str) -> Result<Instances> {
        Ok(match self.services.get(name) {
            Some(publisher) => publisher.current(),
            None => Instances::new(name, 0),
        })
    }

    /// A watch that never changes; for a service it was not given, an empty one that has
    /// ended.
    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        Ok(match self.services.get(name) {
            Some(publisher) => publisher.subscribe(),
            // Nothing will ever come: the watch ends at once, and a client keeps its empty set.
            None => InstancesWatch::channel(Instances::new(name, 0)).1,
        })
    }

    async fn services(&self) -> Result<Vec<String>> {
        Ok(self.services.keys().cloned().collect())
    }
}
