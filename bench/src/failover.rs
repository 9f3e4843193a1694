//! Scenario 6: calls lost when one of three server processes is SIGKILLed under load, and
//! during a rolling restart (SIGTERM, start again), on real etcd. The servers are this same
//! program run with `--serve-greeter`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jovian::client::ClientOptions;
use jovian::{ClientBuilder, Discovery, Registry};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use tokio::process::Command;

use crate::Sizes;
use crate::process::Process;
use crate::report::Section;
use crate::servers::{Load, greeter};

const CALLERS: usize = 16;

/// Starts this program as a greeter registered as `service`; returns once it serves.
pub(crate) async fn server_process(etcd: &EtcdCluster, service: &str) -> anyhow::Result<Process> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--serve-greeter", &etcd.endpoints().join(","), "--service", service]);
    Process::start(command, "serving ").await
}

#[derive(Clone, Copy)]
enum Event {
    Kill { idempotent: bool },
    RollingRestart,
}

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let etcd = EtcdCluster::single().await;
    let mut section = Section::new(
        "6. Failover",
        "no failed call when a call may be retried; at most the calls in flight on the dead instance otherwise",
        &[
            "event",
            "calls marked",
            "calls",
            "failed (total over reps)",
            "worst rep",
        ],
    );
    for event in [
        Event::Kill { idempotent: false },
        Event::Kill { idempotent: true },
        Event::RollingRestart,
    ] {
        let (mut calls, mut failed, mut worst) = (0, 0, 0);
        for rep in 0..sizes.reps {
            let service = format!("failover-{}-{rep}", section.rows.len());
            let (c, f) = match event {
                Event::Kill { idempotent } => kill_one(&etcd, &service, idempotent, sizes.failover_duration).await?,
                Event::RollingRestart => rolling_restart(&etcd, &service, sizes.failover_duration).await?,
            };
            calls += c;
            failed += f;
            worst = worst.max(f);
        }
        let (name, marking) = match event {
            Event::Kill { idempotent: true } => ("1 of 3 SIGKILLed", "idempotent"),
            Event::Kill { idempotent: false } => ("1 of 3 SIGKILLed", "not idempotent"),
            Event::RollingRestart => ("rolling restart of 3", "not idempotent"),
        };
        section.row(vec![
            name.into(),
            marking.into(),
            calls.to_string(),
            failed.to_string(),
            worst.to_string(),
        ]);
    }
    section.note(format!(
        "{CALLERS} callers in flight against 3 greeter server processes registered in etcd; a SIGKILLed server stays \
         registered until its lease expires, so the client must route around it by itself."
    ));
    Ok(section)
}

async fn client(etcd: &EtcdCluster, service: &str, idempotent: bool) -> anyhow::Result<jovian::ServiceChannel> {
    let mut options = ClientOptions::default();
    if idempotent {
        options.retry.idempotent_methods.insert("*".into());
    }
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?;
    let channel = ClientBuilder::new(registry).options(options).build(service).await?;
    Ok(channel)
}

async fn start_three(etcd: &EtcdCluster, service: &str) -> anyhow::Result<Vec<Process>> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(server_process(etcd, service).await?);
    }
    wait_registered(etcd, service, 3).await?;
    Ok(servers)
}

/// Waits (at most 10 s) until `service` has `count` instances in etcd.
pub(crate) async fn wait_registered(etcd: &EtcdCluster, service: &str, count: usize) -> anyhow::Result<()> {
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer.list(service).await?.len() != count {
        anyhow::ensure!(Instant::now() < deadline, "{service} never had {count} instances");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn kill_one(
    etcd: &EtcdCluster,
    service: &str,
    idempotent: bool,
    duration: Duration,
) -> anyhow::Result<(usize, usize)> {
    let mut servers = start_three(etcd, service).await?;
    let channel = client(etcd, service, idempotent).await?;
    let load = Load::start(&channel, CALLERS);
    tokio::time::sleep(duration / 2).await;
    let victim = servers.remove(0);
    victim.signal("-KILL")?;
    victim.wait().await?;
    tokio::time::sleep(duration).await;
    Ok(load.finish().await)
}

async fn rolling_restart(etcd: &EtcdCluster, service: &str, duration: Duration) -> anyhow::Result<(usize, usize)> {
    let mut servers = start_three(etcd, service).await?;
    let channel = client(etcd, service, false).await?;
    let load = Load::start(&channel, CALLERS);
    for _ in 0..3 {
        tokio::time::sleep(duration / 4).await;
        let old = servers.remove(0);
        old.signal("-TERM")?;
        old.wait().await?;
        servers.push(server_process(etcd, service).await?);
        wait_registered(etcd, service, 3).await?;
    }
    tokio::time::sleep(duration / 4).await;
    Ok(load.finish().await)
}

/// The `--serve-greeter` mode: a greeter registered in etcd at `endpoints` (or in no registry
/// when `endpoints` is `-`), until SIGTERM.
/// Starts a plain tonic greeter (`tonic::transport::Server`, its defaults) in a process of its
/// own, not registered anywhere: tonic has no registry.
pub(crate) async fn tonic_server_process() -> anyhow::Result<Process> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--serve-tonic");
    Process::start(command, "serving ").await
}

/// Serves a plain tonic greeter (the `--serve-tonic` process).
pub(crate) async fn serve_tonic() -> anyhow::Result<()> {
    let (addr, server) = crate::h2load::start_tonic().await?;
    println!("serving {addr}");
    server.await?;
    Ok(())
}

pub(crate) async fn serve_greeter(endpoints: &str, service: &str) -> anyhow::Result<()> {
    let registry: Option<Arc<dyn Registry>> = match endpoints {
        "-" => None,
        endpoints => Some(Arc::new(
            EtcdRegistry::connect(EtcdConfig::new(endpoints.split(','))).await?,
        )),
    };
    let running = greeter(service, registry).await?;
    println!("serving {}", running.local_addrs()[0]);
    running.wait().await?;
    Ok(())
}
