//! Command-line options the example binaries share: which registry to use and how to reach it.

use std::sync::Arc;

use jovian::Registry;

/// Which registry to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RegistryKind {
    /// In this process only: useful for trying things out, invisible to other processes.
    Memory,
    /// etcd v3, shared by every process that points at the same endpoints and prefix.
    Etcd,
}

/// Registry options. Each one left out comes from the jovian config (`jovian.toml`,
/// `JOVIAN_REGISTRY__*`), else its default (etcd at 127.0.0.1:2379, prefix `jovian`).
#[derive(Clone, Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry to register in and discover through.
    #[arg(long, value_enum)]
    pub registry: Option<RegistryKind>,
    /// etcd endpoints, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// The key prefix in etcd.
    #[arg(long)]
    pub prefix: Option<String>,
}

impl RegistryArgs {
    /// Connects to the chosen registry, with the jovian config loaded from the usual places.
    pub async fn connect(&self) -> jovian::Result<Arc<dyn Registry>> {
        self.connect_with(&jovian::Config::load()?).await
    }

    /// Connects to the chosen registry; what these options leave out comes from `config`.
    pub async fn connect_with(&self, config: &jovian::Config) -> jovian::Result<Arc<dyn Registry>> {
        let mut config = config.registry.clone();
        if let Some(endpoints) = &self.etcd_endpoints {
            config.endpoints = endpoints.clone();
        }
        if let Some(prefix) = &self.prefix {
            config.prefix = prefix.clone();
        }
        let kind = match (self.registry, config.kind) {
            (Some(kind), _) => kind,
            (None, jovian::config::RegistryKind::Etcd) => RegistryKind::Etcd,
            (None, jovian::config::RegistryKind::Memory) => RegistryKind::Memory,
            (None, other) => {
                return Err(jovian::Error::Config {
                    key: "registry.kind".into(),
                    expected: "etcd or memory, the registries these examples know".into(),
                    found: format!("{other:?}"),
                });
            }
        };
        Ok(match kind {
            RegistryKind::Memory => Arc::new(jovian_registry_memory::MemoryRegistry::new()),
            RegistryKind::Etcd => {
                let etcd = jovian_registry_etcd::EtcdConfig::from_registry_config(&config)?;
                Arc::new(jovian_registry_etcd::EtcdRegistry::connect(etcd).await?)
            }
        })
    }
}
