//! Scenario 5: a burst of registrations into a service a client watches, while the client
//! calls another service. Everything a burst costs the client shows up here: how soon the new
//! instances are routable, whether its runtime stalls (a timer's lateness), and whether its
//! calls keep flowing, as a ratio against the same burst and load with the client not watching
//! the bursting service (etcd and the machine do the same work in both variants).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client as Etcd, DeleteOptions, PutOptions};
use jovian::{ClientBuilder, Registry};
use jovian_examples::GreeterClient;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;

use crate::Sizes;
use crate::closed_loop::Client;
use crate::large::entry;
use crate::report::{Section, median_f64, ms, ratio};
use crate::servers::greeter;

const CALLERS: usize = 16;
const VARIANTS: [&str; 2] = ["client not watching the burst", "client watching the burst"];

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let etcd = EtcdCluster::single().await;
    let writer = etcd.client().await;
    let mut servers = Vec::new();
    for _ in 0..3 {
        let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?);
        servers.push(greeter("burst-greeter", Some(registry)).await?);
    }
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?;
    let builder = ClientBuilder::new(registry);
    let calls = Client::Jovian(GreeterClient::new(builder.build("burst-greeter").await?));
    calls.warm_up(3).await?;

    let mut outcomes: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..sizes.reps {
        for offset in 0..VARIANTS.len() {
            let variant = (rep + offset) % VARIANTS.len();
            let service = format!("burst-{rep}-{variant}");
            let watching = match variant {
                1 => Some(builder.build(&service).await?),
                _ => None,
            };
            let outcome = burst(&writer, &service, sizes.burst, &calls, watching.as_ref()).await?;
            outcomes[variant].push(outcome);
            writer
                .clone()
                .delete(format!("/jovian/{service}/"), Some(DeleteOptions::new().with_prefix()))
                .await?;
        }
    }

    let mut section = Section::new(
        &format!("5. A burst of {} registrations", sizes.burst),
        "all routable ≤ 1 s after etcd's last write; the client's runtime never stalls > 20 ms; \
         its calls keep ≥ 80% of their rate",
        &[
            "variant",
            "burst written in",
            "routable after the last write (median / worst)",
            "calls/s during the burst (median)",
            "vs not watching",
            "worst timer lag",
        ],
    );
    let baseline = median_f64(&outcomes[0].iter().map(|o| o.rate).collect::<Vec<_>>());
    for (variant, name) in VARIANTS.iter().enumerate() {
        let of = |f: fn(&Outcome) -> f64| outcomes[variant].iter().map(f).collect::<Vec<_>>();
        let routable = of(|o| o.routable.map_or(f64::NAN, |d| d.as_secs_f64()));
        let rate = median_f64(&of(|o| o.rate));
        let secs = |s: f64| ms(s.is_finite().then(|| Duration::from_secs_f64(s)));
        let worst = |s: &[f64]| s.iter().copied().fold(f64::NAN, f64::max);
        section.row(vec![
            (*name).to_owned(),
            secs(median_f64(&of(|o| o.written.as_secs_f64()))),
            match variant {
                0 => "—".to_owned(),
                _ => format!("{} / {}", secs(median_f64(&routable)), secs(worst(&routable))),
            },
            format!("{rate:.0}"),
            ratio(rate, baseline),
            secs(worst(&of(|o| o.worst_lag.as_secs_f64()))),
        ]);
    }
    section.note(format!(
        "Registrations are written with 128 puts in flight from the same process; {CALLERS} callers \
         call a 3-instance greeter through the same EtcdRegistry meanwhile. Calls/s counts calls \
         finished from the first write until the burst is routable (or written, when not watched). \
         Timer lag is how late a 10 ms sleep on the client's runtime wakes, at worst."
    ));
    for server in servers {
        server.stop().await?;
    }
    Ok(section)
}

struct Outcome {
    written: Duration,
    routable: Option<Duration>,
    rate: f64,
    worst_lag: Duration,
}

async fn burst(
    writer: &Etcd,
    service: &str,
    n: usize,
    calls: &Client,
    watching: Option<&jovian::ServiceChannel>,
) -> anyhow::Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (mut client, stop, done) = (calls.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if client.hello().await.is_some() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let probe = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                worst = worst.max(asked.elapsed().saturating_sub(Duration::from_millis(10)));
            }
            worst
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let lease = writer.clone().lease_grant(600, None).await?.id();
    let (started, calls_before) = (Instant::now(), done.load(Ordering::Relaxed));
    let mut puts = futures_util::stream::FuturesUnordered::new();
    for i in 0..n {
        let (key, value) = entry(service, i);
        let mut writer = writer.clone();
        puts.push(async move { writer.put(key, value, Some(PutOptions::new().with_lease(lease))).await });
        if puts.len() >= 128 {
            futures_util::StreamExt::next(&mut puts).await.transpose()?;
        }
    }
    while let Some(put) = futures_util::StreamExt::next(&mut puts).await {
        put?;
    }
    let written = started.elapsed();
    let routable = match watching {
        Some(channel) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while channel.instance_count() < n {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} of {n} routable after 60 s",
                    channel.instance_count()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Some(started.elapsed().saturating_sub(written))
        }
        None => None,
    };
    let rate = (done.load(Ordering::Relaxed) - calls_before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    let worst_lag = probe.await?;
    writer.clone().lease_revoke(lease).await?;
    Ok(Outcome {
        written,
        routable,
        rate,
        worst_lag,
    })
}
