//! What a client may be told: which instances to use, how to pick among them, how to connect,
//! when to give up on an instance and when a call may be sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;

use crate::metrics::GrpcType;

/// How a [`ServiceChannel`](super::ServiceChannel) behaves.
///
/// Start from [`ClientOptions::default`] and chain setters (or assign fields): options may be
/// added in any release, so none of these types can be written as a struct literal outside
/// jovian. Every setting also has a key in a config's `[clients.NAME]` section
/// (`Config::client`).
///
/// ```
/// use std::time::Duration;
/// use jovian::client::{ClientOptions, Filter, Policy, RetryPolicy};
///
/// let options = ClientOptions::default()
///     .policy(Policy::WeightedRoundRobin)
///     .filter(Filter::default().group("blue").zone("z1"))
///     .retry(RetryPolicy::default().idempotent("/helloworld.Greeter/SayHello"))
///     .wait_for_instances(Duration::from_secs(2));
/// assert_eq!(options.filter.zone.as_deref(), Some("z1"));
///
/// // Fields stay public for reading and changing one setting in place.
/// let mut options = options;
/// options.connection.connect_timeout = Duration::from_millis(500);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How an instance is chosen for each call.
    pub policy: Policy,
    /// Which instances may be chosen at all.
    pub filter: Filter,
    /// How connections to instances are made.
    pub connection: ConnectionOptions,
    /// When a failing instance is set aside.
    pub ejection: Ejection,
    /// When a failed call is sent again.
    pub retry: RetryPolicy,
    /// How long building the channel waits for a first instance; `None` returns at once (calls
    /// then fail fast until one appears).
    pub wait_for_instances: Option<Duration>,
    /// The deadline of a unary call that sets none itself (tonic's `Request::set_timeout`),
    /// sent to the instance as `grpc-timeout`. It covers the whole call, every attempt and the
    /// response's body and trailers: past it the call fails with `DeadlineExceeded`, so a
    /// frozen or stalled instance can never hold a call for longer. `None` sends no deadline.
    pub timeout: Option<Duration>,
    /// The deadline of a streaming call that sets none itself; `None` (the default), as gRPC
    /// has it: a watch or a subscription lives as long as it is wanted. A call is streaming
    /// when its request is a stream still open when the call is made, or when its method is
    /// declared so in `methods` (or with [`ClientBuilder::method_type`]): a server-streaming
    /// method looks unary from its request alone.
    ///
    /// [`ClientBuilder::method_type`]: super::ClientBuilder::method_type
    pub stream_timeout: Option<Duration>,
    /// Settings of single methods, by path (`/package.Service/Method`).
    pub methods: BTreeMap<String, MethodOptions>,
}

/// How calls to one method are told apart and timed.
///
/// ```
/// use std::time::Duration;
/// use jovian::client::{ClientOptions, MethodOptions};
/// use jovian::metrics::GrpcType;
///
/// let mut options = ClientOptions::default();
/// options.methods.insert(
///     "/market.Prices/Watch".into(),
///     MethodOptions::default().grpc_type(GrpcType::ServerStream),
/// );
/// options.methods.insert(
///     "/market.Prices/Report".into(),
///     MethodOptions::default().timeout(Duration::from_secs(30)),
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodOptions {
    /// The method's type, when its calls do not show it.
    pub grpc_type: Option<GrpcType>,
    /// The deadline of its calls that set none, instead of the one for their type.
    pub timeout: Option<Duration>,
}

impl MethodOptions {
    /// Declares the method's type.
    pub fn grpc_type(mut self, grpc_type: GrpcType) -> Self {
        self.grpc_type = Some(grpc_type);
        self
    }

    /// Gives the method's calls this deadline when they set none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How an instance is chosen for each call.
#[derive(Clone, Default)]
pub enum Policy {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// Each instance in proportion to its weight (`ServiceInfo::weight`, overrides included),
    /// interleaved smoothly. Weight 0 takes no calls (unless every instance has weight 0).
    WeightedRoundRobin,
    /// Two instances at random; the one with fewer calls in flight, then the lower latency.
    PowerOfTwoChoices,
    /// The instance a request's key hashes to on a consistent-hash ring: a key stays on its
    /// instance, and an instance joining or leaving moves only about 1/N of the keys. Requests
    /// without a key go round robin.
    ConsistentHash(HashKey),
    /// Uniformly at random.
    Random,
}

/// Where a consistent-hash key comes from.
#[derive(Clone)]
pub enum HashKey {
    /// A request header (gRPC metadata), e.g. `x-jovian-hash-key`.
    Header(http::HeaderName),
    /// A function of the request.
    Custom(KeyFn),
}

/// Computes a request's consistent-hash key.
pub type KeyFn = Arc<dyn Fn(&http::Request<Body>) -> Option<Vec<u8>> + Send + Sync>;

/// The metadata key [`HashKey::default`] reads.
pub const HASH_KEY_HEADER: &str = "x-jovian-hash-key";

impl Default for HashKey {
    fn default() -> Self {
        HashKey::Header(http::HeaderName::from_static(HASH_KEY_HEADER))
    }
}

/// Which instances a client may use. Instances must also be enabled and healthy.
///
/// ```
/// let filter = jovian::client::Filter::default().group("blue").zone("z1").min_zone_instances(2);
/// assert_eq!(filter.group.as_deref(), Some("blue"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// Only this scheme (`grpc` unless set).
    pub scheme: Option<String>,
    /// Only this traffic group.
    pub group: Option<String>,
    /// Only this deployment.
    pub deployment: Option<String>,
    /// Only this version.
    pub version: Option<String>,
    /// Prefer instances in this zone...
    pub zone: Option<String>,
    /// ...as long as at least this many of them are available (default 1); otherwise use
    /// every zone.
    pub min_zone_instances: usize,
}

/// How connections to instances are made.
///
/// ```
/// use std::time::Duration;
/// use jovian::client::ConnectionOptions;
///
/// let connection = ConnectionOptions::default()
///     .connect_timeout(Duration::from_millis(500))
///     .keepalive(Duration::from_secs(10), Duration::from_secs(5));
/// assert_eq!(connection.keepalive_interval, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// How long a connection with calls in flight may go without receiving anything before it
    /// is pinged (HTTP/2 keep-alive). Together with `keepalive_timeout` this is how soon a
    /// frozen or vanished instance is noticed and its calls fail over. Idle connections are
    /// never pinged. An instance is pinged this often only if its registry entry says it takes
    /// it ([`MIN_PING_INTERVAL_KEY`](crate::MIN_PING_INTERVAL_KEY), which jovian's servers
    /// write); any other gets at most two pings each time it goes quiet, which stock gRPC
    /// servers (grpc-go, grpc-java, C-core) allow, and calls' deadlines notice it frozen after
    /// that. An instance that still closes a connection for too many pings has its interval
    /// doubled, as grpc-go's client does. `Duration::ZERO` turns pings off.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// TLS to the instances; plain HTTP/2 when `None`.
    pub tls: Option<ClientTls>,
}

/// TLS from a client: to the instances, or to etcd (as the config's `tls` sections).
///
/// ```
/// let tls = jovian::client::ClientTls::default().ca("ca.pem").server_name("greeter.internal");
/// assert_eq!(tls.server_name.as_deref(), Some("greeter.internal"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientTls {
    /// CA certificate (PEM) the instances' certificates are checked against.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for instances that require one.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// The name to verify instead of the instance's host.
    pub server_name: Option<String>,
}

/// When a failing instance is set aside.
///
/// A failed connect or a transport-level failure ejects the instance for `base`, doubling on
/// each failure episode in a row up to `max` (failures while it is already ejected belong to
/// the same episode). Calls that time out on it `after_timeouts` times in a row eject it too.
/// When its time is up it gets one call at a time until one succeeds, so an instance that is
/// still dead costs one call, not a burst. It is readmitted fully at once if the registry
/// announces it anew. The last available instance is never ejected.
///
/// ```
/// use std::time::Duration;
///
/// let ejection = jovian::client::Ejection::default().base(Duration::from_millis(200)).after_timeouts(5);
/// assert_eq!(ejection.max, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ejection {
    /// The first ejection's length.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
    /// Timed-out calls in a row (no success between) that eject an instance.
    pub after_timeouts: u32,
}

/// When a failed call is sent again.
///
/// A call that failed before any byte reached an instance (connection refused, connection
/// closed before sending) always moves to another instance. A call that may have reached one
/// is sent again only if its method is idempotent, and only while the retry budget allows.
///
/// ```
/// let retry = jovian::client::RetryPolicy::default()
///     .idempotent("/helloworld.Greeter/SayHello")
///     .max_attempts(2)
///     .budget(0.1, 5);
/// assert!(retry.is_idempotent("/helloworld.Greeter/SayHello"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Methods (`/package.Service/Method`, or `*` for all) that may run twice.
    pub idempotent_methods: BTreeSet<String>,
    /// Attempts per call at most, the first included.
    pub max_attempts: usize,
    /// Retries of calls that may have reached an instance, as a share of calls (0.0 to 1.0).
    pub budget_ratio: f32,
    /// Retries per second allowed whatever the ratio.
    pub budget_min_per_second: u32,
}

/// The deadline of a unary call that sets none, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            filter: Filter::default(),
            connection: ConnectionOptions::default(),
            ejection: Ejection::default(),
            retry: RetryPolicy::default(),
            wait_for_instances: None,
            timeout: Some(DEFAULT_TIMEOUT),
            stream_timeout: None,
            methods: BTreeMap::new(),
        }
    }
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            scheme: None,
            group: None,
            deployment: None,
            version: None,
            zone: None,
            min_zone_instances: 1,
        }
    }
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            tls: None,
        }
    }
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            after_timeouts: 3,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            idempotent_methods: BTreeSet::new(),
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

impl ClientOptions {
    /// Sets how an instance is chosen for each call.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets which instances may be chosen.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets how connections are made.
    pub fn connection(mut self, connection: ConnectionOptions) -> Self {
        self.connection = connection;
        self
    }

    /// Sets when a failing instance is set aside.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// Sets when a failed call is sent again.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how long building the channel waits for a first instance (`None`: not at all).
    pub fn wait_for_instances(mut self, wait: impl Into<Option<Duration>>) -> Self {
        self.wait_for_instances = wait.into();
        self
    }

    /// Sets the deadline of unary calls that set none (`None`: no deadline).
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Sets the deadline of streaming calls that set none (`None`, the default: no deadline).
    pub fn stream_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.stream_timeout = timeout.into();
        self
    }

    /// Sets the options of one method, by path (`/package.Service/Method`).
    ///
    /// ```
    /// use jovian::client::{ClientOptions, MethodOptions};
    /// use jovian::metrics::GrpcType;
    ///
    /// let options = ClientOptions::default()
    ///     .method("/market.Prices/Watch", MethodOptions::default().grpc_type(GrpcType::ServerStream));
    /// ```
    pub fn method(mut self, path: impl Into<String>, options: MethodOptions) -> Self {
        self.methods.insert(path.into(), options);
        self
    }
}

// `scheme` has no setter: `Filter::scheme()` reads the scheme in effect. Set the field.
impl Filter {
    /// Only instances of this traffic group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Only instances of this deployment.
    pub fn deployment(mut self, deployment: impl Into<String>) -> Self {
        self.deployment = Some(deployment.into());
        self
    }

    /// Only instances of this version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Prefer instances in this zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Prefer the zone only while at least this many of its instances are available.
    pub fn min_zone_instances(mut self, count: usize) -> Self {
        self.min_zone_instances = count;
        self
    }
}

impl ConnectionOptions {
    /// Sets how long establishing a connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the keep-alive ping interval (`Duration::ZERO`: no pings) and how long a ping may
    /// go unanswered.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Connects with TLS (`None`: plain HTTP/2).
    pub fn tls(mut self, tls: impl Into<Option<ClientTls>>) -> Self {
        self.tls = tls.into();
        self
    }
}

impl ClientTls {
    /// Checks the instances' certificates against this CA (PEM).
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM) and its key (PEM).
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verifies this name instead of the instance's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

impl Ejection {
    /// Sets the first ejection's length.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the longest ejection.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets how many timed-out calls in a row eject an instance.
    pub fn after_timeouts(mut self, count: u32) -> Self {
        self.after_timeouts = count;
        self
    }
}

impl RetryPolicy {
    /// Lets calls to `path` (`/package.Service/Method`, or `*` for all) run twice.
    pub fn idempotent(mut self, path: impl Into<String>) -> Self {
        self.idempotent_methods.insert(path.into());
        self
    }

    /// Sets the attempts per call at most, the first included.
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the retry budget: retries of calls that may have reached an instance, as a share
    /// of calls (0.0 to 1.0), and per second whatever the share.
    pub fn budget(mut self, ratio: f32, min_per_second: u32) -> Self {
        self.budget_ratio = ratio;
        self.budget_min_per_second = min_per_second;
        self
    }

    /// Whether calls to `path` may run twice.
    pub fn is_idempotent(&self, path: &str) -> bool {
        self.idempotent_methods.contains(path) || self.idempotent_methods.contains("*")
    }
}

impl Filter {
    /// The scheme instances must have.
    pub fn scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("grpc")
    }

    /// Whether `info` passes every filter but the zone preference.
    pub fn admits(&self, info: &crate::ServiceInfo) -> bool {
        let matches = |wanted: &Option<String>, actual: &str| wanted.as_deref().is_none_or(|w| w == actual);
        info.is_available()
            && info.scheme == self.scheme()
            && matches(&self.group, &info.group)
            && matches(&self.deployment, &info.deployment)
            && matches(&self.version, &info.version)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "enabled, healthy, scheme {}", self.scheme())?;
        for (name, value) in [
            ("group", &self.group),
            ("deployment", &self.deployment),
            ("version", &self.version),
        ] {
            if let Some(value) = value {
                write!(f, ", {name} {value}")?;
            }
        }
        if let Some(zone) = &self.zone {
            write!(f, ", zone {zone} preferred")?;
        }
        Ok(())
    }
}

impl Policy {
    /// The policy's name, as in config and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::WeightedRoundRobin => "weighted_round_robin",
            Policy::PowerOfTwoChoices => "p2c",
            Policy::ConsistentHash(_) => "consistent_hash",
            Policy::Random => "random",
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::RoundRobin => f.write_str("RoundRobin"),
            Policy::WeightedRoundRobin => f.write_str("WeightedRoundRobin"),
            Policy::PowerOfTwoChoices => f.write_str("PowerOfTwoChoices"),
            Policy::ConsistentHash(HashKey::Header(name)) => {
                write!(f, "ConsistentHash(header {name})")
            }
            Policy::ConsistentHash(HashKey::Custom(_)) => f.write_str("ConsistentHash(custom)"),
            Policy::Random => f.write_str("Random"),
        }
    }
}
