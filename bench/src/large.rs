//! Scenario 4: services with many instances on real etcd. For each size: how long a new client
//! takes to sync, what one change costs the client, and what each instance costs it in memory.
//!
//! A change's cost is measured side by side with etcd's own: a raw etcd watch on the same
//! prefix, in the same process, sees every change the client sees, so "client" is the time
//! from etcd's watch event to the change being applied in the client's instance set, and the
//! sizes show whether it grows with the service (it must not: O(changed), not O(N)). A second
//! client, balancing by consistent hash, shows the same for the one policy that keeps a
//! structure over every instance (its hash ring).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client as Etcd, PutOptions, Txn, TxnOp, WatchOptions};
use futures_util::StreamExt;
use jovian::client::{ClientOptions, HashKey, Policy};
use jovian::{ClientBuilder, ServiceChannel, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;

use crate::Sizes;
use crate::alloc::live_bytes;
use crate::report::{Section, ms, quantile};

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let etcd = EtcdCluster::single().await;
    let pinned = Pinned::etcd_apart(etcd.pid(0));
    let mut client = etcd.client().await;
    let lease = client.lease_grant(3600, None).await?.id();
    let mut section = Section::new(
        "4. Large services",
        "one change applied ≤ 1 ms median, ≤ 2 ms p99, flat from 100 to 50,000 instances; \
         initial sync of 50,000 ≤ 2 s; ≤ 1 KiB of client memory per instance",
        &[
            "instances",
            "sync",
            "change: etcd → client (median / p99)",
            "put → applied (median / p99)",
            "put → etcd watch event (median)",
            "change: etcd → consistent-hash client (median / p99)",
            "client memory / instance",
        ],
    );
    let mut written = 0;
    for &n in &sizes.large_sizes {
        let service = format!("large{n}");
        write_instances(&client, lease, &service, written, n).await?;
        written += n;
        let row = measure(&etcd, &mut client, lease, &service, n, sizes.large_changes).await?;
        section.row(row);
    }
    section.note(
        "Each change is one registration put or deleted on etcd; the client is an EtcdRegistry \
         watch feeding a ServiceChannel. \"etcd → client\" is the time from a raw etcd watch in \
         the same process receiving the event to the client's instance set holding it: the \
         client's own cost. Memory is what the process's counting allocator holds after the \
         client is built minus before, per instance: the watcher's view, the published snapshot \
         and the balancer's instance set together.",
    );
    section.note(&pinned.note);
    Ok(section)
}

/// Registers instances `offset..offset + n` of `service` under `lease` as fast as etcd takes
/// them: transactions of 128 puts (etcd's default limit of operations per transaction), 8 in
/// flight. One put per request is bounded by etcd's proposals per second, not by the client.
pub(crate) async fn write_instances(
    client: &Etcd,
    lease: i64,
    service: &str,
    offset: usize,
    n: usize,
) -> anyhow::Result<()> {
    let batches: Vec<Txn> = (offset..offset + n)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(|chunk| {
            let puts: Vec<TxnOp> = chunk
                .iter()
                .map(|&i| {
                    let (key, value) = entry(service, i);
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))
                })
                .collect();
            Txn::new().and_then(puts)
        })
        .collect();
    let mut writes = futures_util::stream::iter(batches.into_iter().map(|txn| {
        let mut client = client.clone();
        async move { client.txn(txn).await }
    }))
    .buffer_unordered(8);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

/// etcd on the machine's last core and this process on the others, while the scenario runs.
/// On two shared cores an etcd busy with each put (2.5–13 ms from put to watch event at
/// 10,000+ entries) now and then holds the client's watcher off the CPU for a time slice, and
/// a change's p99 then measures the scheduler: 2.4–5 ms at 10,000 and 50,000 unpinned,
/// 0.95–1.24 ms pinned (BENCHMARKS.md). Pins with util-linux's `taskset`; without it, or with one
/// core, nothing is pinned and the note says so.
struct Pinned {
    all_cores: Option<String>,
    note: String,
}

impl Pinned {
    fn etcd_apart(etcd: Option<u32>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let unpinned = |why: &str| Self {
            all_cores: None,
            note: format!("Not pinned ({why}): etcd and the client shared every core."),
        };
        let Some(etcd) = etcd.filter(|_| cores >= 2) else {
            return unpinned("one core, or no etcd process id");
        };
        let (last, rest, all) = (
            (cores - 1).to_string(),
            match cores {
                2 => "0".to_owned(),
                _ => format!("0-{}", cores - 2),
            },
            format!("0-{}", cores - 1),
        );
        if !(taskset(&last, etcd) && taskset(&rest, std::process::id())) {
            return unpinned("taskset failed or is missing");
        }
        Self {
            all_cores: Some(all),
            note: format!("etcd ran on core {last} and this process on cores {rest} (taskset)."),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(all) = &self.all_cores {
            taskset(all, std::process::id());
        }
    }
}

/// Sets the CPU affinity of every thread of process `pid` to `cores`; whether it worked.
fn taskset(cores: &str, pid: u32) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The key and value of instance `i` of `service`: a distinct fake address per instance.
pub(crate) fn entry(service: &str, i: usize) -> (String, String) {
    let info = ServiceInfo::new(
        service,
        format!(
            "10.{}.{}.{}:{}",
            (i / 65536) % 256,
            (i / 256) % 256,
            i % 256,
            1000 + i / 16_777_216
        ),
    );
    (format!("/jovian/{service}/providers/{}", info.uri()), info.encode())
}

async fn measure(
    etcd: &EtcdCluster,
    client: &mut Etcd,
    lease: i64,
    service: &str,
    n: usize,
    changes: usize,
) -> anyhow::Result<Vec<String>> {
    let registry = Arc::new(EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?);
    let before = live_bytes();
    let started = Instant::now();
    let channel = ClientBuilder::new(Arc::clone(&registry)).build(service).await?;
    let sync = started.elapsed();
    anyhow::ensure!(
        channel.instance_count() == n,
        "synced {} of {n}",
        channel.instance_count()
    );
    let per_instance = (live_bytes() - before) as f64 / n as f64;
    let hashing = ClientOptions::default().policy(Policy::ConsistentHash(HashKey::default()));
    let hashed = ClientBuilder::new(registry).options(hashing).build(service).await?;

    let events = RawWatch::start(client, service).await?;
    let (mut client_part, mut end_to_end, mut etcd_part) = (Vec::new(), Vec::new(), Vec::new());
    let mut hashed_part = Vec::new();
    for change in 0..changes {
        let (key, value) = entry(service, 200_000_000 + change);
        for expected in [n + 1, n] {
            let put_at = Instant::now();
            match expected > n {
                true => {
                    client
                        .put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease)))
                        .await?;
                }
                false => {
                    client.delete(key.as_str(), None).await?;
                }
            }
            let applied_at = applied(&channel, expected)?;
            let hashed_at = applied(&hashed, expected)?;
            let event_at = events.wait_event(Duration::from_secs(10)).await?;
            hashed_part.push(hashed_at.saturating_duration_since(event_at));
            end_to_end.push(applied_at - put_at);
            etcd_part.push(event_at.saturating_duration_since(put_at));
            client_part.push(applied_at.saturating_duration_since(event_at));
        }
    }
    drop((channel, hashed));
    let pair = |s: &[Duration]| format!("{} / {}", ms(quantile(s, 0.5)), ms(quantile(s, 0.99)));
    Ok(vec![
        n.to_string(),
        ms(Some(sync)),
        pair(&client_part),
        pair(&end_to_end),
        ms(quantile(&etcd_part, 0.5)),
        pair(&hashed_part),
        format!("{per_instance:.0} B"),
    ])
}

/// Waits (polling every 20 µs, off the runtime) until `channel` holds `expected` instances;
/// returns when it did. Not a busy spin: on two cores a spinning thread takes one from etcd
/// and the watcher it measures (it added 1–2 ms to the p99 at 10,000 instances).
fn applied(channel: &ServiceChannel, expected: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::task::block_in_place(|| {
        while channel.instance_count() != expected {
            anyhow::ensure!(Instant::now() < deadline, "the change did not arrive within 10 s");
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(Instant::now())
    })
}

/// A raw etcd watch on a service's prefix that notes when each event arrives; it asks for
/// previous values as the registry's watch does, so etcd does the same work for both.
struct RawWatch {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawWatch {
    async fn start(client: &Etcd, service: &str) -> anyhow::Result<Self> {
        let prefix = format!("/jovian/{service}/");
        let (requests, mut stream) = client
            .watch_client()
            .watch(prefix, Some(WatchOptions::new().with_prefix().with_prev_key()))
            .await?
            .split();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&arrivals);
        let task = tokio::spawn(async move {
            let _requests = requests;
            while let Ok(Some(response)) = stream.message().await {
                let now = Instant::now();
                noted.lock().unwrap().extend(response.events().iter().map(|_| now));
            }
        });
        Ok(Self { arrivals, task })
    }

    /// The arrival of the oldest event not yet taken.
    async fn wait_event(&self, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = {
                let mut arrivals = self.arrivals.lock().unwrap();
                (!arrivals.is_empty()).then(|| arrivals.remove(0))
            } {
                return Ok(at);
            }
            anyhow::ensure!(Instant::now() < deadline, "etcd's watch saw no event within {limit:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for RawWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
