//! `jovianctl`, the operator's tool for a jovian etcd registry.
//!
//! - `services`: every service name; `list NAME`: its instances as a table (`--json`);
//!   `watch NAME`: live changes, one timestamped line each; `describe NAME ADDRESS`: the full
//!   entry, its override and its lease.
//! - `disable`, `enable`, `weight`, `drain`: governance overrides
//!   (`/{prefix}/{name}/configurators/{scheme}://{address}`), merged into what is there.
//! - `sd --listen ADDR`: Prometheus HTTP service discovery of every governor.
//!
//! It reads the same config as Apps (`jovian.toml` or `$JOVIAN_CONFIG`, `JOVIAN_*`
//! environment; only the `[registry]` section matters), which `--endpoints`, `--prefix`,
//! `--user`, `--password`, `--ca`, `--cert`, `--key` override. See `docs/operations.md`.

#![forbid(unsafe_code)]

mod commands;
mod format;
mod sd;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry, TlsFiles};

pub use format::{parse_address, rfc3339};

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "jovianctl", version, about = "Inspect and govern a jovian etcd registry")]
pub struct Cli {
    /// How to reach etcd (overrides the config's `[registry]` section).
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Registry settings given on the command line; each overrides the config.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// etcd members, `host:port`, comma-separated or repeated.
    #[arg(long, global = true, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The key prefix (`jovian`; `jupiter` for Go jupiter's registry).
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// etcd user, when etcd has authentication enabled.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) that signed the etcd members' certificates; turns TLS on.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for members that require one.
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// How long connecting and each request may take (`3s` unless configured).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every service with at least one registered instance.
    Services {
        /// A JSON array of names.
        #[arg(long)]
        json: bool,
    },
    /// One service's instances as etcd holds them, overrides merged.
    List {
        /// The service.
        name: String,
        /// A JSON array of instances, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Live changes to one service's instances as clients see them, one line each; ends on
    /// Ctrl-C, after `--count` changes or after `--for`.
    Watch {
        /// The service.
        name: String,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long (`30s`, `5m`).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// One instance: its entry, its override and the lease that owns it.
    Describe {
        /// The service.
        name: String,
        /// `host:port` (scheme grpc) or `scheme://host:port`.
        address: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop clients from picking an instance (`{"enable":false}`).
    Disable(Target),
    /// Let clients pick an instance again (`{"enable":true}`).
    Enable(Target),
    /// Set an instance's weight for weighted round robin (`{"weight":N}`).
    Weight {
        /// The instance.
        #[command(flatten)]
        target: Target,
        /// The new weight (0 or more; 100 is the default).
        weight: u32,
    },
    /// Disable an instance, then wait until this tool's own watch of the registry sees it
    /// unpickable.
    Drain {
        /// The instance.
        #[command(flatten)]
        target: Target,
        /// How long to wait before giving up.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Serve Prometheus HTTP service discovery (`http_sd_configs`) of every governor.
    Sd {
        /// Where to listen, `host:port` (port 0: any free port; the address is printed).
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// An instance of a service, for the governance commands.
#[derive(Debug, Args)]
pub struct Target {
    /// The service.
    pub name: String,
    /// `host:port` (scheme grpc) or `scheme://host:port`.
    pub address: String,
    /// Write the override even when no such instance is registered (to prepare one that is
    /// about to start, say).
    #[arg(long)]
    pub force: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    jovian::config::duration::parse(text).map_err(|e| format!("{e} (write durations like 500ms, 3s, 1m30s)"))
}

/// What went wrong, worded for the operator: what and what to do.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<jovian::Error> for CliError {
    fn from(error: jovian::Error) -> Self {
        CliError(error.to_string())
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = etcd_config(&cli.registry)?;
    let endpoints = config.endpoints.join(",");
    let registry = EtcdRegistry::connect(config).await.map_err(|error| match error {
        jovian::Error::Unreachable { .. } => CliError(format!(
            "{error}\n  (endpoints come from --endpoints, else registry.endpoints in jovian.toml or $JOVIAN_CONFIG, \
             else JOVIAN_REGISTRY__ENDPOINTS; tried {endpoints})"
        )),
        jovian::Error::Registry {
            operation: "authenticate",
            ..
        } => CliError(format!(
            "{error}\n  (credentials come from --user and --password, else registry.user and registry.password \
             in jovian.toml or $JOVIAN_CONFIG, else JOVIAN_REGISTRY__USER / JOVIAN_REGISTRY__PASSWORD)"
        )),
        other => CliError(other.to_string()),
    })?;
    commands::run(std::sync::Arc::new(registry), cli.command).await
}

/// The etcd settings: defaults, the config file and `JOVIAN_*` environment, then the flags.
pub fn etcd_config(args: &RegistryArgs) -> Result<EtcdConfig, CliError> {
    let config = jovian::Config::load().map_err(|e| {
        CliError(format!(
            "{e}\n  (the config is $JOVIAN_CONFIG, else ./jovian.toml, and JOVIAN_* variables)"
        ))
    })?;
    // The etcd crate's own reading of the section: its keys, defaults, layout and checks (a
    // kind other than etcd is refused there, naming registry.kind).
    let mut etcd = EtcdConfig::from_registry_config(&config.registry)?;
    if !args.endpoints.is_empty() {
        etcd.endpoints = args.endpoints.clone();
    }
    if let Some(prefix) = &args.prefix {
        etcd.prefix = prefix.clone();
    }
    match (&args.user, &args.password) {
        (Some(user), password) => {
            let password = password
                .clone()
                .or_else(|| etcd.credentials.as_ref().map(|(_, p)| p.clone()))
                .unwrap_or_default();
            etcd.credentials = Some((user.clone(), password));
        }
        (None, Some(password)) => match &mut etcd.credentials {
            Some((_, old)) => *old = password.clone(),
            None => {
                return Err(CliError(
                    "--password needs --user (or registry.user in the config)".into(),
                ));
            }
        },
        (None, None) => {}
    }
    if args.ca.is_some() || args.cert.is_some() || args.key.is_some() {
        let tls = etcd.tls.get_or_insert_with(TlsFiles::default);
        tls.ca = args.ca.clone().or(tls.ca.take());
        tls.cert = args.cert.clone().or(tls.cert.take());
        tls.key = args.key.clone().or(tls.key.take());
    }
    if let Some(timeout) = args.timeout {
        etcd.dial_timeout = timeout;
        etcd.request_timeout = timeout;
    }
    Ok(etcd)
}
