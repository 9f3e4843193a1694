//! The chaos server process: an `Echo` service on jovian's [`App`], registered in etcd through
//! the proxies it is given, reporting every attempt it receives and every phase of its life.
//!
//! It starts again by itself if starting fails (etcd unreachable, say): a fault may be active
//! when the orchestrator restarts it, and a server that gives up would only test the
//! orchestrator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jovian::{App, GrpcServer, Registrar};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use tonic::{Request, Response, Status};

use crate::history::{Emitter, Event};
use crate::proto::echo_server::{Echo, EchoServer};
use crate::proto::{Answer, Call};

/// The service name every chaos server registers.
pub const SERVICE: &str = "chaos";

/// How a server process runs.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// This process's slot (`s0`..).
    #[arg(long)]
    pub slot: String,
    /// Its incarnation.
    #[arg(long)]
    pub r#gen: u32,
    /// The run's epoch (Unix ms).
    #[arg(long)]
    pub epoch_ms: u64,
    /// etcd endpoints (its proxies), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The lease TTL, in ms.
    #[arg(long)]
    pub ttl_ms: u64,
    /// Where to listen.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The address to register (its client-facing proxy).
    #[arg(long)]
    pub advertise: String,
}

/// The App's drain delay: long enough for clients to see the removal before serving stops.
pub const DRAIN: Duration = Duration::from_millis(500);
/// How long in-flight calls get once serving stops.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(2);

struct EchoService {
    instance: String,
    out: Arc<Emitter>,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn read(&self, request: Request<Call>) -> Result<Response<Answer>, Status> {
        self.answer("read", request)
    }

    async fn write(&self, request: Request<Call>) -> Result<Response<Answer>, Status> {
        self.answer("write", request)
    }
}

impl EchoService {
    fn answer(&self, method: &str, request: Request<Call>) -> Result<Response<Answer>, Status> {
        self.out.emit(Event::Recv {
            id: request.into_inner().id,
            method: method.to_owned(),
        });
        Ok(Response::new(Answer {
            instance: self.instance.clone(),
        }))
    }
}

/// Runs the server until SIGTERM, then stops it in order.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let clock = crate::clock::Clock::from_epoch(args.epoch_ms);
    let out = Arc::new(Emitter::stdout(&args.slot, args.r#gen, clock));
    crate::process::report_panics(out.clone());
    crate::process::exit_with_parent();
    crate::process::sample_resources(out.clone());
    let lifecycle = |phase: &str, error: String| Event::Lifecycle {
        phase: phase.to_owned(),
        address: args.advertise.clone(),
        error,
    };
    let terminated = crate::process::termination();
    tokio::pin!(terminated);
    let running = loop {
        out.emit(lifecycle("starting", String::new()));
        let started = tokio::select! {
            () = &mut terminated => {
                out.emit(lifecycle("stopped", "terminated before it started".into()));
                return Ok(());
            }
            started = start(&args, out.clone()) => started,
        };
        match started {
            Ok(running) => break running,
            Err(error) => {
                out.emit(lifecycle("start_failed", format!("{error:#}")));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    out.emit(lifecycle("registered", String::new()));
    terminated.await;
    out.emit(lifecycle("stopping", String::new()));
    // The App leaves its registry open; this process owns it, so it closes it, which revokes
    // the lease now instead of letting it expire.
    let registry = running.registry().cloned();
    let mut stopped = running.stop().await;
    if let Some(registry) = registry {
        stopped = stopped.and(registry.close().await);
    }
    out.emit(lifecycle(
        "stopped",
        stopped.err().map(|e| e.to_string()).unwrap_or_default(),
    ));
    Ok(())
}

async fn start(args: &ServerArgs, out: Arc<Emitter>) -> anyhow::Result<jovian::Running> {
    let config = EtcdConfig::new(args.etcd.clone()).ttl(Duration::from_millis(args.ttl_ms));
    let registry = EtcdRegistry::connect(config).await?;
    let echo = EchoService {
        instance: format!("{}/{}@{}", args.slot, args.r#gen, args.advertise),
        out,
    };
    let server = GrpcServer::new(SERVICE)
        .bind(args.listen)
        .advertise(args.advertise.clone())
        .add_service(EchoServer::new(echo));
    let running = App::new()
        .config(jovian::Config::default())
        .name("chaos-server")
        .governor(None)
        .drain_delay(DRAIN)
        .shutdown_deadline(SHUTDOWN_DEADLINE)
        .registry(registry)
        .serve(server)
        .start()
        .await?;
    Ok(running)
}
