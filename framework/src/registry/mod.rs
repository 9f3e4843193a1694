//! The registry contract: where servers announce themselves and clients find them.
//!
//! Split the way kratos splits it: a [`Registrar`] registers, a [`Discovery`] finds, and a
//! [`Registry`] does both. A read-only source (a static list, DNS) implements [`Discovery`]
//! alone and clients take it as they take a full registry; an `App` needs a
//! [`Registry`], since it registers its servers and builds clients from the same place.
//!
//! Implementations live in their own crates (`jovian-registry-memory`, `jovian-registry-etcd`)
//! and must all pass the same conformance suite (`jovian-tests`' `conformance_tests!`), so code
//! written against one behaves the same on another.
//!
//! [`Static`] is a discovery of fixed addresses, for services called at known places.
//!
//! [`Compound`] is a registry made of several: it registers everywhere and discovers from all,
//! which is how a fleet moves between etcd clusters, prefixes or layouts without downtime.

mod compound;
mod fixed;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Instances, InstancesWatch, Result, ServiceInfo};

pub use compound::{Compound, CompoundBuilder, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_RETRY_DELAY, Pending};
pub use fixed::Static;

/// Where servers register.
///
/// Registrations are bound to the registrar's lease: they stay while it keeps the lease alive
/// and vanish about one TTL after the owning process stops renewing it (a crash), so dead
/// instances never linger.
#[async_trait]
pub trait Registrar: Send + Sync + 'static {
    /// Registers `info` under its name, bound to this registry's lease and kept alive until
    /// [`unregister`](Registrar::unregister) or [`close`](Registrar::close). Registering the
    /// same `scheme://address` again replaces the entry.
    async fn register(&self, info: &ServiceInfo) -> Result<()>;

    /// Removes an instance this registry registered. Removing one that is not there is not an
    /// error.
    async fn unregister(&self, info: &ServiceInfo) -> Result<()>;

    /// Unregisters everything this registry registered, releases its lease and stops its
    /// background tasks, watches included. Later calls fail with
    /// [`Error::Closed`](crate::Error::Closed).
    async fn close(&self) -> Result<()>;
}

/// Where clients find services.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// The current instances of `name`.
    async fn list(&self, name: &str) -> Result<Instances>;

    /// A live view of `name`'s instances, starting with the current snapshot. It ends (its
    /// [`changed`](InstancesWatch::changed) fails with [`Error::Closed`](crate::Error::Closed))
    /// when the registry is closed.
    async fn watch(&self, name: &str) -> Result<InstancesWatch>;

    /// The name of every service that has at least one registered instance, sorted.
    async fn services(&self) -> Result<Vec<String>>;

    /// Every governor's metrics target (the
    /// [`EntryKind::Governor`](crate::service::EntryKind) entries Apps register), each with
    /// the provider entries of its App for labels, sorted by app, hostname and target; read
    /// now, for Prometheus service discovery (`jovian::sd`).
    ///
    /// The default finds none: a source that keeps no governor entries (a static list, DNS)
    /// need not implement it.
    async fn metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        Ok(Vec::new())
    }
}

/// A registry that both registers and discovers: what an `App` runs on.
/// Implemented for everything that is both a [`Registrar`] and a [`Discovery`].
pub trait Registry: Registrar + Discovery {}

impl<T: Registrar + Discovery + ?Sized> Registry for T {}

#[async_trait]
impl<R: Registrar + ?Sized> Registrar for Arc<R> {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        (**self).register(info).await
    }
    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        (**self).unregister(info).await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

#[async_trait]
impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    async fn list(&self, name: &str) -> Result<Instances> {
        (**self).list(name).await
    }
    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        (**self).watch(name).await
    }
    async fn services(&self) -> Result<Vec<String>> {
        (**self).services().await
    }
    async fn metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        (**self).metrics_targets().await
    }
}

/// One governor's metrics target, as a registry keeps it (etcd: a
/// `/prometheus/job/{app}/{hostname}/{address}` key).
///
/// Fields may be added in any release: a registry builds one with [`MetricsTarget::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsTarget {
    /// The App's name.
    pub app: String,
    /// The host it runs on (may be empty).
    pub hostname: String,
    /// What a scraper dials: the governor's `host:port`.
    pub target: String,
    /// The provider entries the same App registered (its servers), for labels: service, zone,
    /// region, version. Empty when it serves none, or when the registry cannot tell which
    /// entries belong to the App.
    pub instances: Vec<ServiceInfo>,
}

impl MetricsTarget {
    /// The governor of App `app` on `hostname`, scraped at `target` (`host:port`), with no
    /// instances.
    pub fn new(app: impl Into<String>, hostname: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            hostname: hostname.into(),
            target: target.into(),
            instances: Vec::new(),
        }
    }

    /// Sets the provider entries the same App registered.
    pub fn with_instances(mut self, instances: Vec<ServiceInfo>) -> Self {
        self.instances = instances;
        self
    }
}
