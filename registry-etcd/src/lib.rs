//! The etcd v3 [`Registry`]: leases that heal themselves, gap-free watches, governance
//! overrides.
//!
//! Keys (see the design): providers at `/{prefix}/{name}/providers/{scheme}://{address}`,
//! operator overrides at `/{prefix}/{name}/configurators/{scheme}://{address}`, metrics targets
//! at `/prometheus/job/{name}/{hostname}/{address}` (a [`EntryKind::Governor`](jovian::service::EntryKind)
//! registration). That is the default [`Layout`]; etcd's gRPC naming format, plain
//! `host:port` values, go-kratos' and go-zero's registrations are the others, for an etcd
//! shared with other stacks.
//!
//! [`from_config`] builds the registry a jovian config's `[registry]` section describes (etcd,
//! or the in-process memory registry); [`EtcdConfig::from_registry_config`] reads the section,
//! whose keys this crate owns.
//!
//! Each registry holds one lease (TTL 10 s by default) renewed every TTL/3. Whatever etcd goes
//! through (restart, wiped data, revoked lease, a key deleted by hand) the registry takes a new
//! lease if it must and puts every key back, retrying forever. Watches list, then watch from
//! the next revision, and re-list after any interruption, so no change is missed.
//!
//! For operators' tools (`jovianctl`), [`EtcdRegistry::entries`] and [`EtcdRegistry::entry`]
//! read instances as stored (entry, raw override, owning lease and its TTL left),
//! [`jovian::Discovery::metrics_targets`] reads the governors' targets, and
//! [`EtcdRegistry::update_override`] merges fields into an override with a compare-and-swap.
//!
//! ```no_run
//! # async fn demo() -> jovian::Result<()> {
//! use jovian::ServiceInfo;
//! use jovian::prelude::*;
//! use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
//!
//! let registry = EtcdRegistry::connect(EtcdConfig::new(["127.0.0.1:2379"])).await?;
//! registry.register(&ServiceInfo::new("greeter", "10.0.0.7:50051")).await?;
//! let mut watch = registry.watch("greeter").await?;
//! println!("{:?}", watch.current().addresses());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod backoff;
mod call;
mod config;
mod inspect;
mod keys;
mod layout;
mod session;
mod stats;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions};
use jovian::{Discovery, Error, Instances, InstancesWatch, Registrar, Registry, Result, ServiceInfo};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TTL, EtcdConfig, TlsFiles,
};
pub use inspect::{EntryRecord, LeaseInfo};
pub use layout::{
    DEFAULT_ETCD_NAMING_TEMPLATE, DEFAULT_GO_ZERO_TEMPLATE, DEFAULT_KRATOS_TEMPLATE, DEFAULT_PLAIN_TEMPLATE, Layout,
};
pub use stats::StatsSnapshot;

use call::{with_client, within};
use keys::Keys;
use session::Session;
use stats::Stats;
use watch::Watcher;

/// The registry `config`'s `[registry]` section describes, connected: `kind = "etcd"` (the
/// default) an [`EtcdRegistry`] with the section's settings
/// ([`EtcdConfig::from_registry_config`]), `kind = "memory"` an in-process
/// [`MemoryRegistry`](jovian_registry_memory::MemoryRegistry)
/// ([`from_registry_config`](jovian_registry_memory::MemoryRegistry::from_registry_config)).
///
/// It lives here, not in the core, so that dependencies point one way: the core knows no
/// registry; this crate knows the memory registry, which knows none. Errors are those of the
/// section (naming the key: `registry.ttl`, `registry.kind`) and of connecting: no etcd member
/// answering within the dial timeout is [`Error::Unreachable`] naming the endpoints.
///
/// ```no_run
/// # async fn demo() -> jovian::Result<()> {
/// let config = jovian::Config::load()?; // jovian.toml, JOVIAN_REGISTRY__*
/// let registry = jovian_registry_etcd::from_config(&config).await?;
/// let app = jovian::App::from_config(config).registry(registry);
/// # let _ = app; Ok(()) }
/// ```
pub async fn from_config(config: &jovian::Config) -> Result<Arc<dyn Registry>> {
    let registry = &config.registry;
    match registry.kind.as_str() {
        config::KIND => Ok(Arc::new(
            EtcdRegistry::connect(EtcdConfig::from_registry_config(registry)?).await?,
        )),
        jovian_registry_memory::KIND => Ok(Arc::new(jovian_registry_memory::MemoryRegistry::from_registry_config(
            registry,
        )?)),
        other => Err(Error::Config {
            key: "registry.kind".into(),
            expected: "one of: etcd, memory".into(),
            found: format!("{other:?}"),
        }),
    }
}

/// A registry client on an etcd cluster.
pub struct EtcdRegistry {
    config: EtcdConfig,
    keys: Keys,
    session: Arc<Session>,
    watcher: Watcher,
    stopped: CancellationToken,
    stats: Arc<Stats>,
}

impl EtcdRegistry {
    /// Connects and checks that etcd answers and lets this client read the prefix. Fails within
    /// the dial timeout with an error naming the endpoints when no member answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let options = config.connect_options()?;
        let unreachable = |reason: String| Error::Unreachable {
            endpoints: config.endpoints_display(),
            reason,
        };
        let client = match within(config.dial_timeout, || {
            Client::connect(config.endpoint_urls(), Some(options.clone()))
        })
        .await
        {
            Ok(client) => client,
            Err(error) if is_auth_failure(&error) => {
                return Err(Error::registry(
                    "authenticate",
                    format!("{error}; check registry.user and registry.password"),
                ));
            }
            Err(error) => return Err(unreachable(error.to_string())),
        };
        let keys = config.keys()?;
        let root = keys.root();
        let (from, end) = (Keys::range_start(&root), Keys::prefix_end(&root));
        let probe = |mut c: Client| {
            let (from, end) = (from.clone(), end.clone());
            async move {
                c.get(from, Some(GetOptions::new().with_range(end).with_count_only()))
                    .await
            }
        };
        match with_client(&client, config.dial_timeout, probe).await {
            Ok(_) => {}
            Err(error) if error.is_permission_denied() => {
                return Err(error.into_error("read the registry prefix"));
            }
            Err(error) if is_auth_failure(&error) => {
                return Err(Error::registry(
                    "authenticate",
                    format!("{error}; etcd has authentication enabled: set registry.user and registry.password"),
                ));
            }
            Err(error) => return Err(unreachable(error.to_string())),
        }
        let stopped = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let session = Session::new(
            client.clone(),
            config.ttl,
            config.request_timeout,
            stopped.clone(),
            stats.clone(),
        );
        let watcher = Watcher {
            client,
            keys: keys.clone(),
            request_timeout: config.request_timeout,
            relist_grace: config.relist_grace,
            max_message_bytes: config.max_message_bytes,
            stopped: stopped.clone(),
            stats: stats.clone(),
        };
        Ok(Self {
            config,
            keys,
            session,
            watcher,
            stopped,
            stats,
        })
    }

    /// The settings this registry runs with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// What the registry has done to stay correct so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for EtcdRegistry {
    /// Stops renewing and watching without unregistering: the keys expire with the lease, as
    /// after a crash. Call [`close`](Registrar::close) to remove them at once.
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

#[async_trait]
impl Registrar for EtcdRegistry {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        let span = tracing::info_span!("registry.register", service = %info.name, address = %info.address);
        observed("register", self.register_entry(info).instrument(span)).await
    }

    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        let span = tracing::info_span!("registry.unregister", service = %info.name, address = %info.address);
        // An entry the layout cannot store was never registered: nothing to remove.
        let Ok((key, _)) = self.keys.entry(info) else {
            return Ok(());
        };
        observed("unregister", self.session.delete(&key).instrument(span)).await
    }

    async fn close(&self) -> Result<()> {
        observed(
            "close",
            self.session.close().instrument(tracing::info_span!("registry.close")),
        )
        .await
    }
}

#[async_trait]
impl Discovery for EtcdRegistry {
    async fn list(&self, name: &str) -> Result<Instances> {
        self.ensure_open()?;
        let list = async { self.watcher.list(name).await.map_err(|e| e.into_error("list")) };
        observed(
            "list",
            list.instrument(tracing::info_span!("registry.list", service = name)),
        )
        .await
    }

    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        self.ensure_open()?;
        let watch = async { self.watcher.watch(name).await.map_err(|e| e.into_error("watch")) };
        observed(
            "watch",
            watch.instrument(tracing::info_span!("registry.watch", service = name)),
        )
        .await
    }

    async fn services(&self) -> Result<Vec<String>> {
        self.ensure_open()?;
        let services = async { self.watcher.services().await.map_err(|e| e.into_error("services")) };
        observed(
            "services",
            services.instrument(tracing::info_span!("registry.services")),
        )
        .await
    }

    async fn metrics_targets(&self) -> Result<Vec<jovian::MetricsTarget>> {
        observed(
            "metrics_targets",
            self.read_metrics_targets()
                .instrument(tracing::info_span!("registry.metrics_targets")),
        )
        .await
    }
}

/// Runs a registry operation, counting it by outcome in the metrics.
async fn observed<T>(operation: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
    let result = call.await;
    jovian::metrics::metrics().registry_operation(stats::KIND, operation, &result);
    if let Err(error) = &result {
        tracing::debug!(operation, %error, "registry operation failed");
    }
    result
}

impl EtcdRegistry {
    async fn register_entry(&self, info: &ServiceInfo) -> Result<()> {
        info.validate().map_err(|source| Error::InvalidServiceInfo {
            service: info.to_string(),
            source,
        })?;
        let (key, value) = self.keys.entry(info).map_err(|source| Error::InvalidServiceInfo {
            service: info.to_string(),
            source,
        })?;
        self.session.put(key, value).await
    }

    fn ensure_open(&self) -> Result<()> {
        match self.stopped.is_cancelled() {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }
}

/// etcd refused who we are: wrong or unknown credentials, or none where etcd requires them.
fn is_auth_failure(error: &call::CallError) -> bool {
    matches!(error, call::CallError::Etcd(etcd_client::Error::GRpcStatus(status))
        if status.code() == tonic::Code::Unauthenticated
            || ["authentication failed", "user name is empty", "user name not found", "invalid auth token"]
                .iter()
                .any(|m| status.message().contains(m)))
}
