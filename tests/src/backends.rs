//! The conformance backends: the in-memory store and a real single-member etcd.

use std::time::Duration;

use async_trait::async_trait;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry, Layout};
use jovian_registry_memory::{MemoryRegistry, MemoryStore};

use crate::etcd::EtcdCluster;
use jovian::testing::Backend;

/// Registries on one [`MemoryStore`].
#[derive(Default)]
pub struct MemoryBackend(pub MemoryStore);

#[async_trait]
impl Backend for MemoryBackend {
    type Registry = MemoryRegistry;

    async fn registry(&self, ttl: Duration) -> MemoryRegistry {
        self.0.registry_with_ttl(ttl)
    }

    fn short_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Registries on a single-member etcd started for the test, all with one key/value layout.
pub struct EtcdBackend(pub EtcdCluster, pub Layout);

impl EtcdBackend {
    /// Starts a fresh etcd; registries use the jupiter layout.
    pub async fn start() -> Self {
        Self::with_layout(Layout::Jupiter).await
    }

    /// Starts a fresh etcd; registries use `layout`.
    pub async fn with_layout(layout: Layout) -> Self {
        Self(EtcdCluster::single().await, layout)
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    type Registry = EtcdRegistry;

    async fn registry(&self, ttl: Duration) -> EtcdRegistry {
        let config = EtcdConfig::new(self.0.endpoints()).ttl(ttl).layout(self.1.clone());
        EtcdRegistry::connect(config).await.expect("connect to the test etcd")
    }

    /// The test cluster's 50 ms heartbeat lets etcd honour 1 s leases (its floor is 1.5
    /// election timeouts, rounded up to whole seconds).
    fn short_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Compound registries ([`jovian::registry::Compound`]) over two [`MemoryStore`]s: each
/// "process" registers in both and discovers from both.
#[derive(Default)]
pub struct CompoundBackend(pub MemoryStore, pub MemoryStore);

#[async_trait]
impl Backend for CompoundBackend {
    type Registry = jovian::registry::Compound;

    async fn registry(&self, ttl: Duration) -> jovian::registry::Compound {
        jovian::registry::Compound::builder()
            .source("first", self.0.registry_with_ttl(ttl))
            .source("second", self.1.registry_with_ttl(ttl))
            .build()
            .expect("two named sources")
    }

    fn short_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}
