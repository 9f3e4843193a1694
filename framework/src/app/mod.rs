//! The application: bind, serve, register, and stop without losing a call.
//!
//! An [`App`] owns a registry, any number of [`GrpcServer`]s and lifecycle hooks.
//! [`App::start`] binds every listener (so port 0 works and the bound address is what gets
//! registered), serves, marks gRPC health SERVING and only then registers each server.
//! Stopping runs the other way: health NOT_SERVING, unregister, wait a drain delay so clients
//! see the removal and stop picking the instance, then stop gracefully (in-flight calls finish)
//! with a deadline.
//!
//! An App has no side effects beyond what it is told to do. It reads no config file and no
//! environment (pass [`Config::load`] to [`App::from_config`] for that), installs no logger
//! (call [`trace::init_logging`](crate::trace::init_logging) or install your own `tracing`
//! subscriber), runs no governor unless configured, and never closes its registry: it
//! unregisters what it registered, so Apps may share one registry, and the registry's owner
//! closes it when nothing uses it any more.
//!
//! ```no_run
//! # async fn demo(registry: impl jovian::Registry, server: jovian::GrpcServer) -> Result<(), jovian::Error> {
//! jovian::App::new()
//!     .registry(registry)
//!     .serve(server)
//!     .run() // until SIGINT, SIGTERM or a ShutdownHandle fires
//!     .await
//! # }
//! ```

mod running;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use running::{Running, STARTED_AT};

use crate::client::{ClientBuilder, ServiceChannel};
use crate::error::BoxError;
use crate::{Config, Error, GrpcServer, Registry, Result};

pub use crate::lifecycle::{DEFAULT_DRAIN_DELAY, DEFAULT_SHUTDOWN_DEADLINE, Stage};

/// A microservice process: servers, the registry they register in, and hooks.
///
/// ```no_run
/// # async fn demo(registry: std::sync::Arc<dyn jovian::Registry>, server: jovian::GrpcServer) -> Result<(), jovian::Error> {
/// use jovian::{App, Config, Registrar};
///
/// jovian::trace::init_logging();
/// App::from_config(Config::load()?) // jovian.toml and JOVIAN_*, because this program asks
///     .registry(registry.clone())
///     .serve(server)
///     .run()
///     .await?;
/// registry.close().await // the App leaves the registry open: it is the caller's
/// # }
/// ```
pub struct App {
    pub(crate) config: Option<Config>,
    pub(crate) overrides: Overrides,
    pub(crate) registry: Option<Arc<dyn Registry>>,
    pub(crate) servers: Vec<GrpcServer>,
    pub(crate) hooks: Vec<(Stage, Hook)>,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled once a stop has unregistered and drained.
    pub(crate) drained: CancellationToken,
}

/// Settings made in code: they win over the config file and the environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    name: Option<String>,
    drain_delay: Option<Duration>,
    shutdown_deadline: Option<Duration>,
    governor: Option<Option<std::net::SocketAddr>>,
}

/// A lifecycle hook: runs once, at its stage.
pub type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

/// Stops a running [`App`] from anywhere (another task, a test, an admin endpoint), and tells
/// handlers how far a stop has come, so that long-lived streams end when they should.
///
/// A stop unregisters the App's servers, waits the drain delay while clients take them out
/// of their picks, then stops the servers gracefully, waiting up to the shutdown deadline for
/// the calls in flight. A stream that outlives the deadline is cut off and the stop fails; so
/// a streaming handler waits for [`drained`](Self::drained) and ends its stream then, with a
/// status its client retries elsewhere:
///
/// ```
/// # async fn demo(app: jovian::App) {
/// let stop = app.shutdown_handle();
/// // In a server-streaming handler, beside the stream's own work:
/// tokio::spawn(async move {
///     stop.drained().await;
///     // End the stream: e.g. send Err(Status::unavailable("the server is stopping")).
/// });
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    requested: CancellationToken,
    drained: CancellationToken,
}

impl ShutdownHandle {
    /// Asks the App to stop; `run` / [`Running::wait`] then perform the orderly stop.
    pub fn shutdown(&self) {
        self.requested.cancel();
    }

    /// Whether stopping was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// Waits until a stop begins: [`shutdown`](Self::shutdown), SIGINT, SIGTERM, a failing
    /// server or [`Running::stop`]. The App is still registered then, and serving.
    pub async fn stopping(&self) {
        self.requested.cancelled().await;
    }

    /// Waits until a stop has unregistered the App's servers and waited out the drain delay:
    /// clients have moved on, and the graceful stop (GOAWAY, then waiting for the calls in
    /// flight) comes next. The moment to end long-lived streams.
    pub async fn drained(&self) {
        self.drained.cancelled().await;
    }
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// An App with no servers and no registry, on [`Config::default`] and the calls below.
    /// It reads neither a config file nor the environment: see [`App::from_config`].
    pub fn new() -> Self {
        Self {
            config: None,
            overrides: Overrides::default(),
            registry: None,
            servers: Vec::new(),
            hooks: Vec::new(),
            shutdown: CancellationToken::new(),
            drained: CancellationToken::new(),
        }
    }

    /// The application name, registered as each instance's `appId`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.overrides.name = Some(name.into());
        self
    }

    /// An App on `config`, typically `Config::load()?` so operators can configure it with
    /// `jovian.toml` and `JOVIAN_*`. The calls below still win over it.
    pub fn from_config(config: Config) -> Self {
        Self::new().config(config)
    }

    /// Uses `config` instead of [`Config::default`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Runs the governor (`/metrics`, `/healthz`, `/debug/registry`) on `address`; `None`
    /// runs none, which is the default unless the config's `[governor]` enables it. It is
    /// registered for scrape discovery at the config's `governor.advertise`, else at the
    /// address it bound.
    pub fn governor(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.overrides.governor = Some(address);
        self
    }

    /// The registry servers register in and clients watch. Without one, servers serve but are
    /// not registered.
    ///
    /// The App uses the registry but does not own it: stopping unregisters exactly what this
    /// App registered and leaves the registry open, so several Apps can share one (an
    /// `Arc<R>` clone each) and one stopping never touches another's instances. Close it
    /// yourself once nothing uses it ([`Registrar::close`](crate::Registrar::close) revokes its lease at once; dropping
    /// it lets the lease expire within its TTL).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// Adds a server.
    pub fn serve(mut self, server: GrpcServer) -> Self {
        self.servers.push(server);
        self
    }

    /// How long to wait between unregistering and stopping, so clients stop picking this
    /// instance before it stops accepting calls (1 s unless configured).
    ///
    /// Tests whose clients need no such time stop at once with a zero delay (or
    /// `drain_delay = "0s"` in the config); otherwise every `stop()` waits the delay out:
    ///
    /// ```
    /// # async fn demo(server: jovian::GrpcServer) -> jovian::Result<()> {
    /// let running = jovian::App::new().drain_delay(std::time::Duration::ZERO).serve(server).start().await?;
    /// running.stop().await?; // no drain to wait for
    /// # Ok(()) }
    /// ```
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.overrides.drain_delay = Some(delay);
        self
    }

    /// How long in-flight calls get to finish once serving stops; past it they are cut off.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.overrides.shutdown_deadline = Some(deadline);
        self
    }

    /// Adds a hook to run at `stage`. A failing start hook aborts the start; a failing stop hook
    /// is logged and the stop goes on.
    pub fn hook<F, Fut>(mut self, stage: Stage, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks.push((stage, Box::new(move || Box::pin(hook()))));
        self
    }

    /// A handle that stops the App once it runs.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: self.shutdown.clone(),
            drained: self.drained.clone(),
        }
    }

    /// A balanced channel to `service` over this App's registry, configured by the config's
    /// `[clients.<service>]` section; see [`ServiceChannel`]. The future owns what it needs,
    /// so it can be spawned. A section with `addresses` calls those fixed addresses instead
    /// of looking the service up (a [`Static`](crate::registry::Static) discovery); otherwise,
    /// without a registry, it fails with [`Error::NoRegistry`].
    pub fn client(&self, service: &str) -> impl Future<Output = Result<ServiceChannel>> + Send + 'static {
        let prepared = self
            .resolved_config()
            .and_then(|config| prepare_client(&config, self.registry.as_ref(), service));
        build_client(prepared, service)
    }

    /// The settings the App runs with: its config ([`Config::default`] if none was given),
    /// overridden by what the code set.
    pub fn resolved_config(&self) -> Result<Config> {
        let mut config = self.config.clone().unwrap_or_default();
        let overrides = &self.overrides;
        if let Some(name) = &overrides.name {
            config.name = name.clone();
        }
        if let Some(delay) = overrides.drain_delay {
            config.drain_delay = delay;
        }
        if let Some(deadline) = overrides.shutdown_deadline {
            config.shutdown_deadline = deadline;
        }
        if let Some(governor) = overrides.governor {
            config.governor.enabled = governor.is_some();
            if let Some(address) = governor {
                config.governor.address = address;
            }
        }
        Ok(config)
    }

    /// Binds, serves and registers every server, runs the after-start hooks, and returns the
    /// running App.
    pub async fn start(self) -> Result<Running> {
        Running::start(self).await
    }

    /// Starts, then runs until SIGINT, SIGTERM, a [`ShutdownHandle`] or a failing server, and
    /// stops in order.
    pub async fn run(self) -> Result<()> {
        self.start().await?.wait().await
    }
}

/// Builds the channel a prepared builder describes; shared by [`App::client`] and
/// [`Running::client`].
/// A builder for `service`'s channel as `config` says: over fixed addresses if its section
/// has some, else over `registry`.
pub(crate) fn prepare_client(
    config: &Config,
    registry: Option<&Arc<dyn Registry>>,
    service: &str,
) -> Result<ClientBuilder> {
    let options = config.client(service)?;
    match (config.clients.get(service), registry) {
        (Some(section), _) if !section.addresses.is_empty() => {
            let fixed = crate::registry::Static::new().service(service, section.addresses.iter().cloned());
            Ok(ClientBuilder::new(fixed).options(options))
        }
        (_, Some(registry)) => Ok(ClientBuilder::new(Arc::clone(registry)).options(options)),
        (_, None) => Err(Error::NoRegistry),
    }
}

pub(crate) fn build_client(
    prepared: Result<ClientBuilder>,
    service: &str,
) -> impl Future<Output = Result<ServiceChannel>> + Send + 'static {
    let service = service.to_owned();
    async move { prepared?.build(&service).await }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field(
                "servers",
                &self.servers.iter().map(GrpcServer::name).collect::<Vec<_>>(),
            )
            .field("registry", &self.registry.is_some())
            .field("hooks", &self.hooks.iter().map(|(stage, _)| *stage).collect::<Vec<_>>())
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}
