//! An in-process [`Registry`](jovian::Registry) with etcd's lease semantics, for unit tests and demos.
//!
//! A [`MemoryStore`] plays the part of an etcd cluster; each [`MemoryRegistry`] on it plays a
//! process's registry client, with its own lease. Registrations are bound to the lease, which
//! the registry renews every TTL/3 in the background. When a registry is dropped without
//! [`close`](Registrar::close) (a crash) its renewals stop and its entries vanish once the TTL
//! runs out, exactly as with etcd. Creating a store and registries is cheap: make one per test.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> jovian::Result<()> {
//! use jovian::ServiceInfo;
//! use jovian::prelude::*;
//! use jovian_registry_memory::MemoryStore;
//!
//! let store = MemoryStore::new();
//! let server_side = store.registry();
//! let client_side = store.registry();
//! server_side.register(&ServiceInfo::new("greeter", "127.0.0.1:50051")).await?;
//! assert_eq!(client_side.list("greeter").await?.len(), 1);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jovian::config::RegistryConfig;
use jovian::{Discovery, Error, Instances, InstancesWatch, MetricsTarget, Registrar, Result, ServiceInfo};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use store::LeaseId;
pub use store::MemoryStore;

/// The lease TTL of a registry unless set otherwise, as for etcd.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The registry kind this crate reads (`[registry] kind = "memory"`).
pub const KIND: &str = "memory";

/// The `[registry]` section as the memory registry reads it.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Section {
    #[serde(with = "jovian::config::positive_duration")]
    ttl: Duration,
}

impl Default for Section {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL }
    }
}

/// A registry client on a [`MemoryStore`], with its own lease.
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    store: MemoryStore,
    ttl: Duration,
    /// Cancelled on close or drop: stops the keep-alive and ends this registry's watches.
    stopped: CancellationToken,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    lease: Option<LeaseId>,
    /// What this registry registered, keyed by (service, uri), to put back after a lease loss.
    registered: BTreeMap<(String, String), ServiceInfo>,
    closed: bool,
}

impl MemoryRegistry {
    /// A registry on a store of its own, with the default TTL.
    pub fn new() -> Self {
        MemoryStore::new().registry()
    }

    /// The registry a jovian config's `[registry]` section with `kind = "memory"` describes:
    /// on a store of its own, so only this process sees it; its one key is `ttl` (10 s unless
    /// set). Errors name the key, as for every section.
    ///
    /// ```
    /// let config = jovian::Config::from_toml("[registry]\nkind = \"memory\"\nttl = \"3s\"").unwrap();
    /// let registry = jovian_registry_memory::MemoryRegistry::from_registry_config(&config.registry).unwrap();
    /// assert_eq!(registry.ttl(), std::time::Duration::from_secs(3));
    /// ```
    pub fn from_registry_config(registry: &RegistryConfig) -> Result<Self> {
        if registry.kind != KIND {
            return Err(Error::Config {
                key: "registry.kind".into(),
                expected: "\"memory\" for the in-process registry".into(),
                found: format!("{:?}", registry.kind),
            });
        }
        let section: Section = registry.settings()?;
        Ok(MemoryStore::new().registry_with_ttl(section.ttl))
    }

    pub(crate) fn on_store(store: MemoryStore, ttl: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                ttl,
                stopped: CancellationToken::new(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The store this registry lives on, to make sibling registries (other "processes").
    pub fn store(&self) -> &MemoryStore {
        &self.shared.store
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MemoryRegistry {
    /// Stops renewing without unregistering: the entries expire with the lease, as after a
    /// crash. Call [`close`](Registrar::close) to remove them at once.
    fn drop(&mut self) {
        self.shared.stopped.cancel();
    }
}

#[async_trait]
impl Registrar for MemoryRegistry {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        info.validate().map_err(|source| Error::InvalidServiceInfo {
            service: info.to_string(),
            source,
        })?;
        let shared = &self.shared;
        let mut state = shared.state.lock().expect("registry state lock");
        if state.closed {
            return Err(Error::Closed);
        }
        let lease = match state.lease {
            Some(lease) => lease,
            None => {
                let lease = shared.store.grant(shared.ttl);
                state.lease = Some(lease);
                shared.spawn_keepalive();
                lease
            }
        };
        shared.store.put(info, lease);
        state.registered.insert(store::entry_key(info), info.clone());
        Ok(())
    }

    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        let mut state = self.shared.state.lock().expect("registry state lock");
        if state.closed {
            return Err(Error::Closed);
        }
        let key = store::entry_key(info);
        state.registered.remove(&key);
        self.shared.store.delete(&key.0, &key.1);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let mut state = self.shared.state.lock().expect("registry state lock");
        if state.closed {
            return Ok(());
        }
        state.closed = true;
        state.registered.clear();
        if let Some(lease) = state.lease.take() {
            self.shared.store.revoke(lease);
        }
        self.shared.stopped.cancel();
        Ok(())
    }
}

#[async_trait]
impl Discovery for MemoryRegistry {
    async fn list(&self, name: &str) -> Result<Instances> {
        self.ensure_open()?;
        Ok(self.shared.store.snapshot(name))
    }

    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        self.ensure_open()?;
        let mut source = self.shared.store.watch(name);
        let (publisher, watch) = InstancesWatch::channel(source.current());
        let stopped = self.shared.stopped.clone();
        // The forwarder owns this registry's publisher, so closing the registry ends the
        // watches made through it while the store's own watch lives on for others.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return,
                    () = publisher.unwatched() => return,
                    changed = source.changed() => match changed {
                        Ok(snapshot) => { publisher.publish(snapshot); }
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(watch)
    }

    async fn services(&self) -> Result<Vec<String>> {
        self.ensure_open()?;
        Ok(self.shared.store.services())
    }

    async fn metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        self.ensure_open()?;
        Ok(self.shared.store.metrics_targets())
    }
}

impl MemoryRegistry {
    fn ensure_open(&self) -> Result<()> {
        match self.shared.state.lock().expect("registry state lock").closed {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }
}

impl Shared {
    /// Renews the lease every TTL/3. Should the lease have expired anyway (the runtime stalled
    /// for longer than the TTL), takes a new one and puts every registration back.
    fn spawn_keepalive(self: &Arc<Self>) {
        let shared = Arc::downgrade(self);
        let stopped = self.stopped.clone();
        let period = self.ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return,
                    () = tokio::time::sleep(period) => {}
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.renew();
            }
        });
    }

    fn renew(&self) {
        let mut state = self.state.lock().expect("registry state lock");
        let Some(lease) = state.lease else { return };
        if self.store.keep_alive(lease, self.ttl) {
            return;
        }
        tracing::warn!(
            lease,
            "lease expired before renewal; registering again under a new lease"
        );
        let lease = self.store.grant(self.ttl);
        state.lease = Some(lease);
        for info in state.registered.values() {
            self.store.put(info, lease);
        }
    }
}
