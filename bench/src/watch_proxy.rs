//! Scenario 8: many watching clients of one service through etcd's gRPC proxy
//! (`etcd grpc-proxy start`), side by side with the same clients directly on etcd.
//!
//! Each client is its own `EtcdRegistry` (its own connection) watching the service, all in this
//! process. For each variant: the watchers and watch streams etcd itself holds for them (its
//! `/metrics`: `etcd_debugging_mvcc_watcher_total`, `etcd_debugging_mvcc_watch_stream_total`,
//! less what it held before they connected), the time from one change written on etcd to each
//! client's instance set holding it, and the CPU and memory etcd, the proxy and the clients'
//! process use while the clients sit watching (each watch asks for progress once a second) and
//! while the changes flow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client as Etcd, PutOptions};
use futures_util::StreamExt;
use jovian::{Discovery, InstancesWatch};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::{EtcdCluster, GrpcProxy, metric};
use tokio::sync::mpsc;

use crate::Sizes;
use crate::large::entry;
use crate::report::{Section, median_f64, ms, quantile};

const SERVICE: &str = "fanout";
/// Instances the service has throughout; the changes add and remove one more.
const INSTANCES: usize = 3;
/// Clients connecting at once.
const CONNECTING: usize = 50;
/// Reads of etcd's /metrics (5 s each at most) before a gauge is given up on.
const METRICS_TRIES: usize = 6;
/// How long every client may take to see a change.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Direct,
    Proxy,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Direct => "directly on etcd",
            Variant::Proxy => "through one grpc-proxy",
        }
    }
}

/// What one run of one variant measured.
#[derive(Default)]
struct Run {
    watchers: f64,
    streams: f64,
    connect: Duration,
    /// Change → client, every client of every change.
    arrivals: Vec<Duration>,
    /// Change → the last client, per change.
    all: Vec<Duration>,
    etcd_idle_cpu: f64,
    etcd_change_cpu: f64,
    etcd_rss: u64,
    proxy_idle_cpu: f64,
    proxy_rss: u64,
    clients_idle_cpu: f64,
    coalescing: f64,
}

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let n = sizes.proxy_watchers;
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    let mut client = etcd.client().await;
    let lease = client.lease_grant(3600, None).await?.id();
    crate::large::write_instances(&client, lease, SERVICE, 0, INSTANCES).await?;
    let mut section = Section::new(
        &format!("8. {n} watchers through etcd's gRPC proxy"),
        &format!(
            "registration, leases and watches work unchanged through the proxy \
             (tests/tests/etcd_proxy.rs); {n} watching clients through one proxy cost etcd one watch"
        ),
        &[
            "variant",
            "etcd watchers / watch streams for the clients",
            "change → a client (median / p99 / max)",
            "change → all clients (median / worst)",
            "etcd CPU idle / during changes",
            "etcd RSS",
            "proxy CPU idle / RSS",
            "clients' process CPU idle",
            "all connected and listed in",
        ],
    );
    let reps = sizes.reps.min(3);
    let mut runs: Vec<(Variant, Run)> = Vec::new();
    for rep in 0..reps {
        let mut order = [Variant::Direct, Variant::Proxy];
        order.rotate_left(rep % 2);
        for variant in order {
            let endpoint = match variant {
                Variant::Direct => etcd.endpoint(0),
                Variant::Proxy => proxy.endpoint(),
            };
            let measured = measure(&etcd, &proxy, &mut client, lease, &endpoint, n, &sizes).await?;
            runs.push((variant, measured));
        }
    }
    for variant in [Variant::Direct, Variant::Proxy] {
        let runs: Vec<&Run> = runs.iter().filter(|(v, _)| *v == variant).map(|(_, r)| r).collect();
        let median = |f: &dyn Fn(&Run) -> f64| median_f64(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let arrivals: Vec<Duration> = runs.iter().flat_map(|r| r.arrivals.iter().copied()).collect();
        let all: Vec<Duration> = runs.iter().flat_map(|r| r.all.iter().copied()).collect();
        let worst_watchers = runs.iter().map(|r| r.watchers).fold(0.0, f64::max);
        let worst_streams = runs.iter().map(|r| r.streams).fold(0.0, f64::max);
        section.row(vec![
            variant.label().to_owned(),
            format!("{worst_watchers:.0} / {worst_streams:.0}"),
            format!(
                "{} / {} / {}",
                ms(quantile(&arrivals, 0.5)),
                ms(quantile(&arrivals, 0.99)),
                ms(quantile(&arrivals, 1.0))
            ),
            format!("{} / {}", ms(quantile(&all, 0.5)), ms(quantile(&all, 1.0))),
            format!(
                "{:.1}% / {:.1}%",
                median(&|r| r.etcd_idle_cpu),
                median(&|r| r.etcd_change_cpu)
            ),
            mib(median(&|r| r.etcd_rss as f64)),
            match variant {
                Variant::Direct => "—".to_owned(),
                Variant::Proxy => format!(
                    "{:.1}% / {}",
                    median(&|r| r.proxy_idle_cpu),
                    mib(median(&|r| r.proxy_rss as f64))
                ),
            },
            format!("{:.1}%", median(&|r| r.clients_idle_cpu)),
            ms(Some(Duration::from_secs_f64(median(&|r| r.connect.as_secs_f64())))),
        ]);
    }
    let coalesced = runs
        .iter()
        .filter(|(v, _)| *v == Variant::Proxy)
        .map(|(_, r)| r.coalescing)
        .fold(0.0, f64::max);
    section.note(format!(
        "{reps} runs of each variant, interleaved; latencies pooled over every client of \
         {} changes per run (an instance added or removed on etcd directly), other columns the \
         median run. etcd (stock flags) and the proxy run on the same two cores as the {n} \
         clients, which are {n} EtcdRegistry connections in one process, each watching the \
         service. Watchers are etcd's own gauges less what it held before the clients \
         connected (the proxy's own watches included in that baseline); the worst run is shown. \
         CPU is the share of one core over {:?} of watching with no change, then over the \
         changes; RSS at the end of the idle window. The proxy's \
         etcd_grpc_proxy_watchers_coalescing_total (watchers sharing another's etcd watch) \
         was {coalesced:.0} at most while the clients watched.",
        sizes.proxy_changes, sizes.proxy_idle
    ));
    drop(proxy);
    Ok(section)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    etcd: &EtcdCluster,
    proxy: &GrpcProxy,
    client: &mut Etcd,
    lease: i64,
    endpoint: &str,
    n: usize,
    sizes: &Sizes,
) -> anyhow::Result<Run> {
    let etcd_metrics = etcd.metrics_addr(0);
    // A loaded etcd may take a while to serve /metrics: a few tries before giving up.
    let gauge = |name: &'static str| async move {
        for _ in 0..METRICS_TRIES {
            if let Some(value) = metric(etcd_metrics, name).await {
                return Ok(value);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (status, body) = jovian_tests::http_get(etcd_metrics, "/metrics").await;
        Err(anyhow::anyhow!(
            "etcd's /metrics did not answer with {name} in {METRICS_TRIES} tries (last: HTTP {status}, {} bytes)",
            body.len()
        ))
    };
    let watchers_before = gauge("etcd_debugging_mvcc_watcher_total").await?;
    let streams_before = gauge("etcd_debugging_mvcc_watch_stream_total").await?;

    let started = Instant::now();
    let clients: Vec<(EtcdRegistry, InstancesWatch)> = futures_util::stream::iter(0..n)
        .map(|_| async {
            let config = EtcdConfig::new([endpoint.to_owned()]).request_timeout(Duration::from_secs(10));
            let registry = EtcdRegistry::connect(config).await?;
            let watch = registry.watch(SERVICE).await?;
            anyhow::Ok((registry, watch))
        })
        .buffer_unordered(CONNECTING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let connect = started.elapsed();
    for (_, watch) in &clients {
        anyhow::ensure!(
            watch.peek().len() == INSTANCES,
            "a client listed {} instances",
            watch.peek().len()
        );
    }

    // Each client's watch is created in the background after its list: wait for etcd to hold
    // them all (directly), or for the count to stop moving (behind the proxy).
    let mut watchers = 0.0;
    let mut streams = 0.0;
    let settle_until = Instant::now() + Duration::from_secs(30);
    let mut last = f64::NAN;
    while Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        watchers = gauge("etcd_debugging_mvcc_watcher_total").await? - watchers_before;
        streams = gauge("etcd_debugging_mvcc_watch_stream_total").await? - streams_before;
        if watchers >= n as f64 || watchers == last {
            break;
        }
        last = watchers;
    }

    // Idle: everyone watching, nothing changing.
    let pids = [etcd.pid(0), proxy.pid(), Some(std::process::id())];
    let idle_from = cpu_seconds(&pids);
    let idle_started = Instant::now();
    tokio::time::sleep(sizes.proxy_idle).await;
    let idle_wall = idle_started.elapsed().as_secs_f64();
    let idle_to = cpu_seconds(&pids);
    let share = |i: usize, from: &[f64; 3], to: &[f64; 3], wall: f64| 100.0 * (to[i] - from[i]) / wall;
    let (etcd_idle_cpu, proxy_idle_cpu, clients_idle_cpu) = (
        share(0, &idle_from, &idle_to, idle_wall),
        share(1, &idle_from, &idle_to, idle_wall),
        share(2, &idle_from, &idle_to, idle_wall),
    );
    let etcd_rss = etcd.pid(0).map_or(0, rss_bytes);
    let proxy_rss = proxy.pid().map_or(0, rss_bytes);
    let coalescing = metric(proxy.addr(), "etcd_grpc_proxy_watchers_coalescing_total")
        .await
        .unwrap_or(0.0);

    // Changes: each client notes when its instance set holds each change.
    let (key, value) = entry(SERVICE, 900_000);
    let uri = key.split_once("/providers/").map_or("", |(_, uri)| uri).to_owned();
    let changes = sizes.proxy_changes;
    let (arrived, mut arrivals_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let uri = Arc::<str>::from(uri);
    let mut followers = Vec::with_capacity(n);
    let mut registries = Vec::with_capacity(n);
    for (registry, mut watch) in clients {
        registries.push(registry);
        let (arrived, uri) = (arrived.clone(), Arc::clone(&uri));
        followers.push(tokio::spawn(async move {
            for change in 0..changes {
                let present = change % 2 == 0;
                if watch.wait_for(|i| i.contains(&uri) == present).await.is_err() {
                    return;
                }
                let _ = arrived.send((change, Instant::now()));
            }
        }));
    }
    drop(arrived);
    let change_from = cpu_seconds(&pids);
    let change_started = Instant::now();
    let (mut arrivals, mut all) = (Vec::with_capacity(n * changes), Vec::with_capacity(changes));
    for change in 0..changes {
        let written = Instant::now();
        match change % 2 == 0 {
            true => {
                client
                    .put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease)))
                    .await?;
            }
            false => {
                client.delete(key.as_str(), None).await?;
            }
        }
        let mut last = written;
        for _ in 0..n {
            let (seen, at) = tokio::time::timeout(PROPAGATION_LIMIT, arrivals_rx.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("change {change} did not reach every client within {PROPAGATION_LIMIT:?}")
                })?
                .ok_or_else(|| anyhow::anyhow!("a client's watch ended"))?;
            anyhow::ensure!(seen == change, "a client saw change {seen} while {change} was expected");
            arrivals.push(at - written);
            last = last.max(at);
        }
        all.push(last - written);
        // Let the dust settle, so each change is measured alone.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let change_wall = change_started.elapsed().as_secs_f64();
    let change_to = cpu_seconds(&pids);
    let etcd_change_cpu = share(0, &change_from, &change_to, change_wall);
    for follower in followers {
        follower.abort();
    }
    // An odd number of changes leaves the extra instance behind; the next run lists without it.
    client.delete(key.as_str(), None).await?;
    drop(registries);
    // Let etcd see the clients go before the next run takes its baseline.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until && gauge("etcd_debugging_mvcc_watcher_total").await? > watchers_before {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Run {
        watchers,
        streams,
        connect,
        arrivals,
        all,
        etcd_idle_cpu,
        etcd_change_cpu,
        etcd_rss,
        proxy_idle_cpu,
        proxy_rss,
        clients_idle_cpu,
        coalescing,
    })
}

/// CPU seconds (user + system) each process has used so far; 0 for one that is not running.
fn cpu_seconds(pids: &[Option<u32>; 3]) -> [f64; 3] {
    pids.map(|pid| pid.and_then(process_cpu_seconds).unwrap_or(0.0))
}

fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15, counted from 1 with the pid and name as 1 and 2.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / CLOCK_TICKS)
}

/// Linux's USER_HZ, what /proc counts CPU time in.
const CLOCK_TICKS: f64 = 100.0;

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
}
