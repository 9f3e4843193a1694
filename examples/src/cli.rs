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

/// Registry options.
#[derive(Clone, Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry to register in and discover through.
    #[arg(long, value_enum, default_value = "etcd")]
    pub registry: RegistryKind,
    /// etcd endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix in etcd.
    #[arg(long, default_value = "jovian")]
    pub prefix: String,
}

impl RegistryArgs {
    /// Connects to the chosen registry.
    pub async fn connect(&self) -> jovian::Result<Arc<dyn Registry>> {
        Ok(match self.registry {
            RegistryKind::Memory => Arc::new(jovian_registry_memory::MemoryRegistry::new()),
            RegistryKind::Etcd => {
                let config =
                    jovian_registry_etcd::EtcdConfig::new(self.etcd_endpoints.clone()).prefix(self.prefix.clone());
                Arc::new(jovian_registry_etcd::EtcdRegistry::connect(config).await?)
            }
        })
    }
}

/// Logs to stderr, at `RUST_LOG` or `default` level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
