//! Scenario 4: a service with many instances on real etcd: how long a new client takes to
//! sync, how long one change takes to apply, and what each instance costs a client in memory.

use std::time::{Duration, Instant};

use etcd_client::PutOptions;
use jovian::{ClientBuilder, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;

use crate::Sizes;
use crate::report::{Section, median_f64, ms};

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let n = sizes.large_service;
    let etcd = EtcdCluster::single().await;
    let mut client = etcd.client().await;
    let lease = client.lease_grant(600, None).await?.id();
    let mut puts = Vec::new();
    for i in 0..n {
        let info = ServiceInfo::new(
            "large",
            format!("10.{}.{}.{}:50051", i / 65536, (i / 256) % 256, i % 256),
        );
        let key = format!("/jovian/large/providers/{}", info.uri());
        let mut client = client.clone();
        puts.push(async move {
            client
                .put(key, info.encode(), Some(PutOptions::new().with_lease(lease)))
                .await
        });
        if puts.len() == 64 || i + 1 == n {
            for put in futures_util::future::join_all(std::mem::take(&mut puts)).await {
                put?;
            }
        }
    }

    let (mut syncs, mut changes, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..sizes.reps {
        let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?;
        let before = resident_bytes();
        let started = Instant::now();
        let channel = ClientBuilder::new(registry).build("large").await?;
        syncs.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(
            channel.instances().len() == n,
            "synced {} of {n}",
            channel.instances().len()
        );
        bytes.push((resident_bytes().saturating_sub(before)) as f64 / n as f64);

        let extra = ServiceInfo::new("large", format!("192.168.0.{}:50051", rep % 250));
        let key = format!("/jovian/large/providers/{}", extra.uri());
        let changed_at = Instant::now();
        client
            .put(key.as_str(), extra.encode(), Some(PutOptions::new().with_lease(lease)))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel.instance_count() != n + 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        anyhow::ensure!(channel.instance_count() == n + 1, "the change did not arrive");
        changes.push(changed_at.elapsed().as_secs_f64());
        client.delete(key.as_str(), None).await?;
        drop(channel);
    }

    let mut section = Section::new(
        &format!("4. Large service ({n} instances)"),
        "initial sync under 1 s, one change applied under 10 ms, under 1 KiB of client memory per instance",
        &["measure", "median", "worst of reps"],
    );
    let secs = |s: &[f64], f: fn(&[f64]) -> f64| ms(Some(Duration::from_secs_f64(f(s))));
    let worst = |s: &[f64]| s.iter().copied().fold(f64::NAN, f64::max);
    section.row(vec![
        "new client: list + build the instance set".into(),
        secs(&syncs, median_f64),
        secs(&syncs, worst),
    ]);
    section.row(vec![
        "one registration → applied in the client".into(),
        secs(&changes, median_f64),
        secs(&changes, worst),
    ]);
    section.row(vec![
        "client memory per instance (resident set growth)".into(),
        format!("{:.0} B", median_f64(&bytes)),
        format!("{:.0} B", worst(&bytes)),
    ]);
    section.note(
        "Memory is the process's resident set before and after building the client, divided by the instances: \
         it includes the etcd response being decoded and allocator slack, so it overstates the steady state.",
    );
    Ok(section)
}

/// The process's resident set in bytes (Linux).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}
