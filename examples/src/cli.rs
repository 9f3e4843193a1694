//! Command-line options the example binaries share: which registry to use and how to reach it.

use std::sync::Arc;

use jovian::Registry;

/// Registry options. Each one left out comes from the jovian config (`jovian.toml`,
/// `JOVIAN_REGISTRY__*`), else its default (etcd at 127.0.0.1:2379, prefix `jovian`).
#[derive(Clone, Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry to register in and discover through: `etcd` (shared by every process on
    /// the same endpoints and prefix) or `memory` (this process only).
    #[arg(long)]
    pub registry: Option<String>,
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
        let mut config = config.clone();
        if let Some(kind) = &self.registry {
            config.registry.kind = kind.clone();
        }
        if let Some(endpoints) = &self.etcd_endpoints {
            config.registry.set("endpoints", endpoints)?;
        }
        if let Some(prefix) = &self.prefix {
            config.registry.set("prefix", prefix)?;
        }
        jovian_registry_etcd::from_config(&config).await
    }
}
