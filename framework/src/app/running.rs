//! A started App: what it bound and registered, and its orderly stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::{App, Hook, ShutdownHandle, Stage};
use crate::client::ServiceChannel;
use crate::config::ServerConfig;
use crate::governor::{Governor, GovernorState};
use crate::observe::ServerObserve;
use crate::server::serve::{self, Listening};
use crate::service::EntryKind;
use crate::{Config, Error, GrpcServer, Registry, Result, ServiceInfo};

/// A started [`App`]: every server is serving and registered.
///
/// Stop it with [`stop`](Self::stop), or [`wait`](Self::wait) for a signal or a
/// [`ShutdownHandle`]. Dropping it without stopping cuts the servers off at once and
/// unregisters nothing (the registrations expire with the lease, as after a crash).
pub struct Running {
    config: Config,
    registry: Option<Arc<dyn Registry>>,
    servers: Vec<ServingServer>,
    governor: Option<(Governor, ServiceInfo)>,
    governor_state: GovernorState,
    governor_registered: bool,
    stop_hooks: Vec<(Stage, Hook)>,
    shutdown: CancellationToken,
    drained: CancellationToken,
    failures: mpsc::UnboundedReceiver<Error>,
}

struct ServingServer {
    info: ServiceInfo,
    local_addr: SocketAddr,
    health: HealthReporter,
    grpc_services: Vec<&'static str>,
    stop: CancellationToken,
    cut_off: CancellationToken,
    task: Option<JoinHandle<()>>,
    registered: bool,
}

impl Running {
    /// The address `service`'s server is bound to.
    pub fn local_addr(&self, service: &str) -> Option<SocketAddr> {
        self.servers
            .iter()
            .find(|s| s.info.name == service)
            .map(|s| s.local_addr)
    }

    /// Every server's bound address, in the order the servers were added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.local_addr).collect()
    }

    /// What each server registered.
    pub fn registrations(&self) -> Vec<ServiceInfo> {
        self.servers
            .iter()
            .filter(|s| s.registered)
            .map(|s| s.info.clone())
            .collect()
    }

    /// The App's registry, if it has one.
    pub fn registry(&self) -> Option<&Arc<dyn Registry>> {
        self.registry.as_ref()
    }

    /// A handle that makes [`wait`](Self::wait) return after an orderly stop.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: self.shutdown.clone(),
            drained: self.drained.clone(),
        }
    }

    /// A balanced channel to `service`, as [`App::client`](super::App::client) makes it: over
    /// the section's fixed `addresses` if it has some, else over this App's registry (without
    /// one it fails with [`Error::NoRegistry`]).
    pub fn client(&self, service: &str) -> impl Future<Output = Result<ServiceChannel>> + Send + 'static {
        let prepared = super::prepare_client(&self.config, self.registry.as_ref(), service);
        super::build_client(prepared, service)
    }

    /// The settings the App runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the governor (`/metrics`, `/healthz`, `/debug/registry`) listens, if it runs.
    pub fn governor_addr(&self) -> Option<SocketAddr> {
        self.governor.as_ref().map(|(governor, _)| governor.local_addr)
    }

    /// Waits for SIGINT, SIGTERM, a [`ShutdownHandle`] or a server failure, then stops in
    /// order. A second SIGINT or SIGTERM while stopping stops at once: in-flight calls are
    /// cut off and [`Error::Interrupted`] is returned. A server failure is returned after the
    /// stop.
    pub async fn wait(mut self) -> Result<()> {
        let failure = tokio::select! {
            () = termination_signal() => None,
            () = self.shutdown.cancelled() => None,
            Some(error) = self.failures.recv() => Some(error),
        };
        let stopped = {
            let stop = self.stop_in_order();
            tokio::select! {
                stopped = stop => stopped,
                () = termination_signal() => {
                    tracing::warn!("a second signal while stopping: stopping at once");
                    Err(Error::Interrupted)
                }
            }
        };
        // Dropping cuts off whatever a forced stop left running.
        drop(self);
        match failure {
            Some(error) => Err(error),
            None => stopped,
        }
    }

    /// Stops in order: before-stop hooks, health NOT_SERVING, unregister, drain delay,
    /// graceful stop within the shutdown deadline, after-stop hooks. Every step runs even when
    /// an earlier one failed; the first failure is returned.
    ///
    /// Only what this App registered is unregistered, and the registry stays open: it may be
    /// shared with other Apps, and its owner closes it (see [`App::registry`]).
    ///
    /// Registry trouble never holds the stop up for long: every registration is withdrawn at
    /// once, in one attempt bounded by the registry's request timeout. So a stop takes at most
    /// the drain delay, the shutdown deadline and one request timeout.
    pub async fn stop(mut self) -> Result<()> {
        self.stop_in_order().await
    }

    async fn stop_in_order(&mut self) -> Result<()> {
        let mut outcome = Outcome::default();
        self.shutdown.cancel();
        tracing::info!("stopping: health NOT_SERVING, then unregistering");
        self.governor_state.stopping.store(true, Ordering::Relaxed);
        outcome.note(run_hooks(&mut self.stop_hooks, Stage::BeforeStop).await);
        for server in &self.servers {
            set_health(server, ServingStatus::NotServing).await;
        }
        let mut withdrawn = Vec::new();
        for server in self.servers.iter_mut().filter(|s| s.registered) {
            server.registered = false;
            withdrawn.push(server.info.clone());
        }
        let unregistered_any = !withdrawn.is_empty();
        if let Some((_, info)) = self.governor.as_ref().filter(|_| self.governor_registered) {
            self.governor_registered = false;
            withdrawn.push(info.clone());
        }
        if let Some(registry) = &self.registry {
            let unregistering = withdrawn.iter().map(|info| registry.unregister(info));
            for result in futures_util::future::join_all(unregistering).await {
                outcome.note(result);
            }
        }
        if unregistered_any {
            tracing::info!(drain_delay = ?self.config.drain_delay, "unregistered; draining");
            tokio::time::sleep(self.config.drain_delay).await;
        }
        self.drained.cancel();
        tracing::info!(shutdown_deadline = ?self.config.shutdown_deadline, "stopping the servers gracefully");
        outcome.note(stop_servers(&mut self.servers, self.config.shutdown_deadline).await);
        if let Some((governor, _)) = self.governor.take() {
            governor.stop().await;
        }
        outcome.note(run_hooks(&mut self.stop_hooks, Stage::AfterStop).await);
        tracing::info!("stopped");
        outcome.into_result()
    }

    pub(super) async fn start(mut app: App) -> Result<Self> {
        let config = app.resolved_config()?;
        let (mut start_hooks, stop_hooks) = app
            .hooks
            .drain(..)
            .partition::<Vec<_>, _>(|(stage, _)| matches!(stage, Stage::BeforeStart | Stage::AfterStart));
        run_hooks(&mut start_hooks, Stage::BeforeStart).await?;

        let mut bound = Vec::with_capacity(app.servers.len());
        for server in app.servers.drain(..) {
            let section = config.servers.get(server.name()).cloned().unwrap_or_default();
            bound.push(bind(server, &config.name, &section).await?);
        }
        let governor_state = GovernorState {
            registry: app.registry.clone(),
            ..GovernorState::default()
        };
        let governor = match config.governor.enabled {
            true => {
                let governor = Governor::start(config.governor.address, governor_state.clone()).await?;
                let address = advertised(
                    config.governor.advertise.as_ref(),
                    governor.local_addr,
                    "governor.advertise",
                    "the host:port scrapers should dial, because the governor listens on every interface",
                );
                let address = match address {
                    Ok(address) => address,
                    Err(error) => {
                        // A start that fails leaves nothing serving, the governor included.
                        governor.stop().await;
                        return Err(error);
                    }
                };
                let info = governor_info(&config, &bound, address);
                Some((governor, info))
            }
            false => None,
        };

        let (failure_tx, failures) = mpsc::unbounded_channel();
        let servers = bound.into_iter().map(|b| b.serve(failure_tx.clone())).collect();
        let mut running = Running {
            config,
            registry: app.registry.take(),
            servers,
            governor,
            governor_state,
            governor_registered: false,
            stop_hooks,
            shutdown: app.shutdown.clone(),
            drained: app.drained.clone(),
            failures,
        };
        for server in &running.servers {
            set_health(server, ServingStatus::Serving).await;
        }
        if let Err(error) = running.register_all().await {
            running.abort_start().await;
            return Err(error);
        }
        if let Err(error) = run_hooks(&mut start_hooks, Stage::AfterStart).await {
            running.abort_start().await;
            return Err(error);
        }
        Ok(running)
    }

    async fn register_all(&mut self) -> Result<()> {
        let Some(registry) = &self.registry else {
            if !self.servers.is_empty() {
                tracing::warn!("no registry set: servers serve but nobody can discover them");
            }
            return Ok(());
        };
        for server in &mut self.servers {
            registry.register(&server.info).await?;
            server.registered = true;
            tracing::info!(service = %server.info.name, address = %server.info.address, "registered");
        }
        let mut registrations: Vec<ServiceInfo> = self.servers.iter().map(|s| s.info.clone()).collect();
        if let Some((_, info)) = &self.governor {
            // Metrics discovery is worth a warning, not a failed start: a registry user limited
            // to the service prefix may not write `/prometheus/job/`.
            match registry.register(info).await {
                Ok(()) => {
                    self.governor_registered = true;
                    registrations.push(info.clone());
                }
                Err(error) => tracing::warn!(%error, "the governor's metrics target could not be registered"),
            }
        }
        *self.governor_state.registrations.lock().expect("governor state lock") = registrations;
        Ok(())
    }

    /// Undoes a start that failed halfway: no drain (nobody saw a complete start), no hooks.
    async fn abort_start(mut self) {
        self.config.drain_delay = Duration::ZERO;
        self.stop_hooks.clear();
        if let Err(error) = self.stop().await {
            tracing::warn!(%error, "cleaning up after a failed start");
        }
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field(
                "servers",
                &self
                    .servers
                    .iter()
                    .map(|s| (&s.info.name, s.local_addr))
                    .collect::<Vec<_>>(),
            )
            .field("governor", &self.governor_addr())
            .field("registry", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for server in &self.servers {
            server.stop.cancel();
            server.cut_off.cancel();
        }
    }
}

/// A server whose listener is bound but which does not serve yet.
struct BoundServer {
    server: GrpcServer,
    listening: Listening,
    max_request_message: Option<usize>,
    info: ServiceInfo,
    local_addr: SocketAddr,
}

/// The address to register for a listener bound at `local_addr`: `advertise` if set, else
/// the bound address, which must then be one a client can dial.
fn advertised(advertise: Option<&String>, local_addr: SocketAddr, key: &str, expected: &str) -> Result<String> {
    match advertise {
        Some(address) => Ok(address.clone()),
        None if local_addr.ip().is_unspecified() => Err(Error::Config {
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: "nothing".into(),
        }),
        None => Ok(local_addr.to_string()),
    }
}

/// What the App registers for its governor: `/prometheus/job/{app}/{host}/{address}`.
fn governor_info(config: &Config, servers: &[BoundServer], address: String) -> ServiceInfo {
    let name = match (&config.name, servers.first()) {
        (name, _) if !name.is_empty() => name.clone(),
        (_, Some(server)) => server.info.name.clone(),
        _ => "jovian".to_owned(),
    };
    let mut info = ServiceInfo::new(name, address);
    info.kind = EntryKind::Governor;
    info.scheme = "http".to_owned();
    info.hostname = hostname();
    info.app_id = config.name.clone();
    info
}

/// Binds `server` with its settings: what its code set, else its config `section`.
async fn bind(server: GrpcServer, app_name: &str, section: &ServerConfig) -> Result<BoundServer> {
    let settings = server.settings.or(section);
    let host = settings.host.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let bind = SocketAddr::new(host, settings.port.unwrap_or(0));
    let connections = settings.connections(server.name())?;
    let tls = settings
        .tls
        .as_ref()
        .map(|tls| tls.acceptor(server.name()))
        .transpose()?;
    let (listener, local_addr) = crate::server::listen(bind).await?;
    let address = advertised(
        settings.advertise.as_ref(),
        local_addr,
        &format!("servers.{}.advertise", server.name()),
        "the host:port clients should dial, because the server listens on every interface",
    )?;
    let mut info = server.info.clone();
    settings.register_into(&mut info);
    info.address = address;
    info.kind = EntryKind::Provider;
    if info.app_id.is_empty() {
        info.app_id = app_name.to_owned();
    }
    if info.hostname.is_empty() {
        info.hostname = hostname();
    }
    // A restarted process re-announces itself with a new start time, so clients that ejected
    // the old process re-admit the new one at once instead of waiting out the back-off.
    info.metadata.entry(STARTED_AT.to_owned()).or_insert_with(started_at);
    // jovian's server answers every ping at once and punishes none: its clients may ping it as
    // often as they need to notice it frozen (the module head of `client::transport`).
    info.metadata
        .entry(crate::service::MIN_PING_INTERVAL_KEY.to_owned())
        .or_insert_with(|| "0".to_owned());
    info.validate().map_err(|source| Error::InvalidServiceInfo {
        service: info.to_string(),
        source,
    })?;
    Ok(BoundServer {
        server,
        listening: Listening {
            listener,
            tcp_keepalive: settings.tcp_keepalive,
            tls,
            connections,
        },
        max_request_message: settings.max_request_message_bytes,
        info,
        local_addr,
    })
}

impl BoundServer {
    fn serve(self, failures: mpsc::UnboundedSender<Error>) -> ServingServer {
        let (health, health_service) = tonic_health::server::health_reporter();
        let grpc_services = self.server.grpc_services.clone();
        let (service, methods) = self
            .server
            .into_service(tonic::service::Routes::new(health_service), self.max_request_message);
        let service = ServerObserve::new(service, &self.info.name, methods);
        let stop = CancellationToken::new();
        let cut_off = CancellationToken::new();
        let serving = serve::serve(self.listening, service, stop.clone(), cut_off.clone());
        let name = self.info.name.clone();
        let task = tokio::spawn(async move {
            let source: crate::error::BoxError = match serving.await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error.into(),
                Err(panicked) => panicked.into(),
            };
            tracing::error!(service = %name, error = %source, "server failed");
            let _ = failures.send(Error::Serve { server: name, source });
        });
        ServingServer {
            info: self.info,
            local_addr: self.local_addr,
            health,
            grpc_services,
            stop,
            cut_off,
            task: Some(task),
            registered: false,
        }
    }
}

async fn set_health(server: &ServingServer, status: ServingStatus) {
    server.health.set_service_status("", status).await;
    for name in &server.grpc_services {
        server.health.set_service_status(*name, status).await;
    }
}

/// Asks every server to stop accepting and waits for in-flight calls, up to `deadline`; past it
/// every remaining connection is cut off.
async fn stop_servers(servers: &mut [ServingServer], deadline: Duration) -> Result<()> {
    for server in servers.iter() {
        server.stop.cancel();
    }
    let tasks: Vec<_> = servers.iter_mut().filter_map(|s| s.task.take()).collect();
    let mut all_stopped = futures_util::future::join_all(tasks);
    if tokio::time::timeout(deadline, &mut all_stopped).await.is_ok() {
        return Ok(());
    }
    for server in servers.iter() {
        server.cut_off.cancel();
    }
    all_stopped.await;
    Err(Error::ShutdownDeadline(deadline))
}

async fn run_hooks(hooks: &mut Vec<(Stage, Hook)>, stage: Stage) -> Result<()> {
    let mut outcome = Outcome::default();
    let (now, later): (Vec<_>, Vec<_>) = hooks.drain(..).partition(|(s, _)| *s == stage);
    *hooks = later;
    for (_, hook) in now {
        outcome.note(hook().await.map_err(|source| Error::Hook { stage, source }));
    }
    outcome.into_result()
}

/// Keeps the first failure of a sequence of steps that must all run.
#[derive(Default)]
struct Outcome(Option<Error>);

impl Outcome {
    fn note(&mut self, result: Result<()>) {
        if let Err(error) = result {
            tracing::warn!(%error, "while stopping");
            self.0.get_or_insert(error);
        }
    }

    fn into_result(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the app");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The metadata key holding when the registering process started (Unix milliseconds).
pub const STARTED_AT: &str = "started_at";

fn started_at() -> String {
    static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STARTED
        .get_or_init(|| {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            since_epoch.as_millis().to_string()
        })
        .clone()
}

/// This machine's host name, for the registry entry; empty when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}
