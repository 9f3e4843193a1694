//! Scenario 6: calls lost when an instance dies under load, and during a rolling restart.

use std::sync::Arc;
use std::time::Duration;

use jovian::client::ClientOptions;
use jovian::{ClientBuilder, Registry};
use jovian_registry_memory::MemoryStore;

use crate::Sizes;
use crate::report::Section;
use crate::servers::{Load, greeter};

const CALLERS: usize = 16;

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
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
    for idempotent in [false, true] {
        let (mut calls, mut failed, mut worst) = (0, 0, 0);
        for _ in 0..sizes.reps {
            let (c, f) = kill_one(idempotent, sizes.failover_duration).await?;
            calls += c;
            failed += f;
            worst = worst.max(f);
        }
        let marking = if idempotent { "idempotent" } else { "not idempotent" };
        section.row(vec![
            "1 of 3 instances dies (killed)".into(),
            marking.into(),
            calls.to_string(),
            failed.to_string(),
            worst.to_string(),
        ]);
    }
    let (mut calls, mut failed, mut worst) = (0, 0, 0);
    for _ in 0..sizes.reps {
        let (c, f) = rolling_restart(sizes.failover_duration).await?;
        calls += c;
        failed += f;
        worst = worst.max(f);
    }
    section.row(vec![
        "rolling restart of 3 (graceful)".into(),
        "not idempotent".into(),
        calls.to_string(),
        failed.to_string(),
        worst.to_string(),
    ]);
    section.note(format!("{CALLERS} callers in flight; servers in this process; a killed server's connections are cut at once and it stays registered."));
    Ok(section)
}

async fn kill_one(idempotent: bool, duration: Duration) -> anyhow::Result<(usize, usize)> {
    let store = MemoryStore::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let registry: Arc<dyn Registry> = Arc::new(store.registry());
        servers.push(greeter("failover", Some(registry)).await?);
    }
    let mut options = ClientOptions::default();
    if idempotent {
        options.retry.idempotent_methods.insert("*".into());
    }
    let channel = ClientBuilder::new(store.registry())
        .options(options)
        .build("failover")
        .await?;
    let load = Load::start(&channel, CALLERS);
    tokio::time::sleep(duration / 2).await;
    drop(servers.remove(0));
    tokio::time::sleep(duration).await;
    Ok(load.finish().await)
}

async fn rolling_restart(duration: Duration) -> anyhow::Result<(usize, usize)> {
    let store = MemoryStore::new();
    let start = || async {
        let registry: Arc<dyn Registry> = Arc::new(store.registry());
        greeter("rolling", Some(registry)).await
    };
    let mut servers = vec![start().await?, start().await?, start().await?];
    let channel = ClientBuilder::new(store.registry()).build("rolling").await?;
    let load = Load::start(&channel, CALLERS);
    for _ in 0..3 {
        tokio::time::sleep(duration / 4).await;
        servers.remove(0).stop().await?;
        servers.push(start().await?);
    }
    tokio::time::sleep(duration / 4).await;
    Ok(load.finish().await)
}
