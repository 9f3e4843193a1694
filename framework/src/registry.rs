//! The registry contract: where servers announce themselves and clients find them.
//!
//! Implementations live in their own crates (`jovian-registry-memory`, `jovian-registry-etcd`)
//! and must all pass the same conformance suite, so code written against one behaves the same
//! on another.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Endpoints, EndpointsWatch, Result, ServiceInfo};

/// A service registry.
///
/// Registrations are bound to the registry's lease: they stay while the registry keeps the
/// lease alive and vanish about one TTL after the owning process stops renewing it (a crash),
/// so dead instances never linger. Watches deliver whole [`Endpoints`] snapshots.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers `info` under its name, bound to this registry's lease and kept alive until
    /// [`unregister`](Registry::unregister) or [`close`](Registry::close). Registering the same
    /// `scheme://address` again replaces the entry.
    async fn register(&self, info: &ServiceInfo) -> Result<()>;

    /// Removes an instance this registry registered. Removing one that is not there is not an
    /// error.
    async fn unregister(&self, info: &ServiceInfo) -> Result<()>;

    /// The current instances of `name`.
    async fn list(&self, name: &str) -> Result<Endpoints>;

    /// A live view of `name`'s instances, starting with the current snapshot. It ends (its
    /// [`changed`](EndpointsWatch::changed) fails with [`Error::Closed`](crate::Error::Closed))
    /// when the registry is closed.
    async fn watch(&self, name: &str) -> Result<EndpointsWatch>;

    /// Unregisters everything this registry registered, releases its lease and stops its
    /// background tasks. Later calls fail with [`Error::Closed`](crate::Error::Closed).
    async fn close(&self) -> Result<()>;
}

#[async_trait]
impl<R: Registry + ?Sized> Registry for Arc<R> {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        (**self).register(info).await
    }
    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        (**self).unregister(info).await
    }
    async fn list(&self, name: &str) -> Result<Endpoints> {
        (**self).list(name).await
    }
    async fn watch(&self, name: &str) -> Result<EndpointsWatch> {
        (**self).watch(name).await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}
