//! The chaos client process: callers on a [`ServiceChannel`](jovian::ServiceChannel) to the chaos service, recording
//! every call and every change of the channel's instance set.
//!
//! `Read` is marked idempotent in the client options, `Write` is not. Every call carries a
//! deadline, so an instance that is frozen or blackholed cannot hold a caller forever.
//!
//! With `--broken`, the client's registry is wrapped in [`EmptiesOnTrouble`], which publishes
//! an empty instance set whenever etcd does not answer: the defect the checker must catch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jovian::{ClientBuilder, ClientOptions, Discovery, Instances, InstancesPublisher, InstancesWatch};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use rand::Rng;

use crate::history::{Emitter, Event};
use crate::proto::Call;
use crate::proto::echo_client::EchoClient;
use crate::server::SERVICE;

/// The idempotent method's path.
pub const READ: &str = "/chaos.Echo/Read";

/// How a client process runs.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// This process's slot (`c0`..).
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
    /// The lease TTL, in ms (for the registry's settings; clients hold no lease).
    #[arg(long)]
    pub ttl_ms: u64,
    /// Callers calling at once.
    #[arg(long, default_value_t = 3)]
    pub concurrency: usize,
    /// Pause between one caller's calls, in ms.
    #[arg(long, default_value_t = 25)]
    pub pause_ms: u64,
    /// Each call's deadline, in ms: the framework's default. An idempotent call survives a
    /// frozen instance only if its deadline leaves time for the keep-alive to notice (about 2 s)
    /// and for a retry.
    #[arg(long, default_value_t = 5000)]
    pub deadline_ms: u64,
    /// Empty the instance set whenever etcd does not answer (a deliberately broken client).
    #[arg(long)]
    pub broken: bool,
}

/// Runs callers and the snapshot recorder until SIGTERM; then lets in-flight calls finish.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let clock = crate::clock::Clock::from_epoch(args.epoch_ms);
    let out = Arc::new(Emitter::stdout(&args.slot, args.r#gen, clock));
    crate::process::report_panics(out.clone());
    crate::process::exit_with_parent();
    crate::process::sample_resources(out.clone());
    let channel = tokio::select! {
        () = crate::process::termination() => return Ok(()),
        channel = connect(&args, &out) => channel,
    };
    tokio::spawn(record_snapshots(channel.clone(), out.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let caller = Caller {
                client: EchoClient::new(channel.clone()),
                out: out.clone(),
                prefix: format!("{}.{}", args.slot, args.r#gen),
                sequence: sequence.clone(),
                deadline: Duration::from_millis(args.deadline_ms),
            };
            tokio::spawn(caller.run(stop.clone(), Duration::from_millis(args.pause_ms)))
        })
        .collect();
    crate::process::termination().await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    Ok(())
}

/// Connects and builds the channel, trying again until etcd answers: the client may be
/// (re)started while a fault keeps etcd away.
async fn connect(args: &ClientArgs, out: &Emitter) -> jovian::ServiceChannel {
    let mut options = ClientOptions::default();
    options.retry.idempotent_methods.insert(READ.to_owned());
    loop {
        let config = EtcdConfig::new(args.etcd.clone()).ttl(Duration::from_millis(args.ttl_ms));
        let built = match EtcdRegistry::connect(config).await {
            Ok(registry) if args.broken => {
                ClientBuilder::new(EmptiesOnTrouble(Arc::new(registry)))
                    .options(options.clone())
                    .build(SERVICE)
                    .await
            }
            Ok(registry) => {
                ClientBuilder::new(registry)
                    .options(options.clone())
                    .build(SERVICE)
                    .await
            }
            Err(error) => Err(error),
        };
        match built {
            Ok(channel) => return channel,
            Err(error) => {
                out.emit(Event::Note {
                    text: format!("client could not start: {error}"),
                });
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn record_snapshots(channel: jovian::ServiceChannel, out: Arc<Emitter>) {
    let mut last: Option<Vec<String>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let mut members: Vec<String> = channel.instances().into_iter().map(|i| i.address).collect();
        members.sort();
        if last.as_ref() != Some(&members) {
            out.emit(Event::Snapshot {
                members: members.clone(),
            });
            last = Some(members);
        }
    }
}

struct Caller {
    client: EchoClient<jovian::ServiceChannel>,
    out: Arc<Emitter>,
    prefix: String,
    sequence: Arc<AtomicU64>,
    deadline: Duration,
}

impl Caller {
    async fn run(mut self, stop: Arc<AtomicBool>, pause: Duration) {
        while !stop.load(Ordering::Relaxed) {
            let read = rand::rng().random_bool(0.5);
            self.call(read).await;
            tokio::time::sleep(pause).await;
        }
    }

    async fn call(&mut self, read: bool) {
        let id = format!("{}.{}", self.prefix, self.sequence.fetch_add(1, Ordering::Relaxed));
        let mut request = tonic::Request::new(Call { id: id.clone() });
        request.set_timeout(self.deadline);
        let start = self.out.clock().now();
        let result = match read {
            true => self.client.read(request).await,
            false => self.client.write(request).await,
        };
        let method = if read { "read" } else { "write" }.to_owned();
        let event = match result {
            Ok(answer) => Event::Call {
                id,
                method,
                start,
                ok: true,
                code: String::new(),
                message: String::new(),
                instance: answer.into_inner().instance,
            },
            Err(status) => Event::Call {
                id,
                method,
                start,
                ok: false,
                code: format!("{:?}", status.code()),
                message: status.message().to_owned(),
                instance: String::new(),
            },
        };
        self.out.emit(event);
    }
}

/// A registry wrapper whose watches publish an empty set while etcd does not answer a `list`
/// (probed every 200 ms with a 1 s limit) — the "empties on registry trouble" defect, built on
/// purpose so the checker can be shown to catch it.
pub struct EmptiesOnTrouble(pub Arc<dyn Discovery>);

#[async_trait]
impl Discovery for EmptiesOnTrouble {
    async fn list(&self, name: &str) -> jovian::Result<Instances> {
        self.0.list(name).await
    }

    async fn watch(&self, name: &str) -> jovian::Result<InstancesWatch> {
        let mut inner = self.0.watch(name).await?;
        let (publisher, watch) = InstancesWatch::channel(inner.current());
        tokio::spawn(empty_on_trouble(self.0.clone(), name.to_owned(), inner, publisher));
        Ok(watch)
    }

    async fn services(&self) -> jovian::Result<Vec<String>> {
        self.0.services().await
    }
}

async fn empty_on_trouble(
    registry: Arc<dyn Discovery>,
    name: String,
    mut inner: InstancesWatch,
    publisher: InstancesPublisher,
) {
    let mut probe = tokio::time::interval(Duration::from_millis(200));
    let mut troubled = false;
    loop {
        tokio::select! {
            changed = inner.changed() => match changed {
                Ok(endpoints) if !troubled => { publisher.publish(endpoints); }
                Ok(_) => {}
                Err(_) => return,
            },
            _ = probe.tick() => {
                let answered = tokio::time::timeout(Duration::from_secs(1), registry.list(&name)).await;
                let healthy = matches!(answered, Ok(Ok(_)));
                if healthy == troubled {
                    troubled = !healthy;
                    let endpoints = match troubled {
                        true => Instances::new(name.as_str(), inner.peek().revision()),
                        false => inner.peek(),
                    };
                    publisher.publish(endpoints);
                }
            }
        }
    }
}
