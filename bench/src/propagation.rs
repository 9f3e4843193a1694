//! Scenario 1: how fast membership changes reach calls, against etcd's own put-to-watch-event
//! latency (the floor) on the same etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use jovian::{ClientBuilder, Registrar, Registry, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;

use crate::Sizes;
use crate::report::{Section, ms, quantile, ratio};
use crate::servers::{Load, greeter};

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let etcd = EtcdCluster::single().await;
    let connect = || EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()));
    let base_registry: Arc<dyn Registry> = Arc::new(connect().await?);
    let _base = greeter("prop", Some(base_registry)).await?;
    let channel = ClientBuilder::new(connect().await?).build("prop").await?;
    let load = Load::start(&channel, 4);
    let registrar = connect().await?;
    let mut raw = etcd.client().await;
    let (_watcher, mut events) = {
        let stream = raw
            .watch("/bench/floor/", Some(WatchOptions::new().with_prefix()))
            .await?;
        stream.split()
    };

    let (mut floor, mut joins, mut leaves) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..sizes.reps {
        for sample in 0..sizes.propagation_samples {
            // The floor: a put and the watch event it causes.
            let key = format!("/bench/floor/{rep}-{sample}");
            let put_at = Instant::now();
            raw.put(key.as_str(), "x", None).await?;
            loop {
                let response = events
                    .message()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the floor watch ended"))?;
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Put && e.kv().is_some_and(|kv| kv.key() == key.as_bytes()))
                {
                    floor.push(put_at.elapsed());
                    break;
                }
            }

            // jovian: an instance that already serves is registered; when does a call reach it?
            let joining = greeter("prop", None).await?;
            let address = joining.local_addrs()[0].to_string();
            let info = ServiceInfo::new("prop", address.clone());
            load.forget(&address);
            let registered_at = Instant::now();
            registrar.register(&info).await?;
            let deadline = Instant::now() + Duration::from_secs(5);
            let first = loop {
                if let Some(seen) = load.seen(&address) {
                    break Some(seen.first_finished);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            joins.extend(first.map(|at| at.saturating_duration_since(registered_at)));

            // And when unregistered, when is it picked for the last time?
            let unregistered_at = Instant::now();
            registrar.unregister(&info).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let last_pick = load.seen(&address).map(|seen| seen.last_started);
            leaves.push(last_pick.map_or(Duration::ZERO, |at| at.saturating_duration_since(unregistered_at)));
            joining.stop().await?;
        }
    }
    let (calls, failed) = load.finish().await;

    let mut section = Section::new(
        "1. Propagation",
        "registration to first routed call p99 within 1 ms of etcd's own put-to-watch-event p99",
        &["measure", "samples", "p50", "p99", "p99 vs floor"],
    );
    let floor_p99 = quantile(&floor, 0.99).map_or(f64::NAN, |d| d.as_secs_f64());
    for (name, samples) in [
        ("etcd put → watch event (floor)", &floor),
        ("register → first call routed to it", &joins),
        ("unregister → last pick of it", &leaves),
    ] {
        let p99 = quantile(samples, 0.99);
        section.row(vec![
            name.to_owned(),
            samples.len().to_string(),
            ms(quantile(samples, 0.5)),
            ms(p99),
            ratio(p99.map_or(f64::NAN, |d| d.as_secs_f64()), floor_p99),
        ]);
    }
    section.note(format!(
        "Registration includes the registry's own put round trip; the client under load ran 4 callers ({} calls, {failed} failed). \
         'Last pick' is how long after unregister() returned a call still started on the instance (0 when none did).",
        calls
    ));
    Ok(section)
}
