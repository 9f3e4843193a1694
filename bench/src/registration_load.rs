//! Scenario 5: many registrations, each with its own registry and lease, on one etcd: the
//! keep-alive traffic they cost etcd, and whether every one is still there at the end.

use jovian::Discovery;
use jovian::Registrar;
use std::time::{Duration, Instant};

use jovian::ServiceInfo;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::http_get;

use crate::Sizes;
use crate::report::Section;

const TTL: Duration = Duration::from_secs(10);

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let n = sizes.registrations;
    let etcd = EtcdCluster::single().await;
    let mut registries = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()).ttl(TTL)).await?;
        registry
            .register(&ServiceInfo::new("load", format!("10.1.{}.{}:50051", i / 256, i % 256)))
            .await?;
        registries.push(registry);
    }
    let registering = started.elapsed();
    let metrics_addr = etcd.endpoint(0).parse()?;
    let before = keepalives_received(metrics_addr).await;
    let measuring = Instant::now();
    tokio::time::sleep(sizes.registration_duration).await;
    let after = keepalives_received(metrics_addr).await;
    let elapsed = measuring.elapsed().as_secs_f64();
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?;
    let present = observer.list("load").await?.len();
    let renewals: u64 = registries.iter().map(|r| r.stats().lease_renewals).sum();
    let reregistrations: u64 = registries.iter().map(|r| r.stats().reregistrations).sum();

    let mut section = Section::new(
        &format!(
            "5. Registration load ({n} registrations, {:.0} s)",
            sizes.registration_duration.as_secs_f64()
        ),
        "keep-alive traffic near the ideal of one renewal per registration per TTL/3; every registration present at the end",
        &["measure", "value"],
    );
    let expected = n as f64 / (TTL.as_secs_f64() / 3.0);
    let rate = match (before, after) {
        (Some(b), Some(a)) => format!("{:.0}/s (ideal {expected:.0}/s)", (a - b) / elapsed),
        _ => "n/a (etcd did not report etcd_debugging_lease_renewed_total)".to_owned(),
    };
    section.row(vec!["keep-alive requests reaching etcd".into(), rate]);
    section.row(vec![
        "renewals answered, all clients".into(),
        format!(
            "{:.0}/s",
            renewals as f64 / (elapsed + registering.as_secs_f64()).max(1.0)
        ),
    ]);
    section.row(vec![
        "registrations present at the end".into(),
        format!("{present} of {n}"),
    ]);
    section.row(vec![
        "re-registrations (lease lost)".into(),
        reregistrations.to_string(),
    ]);
    section.row(vec![
        "time to register all, one after another".into(),
        format!("{:.1} s", registering.as_secs_f64()),
    ]);
    section.note(format!(
        "Lease TTL {} s; each registration has its own etcd connection and lease.",
        TTL.as_secs()
    ));
    Ok(section)
}

/// How many lease renewals etcd has processed, from its /metrics.
async fn keepalives_received(addr: std::net::SocketAddr) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with("etcd_debugging_lease_renewed_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}
