//! Configuration: built-in defaults < `jovian.toml` < `JOVIAN_*` environment < code.
//!
//! Nothing is read unless the application asks: an `App` runs on
//! [`Config::default`] and what its code sets, so a test or a library is not changed by a
//! stray file or environment variable. A program that wants operators to configure it loads
//! the config itself, `App::from_config(Config::load()?)`.
//!
//! [`Config::load`] reads `$JOVIAN_CONFIG` if set (it must exist then), else `jovian.toml` in
//! the working directory if there is one. Environment variables nest with `__`: `JOVIAN_REGISTRY__TTL=5s`
//! sets `registry.ttl`. Durations are written `500ms`, `2s`, `1m`. Anything that does not fit
//! fails with [`Error::Config`] naming the key, what it takes and what was there; unknown keys
//! are errors too, so a typo never goes unnoticed. The `[registry]` section is the registry
//! crate's to read ([`RegistryConfig`]): its keys are checked, with the same kind of error,
//! when the registry is built from the config.
//!
//! `examples/jovian.toml` shows every key with its default.
//!
//! ```
//! let config = jovian::Config::from_toml(r#"
//!     name = "greeter"
//!     drain_delay = "2s"
//!     [clients.greeter]
//!     policy = "p2c"
//! "#).unwrap();
//! assert_eq!(config.drain_delay, std::time::Duration::from_secs(2));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::client::{
    ClientOptions, ClientTls, ConnectionOptions, Ejection, Filter, HashKey, MethodOptions, Policy, RetryPolicy,
};
pub use crate::durations::{duration, positive_duration};
use crate::durations::{duration_or_none, optional_duration};
pub use crate::http2::tls::read_pem;
pub use crate::server::ServerConfig;
use crate::{Error, Result};

/// Everything an App and its clients can be told from outside the code.
///
/// Build one with [`Config::load`], [`Config::from_toml`] or [`Config::default`] and change
/// its fields; new settings may be added, so it cannot be written as a struct literal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The application name: registered as `appId` and in the governor's metrics key.
    pub name: String,
    /// How long to keep serving after unregistering, so clients stop picking this instance.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// How long in-flight calls get to finish once serving stops.
    #[serde(with = "positive_duration")]
    pub shutdown_deadline: Duration,
    /// The governor HTTP endpoint.
    pub governor: GovernorConfig,
    /// How to reach the registry.
    pub registry: RegistryConfig,
    /// Listeners, by the service name a server registers.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Client settings, by the service name called.
    pub clients: BTreeMap<String, ClientConfig>,
    /// The `[app]` section: the application's own settings, kept as written (file, then
    /// `JOVIAN_APP__*`) and never checked by jovian; read them with [`Config::app`].
    pub app: figment::value::Dict,
}

/// The governor HTTP endpoint (`/metrics`, `/healthz`, `/debug/registry`).
///
/// Off unless configured: it is one more port for operators to open, and its registered
/// address must be one a remote Prometheus can reach, which only the deployment knows. Like a
/// server, it registers `advertise` if set, else the address it bound, and refuses to start
/// on every interface (`0.0.0.0`) without an `advertise`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GovernorConfig {
    /// Whether to run it (default false).
    pub enabled: bool,
    /// Where it listens; port 0 picks a free port.
    pub address: SocketAddr,
    /// The `host:port` to register for scrapers instead of the bound address.
    pub advertise: Option<String>,
}

/// Which registry to use, and its settings as written: the core reads only `kind`; the
/// registry crate of that kind parses the rest (its own keys, defaults and checks) with
/// [`RegistryConfig::settings`].
///
/// ```
/// let config = jovian::Config::from_toml("[registry]\nkind = \"etcd\"\nttl = \"15s\"").unwrap();
/// assert_eq!(config.registry.kind, "etcd");
/// assert_eq!(config.registry.settings["ttl"].as_str(), Some("15s"));
/// ```
///
/// `jovian_registry_etcd::from_config(&config)` builds the registry a config describes (an
/// etcd or an in-process one); `docs/configuration.md` lists every key. `Debug` shows any
/// setting whose name contains `password`, `secret` or `token` as `<redacted>`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Which registry: `etcd` (the default) or `memory`.
    pub kind: String,
    /// Every other key of the section, as written (file, then `JOVIAN_REGISTRY__*`).
    #[serde(flatten)]
    pub settings: figment::value::Dict,
}

/// The registry kind unless configured.
pub const DEFAULT_REGISTRY_KIND: &str = "etcd";

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            kind: DEFAULT_REGISTRY_KIND.to_owned(),
            settings: figment::value::Dict::new(),
        }
    }
}

impl RegistryConfig {
    /// The section's settings as a registry crate's own type `T` (which gives the defaults
    /// and, with `#[serde(deny_unknown_fields)]`, refuses keys it does not know). A value
    /// that does not fit fails with [`Error::Config`] naming the key as written
    /// (`registry.ttl`), what it takes and what was there.
    ///
    /// ```
    /// #[derive(Debug, Default, serde::Deserialize)]
    /// #[serde(default, deny_unknown_fields)]
    /// struct Mine { depth: u32 }
    ///
    /// let config = jovian::Config::from_toml("[registry]\nkind = \"mine\"\ndepth = \"deep\"").unwrap();
    /// let error = config.registry.settings::<Mine>().unwrap_err();
    /// assert!(matches!(error, jovian::Error::Config { key, .. } if key == "registry.depth"));
    /// ```
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let figment = Figment::from(Serialized::defaults(&self.settings));
        figment.extract().map_err(|error| config_error(&error, "registry"))
    }

    /// Sets one setting, as if written in the file (for command-line flags that override
    /// the config).
    pub fn set(&mut self, key: &str, value: impl Serialize) -> Result<()> {
        let value = figment::value::Value::serialize(value).map_err(|e| Error::Config {
            key: format!("registry.{key}"),
            expected: "a value a config file can hold".into(),
            found: e.to_string(),
        })?;
        self.settings.insert(key.to_owned(), value);
        Ok(())
    }
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |key: &str| ["password", "secret", "token"].iter().any(|s| key.contains(s));
        let mut debug = f.debug_struct("RegistryConfig");
        debug.field("kind", &self.kind);
        for (key, value) in &self.settings {
            match secret(key) {
                true => debug.field(key, &REDACTED),
                false => debug.field(key, value),
            };
        }
        debug.finish()
    }
}

/// What `Debug` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// One method's settings in a client (`[clients.NAME.methods."/pkg.Service/Method"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MethodConfig {
    /// The method's type, when its calls do not show it (a server-streaming method looks unary).
    #[serde(rename = "type")]
    pub grpc_type: Option<MethodType>,
    /// The deadline of its calls that set none.
    #[serde(with = "optional_duration")]
    pub timeout: Option<Duration>,
}

/// A method's type as the config names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MethodType {
    /// `unary`: one request, one response.
    Unary,
    /// `client_stream`: a stream of requests, one response.
    ClientStream,
    /// `server_stream`: one request, a stream of responses.
    ServerStream,
    /// `bidi_stream`: streams both ways.
    BidiStream,
}

impl From<crate::metrics::GrpcType> for MethodType {
    fn from(kind: crate::metrics::GrpcType) -> Self {
        use crate::metrics::GrpcType;
        match kind {
            GrpcType::Unary => MethodType::Unary,
            GrpcType::ClientStream => MethodType::ClientStream,
            GrpcType::ServerStream => MethodType::ServerStream,
            GrpcType::BidiStream => MethodType::BidiStream,
        }
    }
}

impl From<MethodType> for crate::metrics::GrpcType {
    fn from(kind: MethodType) -> Self {
        use crate::metrics::GrpcType;
        match kind {
            MethodType::Unary => GrpcType::Unary,
            MethodType::ClientStream => GrpcType::ClientStream,
            MethodType::ServerStream => GrpcType::ServerStream,
            MethodType::BidiStream => GrpcType::BidiStream,
        }
    }
}

/// A balancing policy as the config names it (`[clients.NAME] policy`); see
/// [`Policy`] for what each does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PolicyName {
    /// `round_robin`: each instance in turn.
    #[default]
    RoundRobin,
    /// `weighted_round_robin`: in proportion to each instance's weight.
    WeightedRoundRobin,
    /// `p2c`: the less loaded of two random instances.
    P2c,
    /// `consistent_hash`: by the request's `hash_header` on a hash ring.
    ConsistentHash,
    /// `random`: uniformly at random.
    Random,
}

/// How calls to one service are balanced, filtered, timed and retried: the `[clients.NAME]`
/// section, one key for each setting of [`ClientOptions`].
///
/// Its defaults are [`ClientOptions::default`]'s, and it turns into [`ClientOptions`]
/// ([`ClientConfig::options`]) and back ([`ClientConfig::from_options`]) field by field, with
/// no field left to a default: an option added to `ClientOptions` does not compile until it
/// has its key here. Only a custom consistent-hash function ([`HashKey::Custom`]) is for code
/// alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Fixed `host:port` addresses to call instead of looking the service up in the registry
    /// (`App::client` then needs no registry): a sidecar, a single
    /// backend, a test. Balanced, ejected and retried like a registry's instances.
    pub addresses: Vec<String>,
    /// How an instance is picked for each call.
    pub policy: PolicyName,
    /// For `consistent_hash`: the metadata key holding the request's key.
    pub hash_header: String,
    /// Only instances of this scheme.
    pub scheme: Option<String>,
    /// Only instances of this group.
    pub group: Option<String>,
    /// Only instances of this deployment.
    pub deployment: Option<String>,
    /// Only instances of this version.
    pub version: Option<String>,
    /// Prefer instances in this zone...
    pub zone: Option<String>,
    /// ...while at least this many are available there.
    pub min_zone_instances: usize,
    /// How long connecting to an instance may take.
    #[serde(with = "positive_duration")]
    pub connect_timeout: Duration,
    /// The deadline of a unary call that sets none itself, sent as `grpc-timeout`; `"none"`
    /// sends none.
    #[serde(with = "duration_or_none")]
    pub timeout: Option<Duration>,
    /// The deadline of a streaming call that sets none itself; none when unset.
    #[serde(with = "optional_duration")]
    pub stream_timeout: Option<Duration>,
    /// Settings of single methods: `[clients.NAME.methods."/pkg.Service/Method"]` with
    /// `type` (`unary`, `client_stream`, `server_stream`, `bidi_stream`) and `timeout`.
    pub methods: BTreeMap<String, MethodConfig>,
    /// How long a connection with calls in flight may be silent before it is pinged
    /// (`0s`: never); see `ConnectionOptions::keepalive_interval`.
    #[serde(with = "duration")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(with = "positive_duration")]
    pub keepalive_timeout: Duration,
    /// How long building a client waits for a first instance (0: not at all).
    #[serde(with = "duration")]
    pub wait_for_instances: Duration,
    /// Methods (`/package.Service/Method`, or `*`) that may be sent twice.
    pub idempotent_methods: BTreeSet<String>,
    /// Attempts per call at most.
    pub max_attempts: usize,
    /// Retries of calls that may have reached an instance, as a share of calls (0.0 to 1.0).
    pub retry_budget_ratio: f32,
    /// Such retries per second allowed whatever the share.
    pub retry_budget_min_per_second: u32,
    /// First ejection of a failing instance.
    #[serde(with = "positive_duration")]
    pub ejection_base: Duration,
    /// Longest ejection.
    #[serde(with = "positive_duration")]
    pub ejection_max: Duration,
    /// Timed-out calls in a row that eject an instance.
    pub ejection_after_timeouts: u32,
    /// TLS to the instances.
    pub tls: Option<ClientTls>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: String::new(),
            drain_delay: crate::lifecycle::DEFAULT_DRAIN_DELAY,
            shutdown_deadline: crate::lifecycle::DEFAULT_SHUTDOWN_DEADLINE,
            governor: GovernorConfig::default(),
            registry: RegistryConfig::default(),
            servers: BTreeMap::new(),
            clients: BTreeMap::new(),
            app: figment::value::Dict::new(),
        }
    }
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::from_options(&ClientOptions::default())
    }
}

impl Config {
    /// Defaults, then the config file, then the environment.
    pub fn load() -> Result<Self> {
        let file = std::env::var_os("JOVIAN_CONFIG").map(PathBuf::from);
        if let Some(path) = &file
            && !path.is_file()
        {
            return Err(Error::Config {
                key: "JOVIAN_CONFIG".into(),
                expected: "the path of a TOML config file".into(),
                found: format!("{}, which is not a file", path.display()),
            });
        }
        let file = file.unwrap_or_else(|| PathBuf::from("jovian.toml"));
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&file))
            .merge(Env::prefixed("JOVIAN_").ignore(&["CONFIG"]).split("__"));
        extract(figment)
    }

    /// Defaults, then `toml` (no file, no environment): for tests and embedding.
    pub fn from_toml(toml: &str) -> Result<Self> {
        extract(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)))
    }

    /// The `[app]` section as the application's own type `T`: jovian keeps the section as
    /// written and never checks it, so an application can keep its settings beside jovian's
    /// (and operators set them with `JOVIAN_APP__KEY` too). A value that does not fit `T`
    /// fails with [`Error::Config`] naming the key (`app.greeting`).
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Settings { greeting: String, max_orders: u32 }
    ///
    /// let config = jovian::Config::from_toml(
    ///     "name = \"orders\"\n[app]\ngreeting = \"hi\"\nmax_orders = 20",
    /// ).unwrap();
    /// let settings: Settings = config.app().unwrap();
    /// assert_eq!(settings.max_orders, 20);
    /// ```
    pub fn app<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let figment = Figment::from(Serialized::defaults(&self.app));
        figment.extract().map_err(|error| config_error(&error, "app"))
    }

    /// The client settings for `service` (defaults when it has no section).
    pub fn client(&self, service: &str) -> Result<ClientOptions> {
        self.clients.get(service).cloned().unwrap_or_default().options(service)
    }
}

impl ClientConfig {
    /// These settings as [`ClientOptions`]; `service` names the section in errors.
    pub fn options(&self, service: &str) -> Result<ClientOptions> {
        let key = |field: &str| format!("clients.{service}.{field}");
        let policy = match self.policy {
            PolicyName::RoundRobin => Policy::RoundRobin,
            PolicyName::WeightedRoundRobin => Policy::WeightedRoundRobin,
            PolicyName::P2c => Policy::PowerOfTwoChoices,
            PolicyName::Random => Policy::Random,
            PolicyName::ConsistentHash => {
                let header = http::HeaderName::try_from(self.hash_header.as_str()).map_err(|_| Error::Config {
                    key: key("hash_header"),
                    expected: "a metadata key (lowercase letters, digits, '-')".into(),
                    found: format!("{:?}", self.hash_header),
                })?;
                Policy::ConsistentHash(HashKey::Header(header))
            }
        };
        if self.ejection_after_timeouts == 0 {
            return Err(Error::Config {
                key: key("ejection_after_timeouts"),
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        if self.max_attempts == 0 {
            return Err(Error::Config {
                key: key("max_attempts"),
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        if let Some(tls) = &self.tls {
            // Read now, so a wrong file is reported when the config is, not at the first call.
            crate::client::check_tls(service, tls)?;
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(Error::Config {
                key: key("retry_budget_ratio"),
                expected: "a share of calls from 0.0 to 1.0".into(),
                found: self.retry_budget_ratio.to_string(),
            });
        }
        if let Some(address) = self.addresses.iter().find(|address| !is_host_port(address)) {
            return Err(Error::Config {
                key: key("addresses"),
                expected: "host:port addresses, like [\"10.0.0.1:50051\"]".into(),
                found: format!("{address:?}"),
            });
        }
        if let Some(path) = self.methods.keys().find(|path| !is_method_path(path)) {
            return Err(Error::Config {
                key: key(&format!("methods.\"{path}\"")),
                expected: "a method's path, like \"/package.Service/Method\"".into(),
                found: format!("{path:?}"),
            });
        }
        // Every field written out (no `..Default::default()`): a new option must be given its
        // key before this compiles.
        Ok(ClientOptions {
            policy,
            filter: Filter {
                scheme: self.scheme.clone(),
                group: self.group.clone(),
                deployment: self.deployment.clone(),
                version: self.version.clone(),
                zone: self.zone.clone(),
                min_zone_instances: self.min_zone_instances,
            },
            connection: ConnectionOptions {
                connect_timeout: self.connect_timeout,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
                tls: self.tls.clone(),
            },
            ejection: Ejection {
                base: self.ejection_base,
                max: self.ejection_max,
                after_timeouts: self.ejection_after_timeouts,
            },
            retry: RetryPolicy {
                idempotent_methods: self.idempotent_methods.clone(),
                max_attempts: self.max_attempts,
                budget_ratio: self.retry_budget_ratio,
                budget_min_per_second: self.retry_budget_min_per_second,
            },
            wait_for_instances: (!self.wait_for_instances.is_zero()).then_some(self.wait_for_instances),
            timeout: self.timeout,
            stream_timeout: self.stream_timeout,
            methods: self
                .methods
                .iter()
                .map(|(path, method)| {
                    let MethodConfig { grpc_type, timeout } = method;
                    let options = MethodOptions {
                        grpc_type: grpc_type.map(Into::into),
                        timeout: *timeout,
                    };
                    (path.clone(), options)
                })
                .collect(),
        })
    }

    /// The section that gives `options`: what [`Config::client`] would turn back into them.
    /// A custom consistent-hash function has no key; it becomes `consistent_hash` on the
    /// default header.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jovian::client::{ClientOptions, RetryPolicy};
    /// use jovian::config::ClientConfig;
    ///
    /// let options = ClientOptions::default().retry(RetryPolicy::default().budget(0.1, 5));
    /// let section = ClientConfig::from_options(&options);
    /// assert_eq!(section.retry_budget_ratio, 0.1);
    /// ```
    pub fn from_options(options: &ClientOptions) -> Self {
        // Destructured in full, so that an option added to any of these types fails to compile
        // here until it has a key.
        let ClientOptions {
            policy,
            filter,
            connection,
            ejection,
            retry,
            wait_for_instances,
            timeout,
            stream_timeout,
            methods,
        } = options;
        let Filter {
            scheme,
            group,
            deployment,
            version,
            zone,
            min_zone_instances,
        } = filter;
        let ConnectionOptions {
            connect_timeout,
            keepalive_interval,
            keepalive_timeout,
            tls,
        } = connection;
        let Ejection {
            base,
            max,
            after_timeouts,
        } = ejection;
        let RetryPolicy {
            idempotent_methods,
            max_attempts,
            budget_ratio,
            budget_min_per_second,
        } = retry;
        let (policy, hash_header) = match policy {
            Policy::RoundRobin => (PolicyName::RoundRobin, None),
            Policy::WeightedRoundRobin => (PolicyName::WeightedRoundRobin, None),
            Policy::PowerOfTwoChoices => (PolicyName::P2c, None),
            Policy::Random => (PolicyName::Random, None),
            Policy::ConsistentHash(HashKey::Header(header)) => (PolicyName::ConsistentHash, Some(header.to_string())),
            Policy::ConsistentHash(HashKey::Custom(_)) => (PolicyName::ConsistentHash, None),
        };
        Self {
            addresses: Vec::new(),
            policy,
            hash_header: hash_header.unwrap_or_else(|| crate::client::HASH_KEY_HEADER.to_owned()),
            scheme: scheme.clone(),
            group: group.clone(),
            deployment: deployment.clone(),
            version: version.clone(),
            zone: zone.clone(),
            min_zone_instances: *min_zone_instances,
            connect_timeout: *connect_timeout,
            timeout: *timeout,
            stream_timeout: *stream_timeout,
            methods: methods
                .iter()
                .map(|(path, method)| {
                    let MethodOptions { grpc_type, timeout } = method;
                    let config = MethodConfig {
                        grpc_type: grpc_type.map(Into::into),
                        timeout: *timeout,
                    };
                    (path.clone(), config)
                })
                .collect(),
            keepalive_interval: *keepalive_interval,
            keepalive_timeout: *keepalive_timeout,
            wait_for_instances: wait_for_instances.unwrap_or(Duration::ZERO),
            idempotent_methods: idempotent_methods.clone(),
            max_attempts: *max_attempts,
            retry_budget_ratio: *budget_ratio,
            retry_budget_min_per_second: *budget_min_per_second,
            ejection_base: *base,
            ejection_max: *max,
            ejection_after_timeouts: *after_timeouts,
            tls: tls.clone(),
        }
    }
}

/// Whether `address` is a `host:port` a client can dial.
fn is_host_port(address: &str) -> bool {
    address
        .parse::<http::uri::Authority>()
        .is_ok_and(|authority| authority.port_u16().is_some() && !authority.host().is_empty() && !address.contains('@'))
}

/// Whether `path` looks like a gRPC method's path: `/package.Service/Method`.
fn is_method_path(path: &str) -> bool {
    let mut parts = path.strip_prefix('/').unwrap_or("").split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(s), Some(m), None) if !s.is_empty() && !m.is_empty())
}

fn extract(figment: Figment) -> Result<Config> {
    figment.extract().map_err(|error| config_error(&error, ""))
}

/// A figment error as [`Error::Config`], its key under `section` (empty: the top level).
fn config_error(error: &figment::Error, section: &str) -> Error {
    use figment::error::Kind;
    let key = std::iter::once(section)
        .filter(|s| !s.is_empty())
        .chain(error.path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(".");
    let (key, expected, found) = match &error.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            (key, expected.clone(), actual.to_string())
        }
        Kind::UnknownField(_, known) => (key, format!("one of: {}", known.join(", ")), "an unknown key".into()),
        Kind::UnknownVariant(variant, known) => (key, format!("one of: {}", known.join(", ")), format!("{variant:?}")),
        _ => (
            if key.is_empty() { "config".into() } else { key },
            "a valid setting".into(),
            error.to_string(),
        ),
    };
    Error::Config { key, expected, found }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units() {
        let config = Config::from_toml("drain_delay = \"250ms\"\nshutdown_deadline = 3").unwrap();
        assert_eq!(config.drain_delay, Duration::from_millis(250));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(3));
    }

    #[test]
    fn durations_read_like_humantime_and_never_overflow() {
        use duration::parse;
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h 15m"), Ok(Duration::from_secs(2 * 3600 + 15 * 60)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "soon",
            "5",
            "1.2.3s",
            "1x",
            "s",
            "-1s",
            "9999999999999999999h",
            "99999999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let config = Config::from_toml("drain_delay = \"1.5s\"\n[registry]\nttl = \"1m30s\"").unwrap();
        assert_eq!(config.drain_delay, Duration::from_millis(1500));
        let written = extract(Figment::from(Serialized::defaults(&config))).unwrap();
        assert_eq!(written, config, "durations read back as they are written");
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for (toml, key) in [
            ("[clients.a]\ntimeout = \"0s\"", "clients.a.timeout"),
            ("[clients.a]\nconnect_timeout = \"0s\"", "clients.a.connect_timeout"),
        ] {
            let error = Config::from_toml(toml).unwrap_err();
            assert!(
                matches!(&error, Error::Config { key: k, .. } if k == key),
                "{toml}: {error}"
            );
            assert!(error.to_string().contains("greater than zero"), "{error}");
        }
        assert!(
            Config::from_toml("drain_delay = \"0s\"").is_ok(),
            "no drain is a choice"
        );
    }

    #[test]
    fn the_registry_section_is_kept_as_written_for_its_crate_to_read() {
        let config =
            Config::from_toml("[registry]\nkind = \"memory\"\nttl = \"5s\"\nuser = \"svc\"\npassword = \"hunter2\"")
                .unwrap();
        assert_eq!(config.registry.kind, "memory");
        assert_eq!(config.registry.settings["ttl"].as_str(), Some("5s"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("svc") && debug.contains(REDACTED), "{debug}");

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Section {
            #[serde(with = "positive_duration")]
            ttl: Duration,
            user: String,
        }
        let error = config.registry.settings::<Section>().unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "registry.password"),
            "{error}"
        );
        let mut config = config;
        config.registry.settings.remove("password");
        config.registry.set("ttl", "0s").unwrap();
        let error = config.registry.settings::<Section>().unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "registry.ttl"),
            "{error}"
        );
        assert!(error.to_string().contains("greater than zero"), "{error}");
    }

    #[test]
    fn a_wrong_value_names_the_key_and_what_it_takes() {
        let error = Config::from_toml("drain_delay = \"soon\"").unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "drain_delay"),
            "{message}"
        );
        assert!(message.contains("500ms"), "{message}");
        let error = Config::from_toml("[clients.greeter]\nmax_attempts = \"three\"").unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "clients.greeter.max_attempts"),
            "{error}"
        );
        let error = Config::from_toml("[governor]\nenabeld = true").unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "governor.enabeld"),
            "{error}"
        );
    }

    #[test]
    fn client_tls_errors_name_the_key_in_the_clients_section() {
        for (toml, key) in [
            (
                "[clients.greeter.tls]\nca = \"/nonexistent/ca.pem\"",
                "clients.greeter.tls.ca",
            ),
            (
                "[clients.greeter.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"",
                "clients.greeter.tls.cert",
            ),
            (
                "[clients.greeter.tls]\ncert = \"Cargo.toml\"",
                "clients.greeter.tls.key",
            ),
        ] {
            let error = Config::from_toml(toml).unwrap().client("greeter").unwrap_err();
            assert!(
                matches!(&error, Error::Config { key: k, .. } if k == key),
                "{toml}: {error}"
            );
        }
    }

    #[test]
    fn server_settings_made_in_code_win_field_by_field() {
        let file = Config::from_toml(
            "[servers.s]\nport = 7000\nmax_concurrent_streams = 8\nhttp2_keepalive_interval = \"20s\"",
        )
        .unwrap()
        .servers["s"]
            .clone();
        let code = ServerConfig {
            max_concurrent_streams: Some(64),
            ..ServerConfig::default()
        };
        let merged = code.or(&file);
        assert_eq!(merged.max_concurrent_streams, Some(64), "code wins");
        assert_eq!(merged.port, Some(7000), "the file fills in");
        assert_eq!(merged.http2_keepalive_interval, Some(Duration::from_secs(20)));
        let zero = ServerConfig {
            concurrency_limit_per_connection: Some(0),
            ..ServerConfig::default()
        };
        let Err(error) = zero.connections("s") else {
            panic!("a limit of 0 is refused")
        };
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "servers.s.concurrency_limit_per_connection"),
            "{error}"
        );
    }

    #[test]
    fn client_deadlines_methods_and_keepalive_come_from_the_config() {
        let toml = r#"
            [clients.prices]
            timeout = "2s"
            stream_timeout = "10m"
            keepalive_interval = "5s"
            keepalive_timeout = "3s"
            [clients.prices.methods."/market.Prices/Watch"]
            type = "server_stream"
            [clients.prices.methods."/market.Prices/Report"]
            timeout = "30s"
        "#;
        let options = Config::from_toml(toml).unwrap().client("prices").unwrap();
        assert_eq!(options.timeout, Some(Duration::from_secs(2)));
        assert_eq!(options.stream_timeout, Some(Duration::from_secs(600)));
        assert_eq!(options.connection.keepalive_interval, Duration::from_secs(5));
        assert_eq!(options.connection.keepalive_timeout, Duration::from_secs(3));
        assert_eq!(
            options.methods["/market.Prices/Watch"],
            MethodOptions::default().grpc_type(crate::metrics::GrpcType::ServerStream)
        );
        assert_eq!(
            options.methods["/market.Prices/Report"],
            MethodOptions::default().timeout(Duration::from_secs(30))
        );
        let defaults = Config::from_toml("").unwrap().client("prices").unwrap();
        assert_eq!(defaults.stream_timeout, None, "streams have no deadline by default");
        for (toml, key) in [
            (
                "[clients.p.methods.\"Watch\"]\ntype = \"server_stream\"",
                "clients.p.methods.\"Watch\"",
            ),
            (
                "[clients.p.methods.\"/a.B/C\"]\ntype = \"stream\"",
                "clients.p.methods./a.B/C.type",
            ),
            ("[clients.p]\nkeepalive_timeout = \"0s\"", "clients.p.keepalive_timeout"),
        ] {
            let error = Config::from_toml(toml).and_then(|c| c.client("p")).unwrap_err();
            assert!(
                matches!(&error, Error::Config { key: k, .. } if k == key),
                "{toml}: {error}"
            );
        }
    }

    /// Every option has a key: options with every setting away from its default, written as
    /// a `[clients.NAME]` section in TOML and read back, are the same options. (That no field
    /// is left out is also checked by the compiler: both directions name every field.)
    #[test]
    fn every_client_option_has_a_key_and_reads_back_from_toml() {
        use crate::metrics::GrpcType;
        let options = ClientOptions::default()
            .policy(Policy::ConsistentHash(HashKey::Header(http::HeaderName::from_static(
                "x-user",
            ))))
            .filter({
                let mut filter = Filter::default()
                    .group("blue")
                    .deployment("internal")
                    .version("v2")
                    .zone("z1")
                    .min_zone_instances(3);
                filter.scheme = Some("grpcs".into());
                filter
            })
            .connection(
                ConnectionOptions::default()
                    .connect_timeout(Duration::from_millis(750))
                    .keepalive(Duration::from_secs(7), Duration::from_secs(4))
                    .tls(ClientTls::default().server_name("greeter.internal")),
            )
            .ejection(
                Ejection::default()
                    .base(Duration::from_millis(300))
                    .max(Duration::from_secs(9))
                    .after_timeouts(5),
            )
            .retry(RetryPolicy::default().idempotent("*").max_attempts(4).budget(0.5, 3))
            .wait_for_instances(Duration::from_secs(2))
            .timeout(None)
            .stream_timeout(Duration::from_secs(600))
            .method(
                "/market.Prices/Watch",
                MethodOptions::default()
                    .grpc_type(GrpcType::ServerStream)
                    .timeout(Duration::from_secs(30)),
            );
        // Every part away from its default, so a key that is not read back cannot go unseen.
        let defaults = ClientOptions::default();
        assert_ne!(options.filter, defaults.filter);
        assert_ne!(options.connection, defaults.connection);
        assert_ne!(options.ejection, defaults.ejection);
        assert_ne!(options.retry, defaults.retry);
        let section = toml::to_string(&BTreeMap::from([(
            "clients",
            BTreeMap::from([("prices", ClientConfig::from_options(&options))]),
        )]))
        .unwrap();
        assert!(section.contains("retry_budget_ratio = 0.5"), "{section}");
        assert!(section.contains("timeout = \"none\""), "{section}");
        let read = Config::from_toml(&section).unwrap().client("prices").unwrap();
        assert_eq!(format!("{read:?}"), format!("{options:?}"), "{section}");
    }

    #[test]
    fn retry_budget_and_no_deadline_come_from_the_config() {
        let options = Config::from_toml(
            "[clients.p]\nretry_budget_ratio = 0.05\nretry_budget_min_per_second = 1\ntimeout = \"none\"",
        )
        .unwrap()
        .client("p")
        .unwrap();
        assert_eq!(options.retry.budget_ratio, 0.05);
        assert_eq!(options.retry.budget_min_per_second, 1);
        assert_eq!(options.timeout, None);
        let defaults = Config::default().client("p").unwrap();
        assert_eq!(defaults.retry, RetryPolicy::default());
        assert_eq!(defaults.timeout, Some(crate::client::DEFAULT_TIMEOUT));
        for (toml, key) in [
            ("[clients.p]\nretry_budget_ratio = 1.5", "clients.p.retry_budget_ratio"),
            ("[clients.p]\nretry_budget = 0.1", "clients.p.retry_budget"),
            ("[clients.p]\ntimeout = \"never\"", "clients.p.timeout"),
        ] {
            let error = Config::from_toml(toml).and_then(|c| c.client("p")).unwrap_err();
            assert!(
                matches!(&error, Error::Config { key: k, .. } if k == key),
                "{toml}: {error}"
            );
        }
    }

    #[test]
    fn client_sections_become_options() {
        let config = Config::from_toml(
            "[clients.greeter]\npolicy = \"consistent_hash\"\nzone = \"z1\"\nidempotent_methods = [\"/helloworld.Greeter/SayHello\"]",
        )
        .unwrap();
        let options = config.client("greeter").unwrap();
        assert_eq!(options.policy.name(), "consistent_hash");
        assert_eq!(options.filter.zone.as_deref(), Some("z1"));
        assert!(options.retry.is_idempotent("/helloworld.Greeter/SayHello"));
        assert_eq!(config.client("other").unwrap().policy.name(), "round_robin");
        let error = Config::from_toml("[clients.greeter]\npolicy = \"fastest\"").unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, expected, found }
                if key == "clients.greeter.policy" && expected.contains("p2c") && found.contains("fastest")),
            "{error}"
        );
    }
}
