//! Scenario 2: what the client costs per call, against a direct tonic channel to one instance
//! and tonic's balance channel over the same three: call rates with the servers in this
//! process, and allocations per call with the servers in their own processes, so the counting
//! allocator counts the client alone.

use std::sync::Arc;

use jovian::{ClientBuilder, Registrar, Registry, ServiceInfo};
use jovian_examples::GreeterClient;
use jovian_registry_memory::MemoryStore;
use tokio::process::Command;
use tonic::transport::{Channel, Endpoint};

use crate::Sizes;
use crate::alloc::{allocated_bytes, allocations};
use crate::closed_loop::{Client, drive, interleaved};
use crate::cpu::process_cpu;
use crate::process::Process;
use crate::report::{Section, median_f64, ms, ratio};
use crate::servers::greeter;

const VARIANTS: [&str; 3] = [
    "direct tonic Channel (1 instance)",
    "tonic balance_channel (3)",
    "jovian ServiceChannel (3)",
];

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Vec<Section>> {
    let rates = rates(&sizes).await?;
    let allocations = allocations_per_call(&sizes).await?;
    Ok(vec![rates, allocations])
}

/// Endpoints to `addresses`, as the bench's tonic variants dial them.
fn endpoints(addresses: &[String]) -> anyhow::Result<Vec<Endpoint>> {
    Ok(addresses
        .iter()
        .map(|a| Endpoint::from_shared(format!("http://{a}")).map(|e| e.tcp_nodelay(true)))
        .collect::<Result<_, _>>()?)
}

/// The three variants, in `VARIANTS` order, each connected to every instance it calls: a
/// direct tonic channel to the first address, tonic's balance_channel over all of them, and a
/// jovian channel to `service` in `store`.
async fn variants(store: &MemoryStore, service: &str, addresses: &[String]) -> anyhow::Result<[Client; 3]> {
    let endpoints = endpoints(addresses)?;
    let direct = endpoints[0].clone().connect().await?;
    let balanced = Channel::balance_list(endpoints.into_iter());
    let jovian = ClientBuilder::new(store.registry()).build(service).await?;
    let clients = [
        Client::Tonic(GreeterClient::new(direct)),
        Client::Tonic(GreeterClient::new(balanced)),
        Client::Jovian(GreeterClient::new(jovian)),
    ];
    for (client, instances) in clients.iter().zip([1, 3, 3]) {
        client.warm_up(instances).await?;
    }
    Ok(clients)
}

async fn rates(sizes: &Sizes) -> anyhow::Result<Section> {
    let store = MemoryStore::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let registry: Arc<dyn Registry> = Arc::new(store.registry());
        servers.push(greeter("overhead", Some(registry)).await?);
    }
    let addresses: Vec<String> = servers.iter().map(|s| s.local_addrs()[0].to_string()).collect();
    let clients = variants(&store, "overhead", &addresses).await?;

    let mut section = Section::new(
        "2. Client overhead",
        "the jovian channel at least 1.0x a direct tonic channel and at least 1.1x tonic's balance_channel",
        &[
            "in flight",
            "variant",
            "calls/s (median)",
            "vs direct",
            "vs balance_channel",
            "p50",
            "p99",
            "failed",
        ],
    );
    for in_flight in [1usize, 16, 64] {
        let samples = interleaved(sizes.reps, clients.len(), async |variant| {
            Ok(drive(&clients[variant], in_flight, sizes.call_duration).await)
        })
        .await?;
        let baseline = samples[0].rate(sizes.call_duration);
        let balanced = samples[1].rate(sizes.call_duration);
        for (name, samples) in VARIANTS.iter().zip(&samples) {
            let rate = samples.rate(sizes.call_duration);
            section.row(vec![
                in_flight.to_string(),
                (*name).to_owned(),
                format!("{rate:.0}"),
                ratio(rate, baseline),
                ratio(rate, balanced),
                ms(samples.p50()),
                ms(samples.p99()),
                samples.failed().to_string(),
            ]);
        }
    }
    section.note(format!(
        "Client and servers share the machine's cores; each cell is {} s of calls per repetition; latencies are \
         medians over repetitions.",
        sizes.call_duration.as_secs_f64()
    ));
    Ok(section)
}

/// Allocations per call of each variant, counted by the bench's allocator around a run of
/// calls. The three greeters are child processes (this program's `--serve-greeter -`), so
/// what is counted is the client's work alone: the generated client, the channel, hyper and
/// h2 on the client's side, the connection tasks.
async fn allocations_per_call(sizes: &Sizes) -> anyhow::Result<Section> {
    const SERVICE: &str = "overhead-alloc";
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--serve-greeter", "-", "--service", SERVICE]);
        servers.push(Process::start(command, "serving ").await?);
    }
    let addresses: Vec<String> = servers
        .iter()
        .map(|s| s.first_line.trim_start_matches("serving ").trim().to_owned())
        .collect();
    let store = MemoryStore::new();
    let registrar = store.registry();
    for address in &addresses {
        registrar.register(&ServiceInfo::new(SERVICE, address.as_str())).await?;
    }
    let clients = variants(&store, SERVICE, &addresses).await?;
    let mut section = Section::new(
        "2b. Allocations per call",
        "the jovian client at most 4 allocations per call more than a direct tonic channel",
        &[
            "in flight",
            "variant",
            "allocations / call",
            "vs direct",
            "bytes / call",
            "client CPU / call",
            "vs direct",
        ],
    );
    let calls = sizes.counted_calls;
    for in_flight in [1usize, 16] {
        let mut counted = vec![Vec::new(); clients.len()];
        for rep in 0..sizes.reps {
            for offset in 0..clients.len() {
                let variant = (rep + offset) % clients.len();
                counted[variant].push(count(&clients[variant], in_flight, calls).await?);
            }
        }
        let median = |variant: usize, pick: fn(&Counted) -> f64| {
            median_f64(&counted[variant].iter().map(pick).collect::<Vec<_>>())
        };
        let baseline = median(0, |c| c.allocations);
        let cpu_baseline = median(0, |c| c.cpu_us);
        for (variant, name) in VARIANTS.iter().enumerate() {
            let per_call = median(variant, |c| c.allocations);
            let cpu = median(variant, |c| c.cpu_us);
            section.row(vec![
                in_flight.to_string(),
                (*name).to_owned(),
                format!("{per_call:.1}"),
                format!("{:+.1}", per_call - baseline),
                format!("{:.0}", median(variant, |c| c.bytes)),
                format!("{cpu:.1} µs"),
                ratio(cpu, cpu_baseline),
            ]);
        }
    }
    section.note(format!(
        "Counted by the bench's global allocator over {calls} SayHello calls per repetition (medians of {} \
         repetitions, variants interleaved), with the greeters in their own processes: the numbers are the \
         client's alone, the generated GreeterClient's encoding and decoding included (the same for every \
         variant). Client CPU is the CPU time of every thread of this process (/proc/self/task/*/schedstat) \
         per call: with the servers elsewhere, it is what the client costs the machine, less blurred by the \
         machine's other load than a call rate.",
        sizes.reps
    ));
    Ok(section)
}

/// What `count` counted, per call.
#[derive(Clone, Copy)]
struct Counted {
    allocations: f64,
    bytes: f64,
    cpu_us: f64,
}

/// Allocations, bytes allocated and CPU time per call over `calls` calls made `in_flight` at
/// a time.
async fn count(client: &Client, in_flight: usize, calls: usize) -> anyhow::Result<Counted> {
    let per_caller = calls.div_ceil(in_flight);
    let (allocations_before, bytes_before, cpu_before) = (allocations(), allocated_bytes(), process_cpu());
    let callers: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for _ in 0..per_caller {
                    failed += usize::from(client.hello().await.is_none());
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for caller in callers {
        failed += caller.await?;
    }
    let made = (per_caller * in_flight) as f64;
    let counted = Counted {
        allocations: (allocations() - allocations_before) as f64 / made,
        bytes: (allocated_bytes() - bytes_before) as f64 / made,
        cpu_us: (process_cpu() - cpu_before).as_secs_f64() * 1e6 / made,
    };
    anyhow::ensure!(failed == 0, "{failed} calls failed while counting allocations");
    Ok(counted)
}

/// The `--drive-client` mode, for profiling one variant alone (`perf record`, `valgrind
/// --tool=callgrind`): `calls` calls `in_flight` at a time from `variant` (`direct`, `balance`
/// or `jovian`) to greeters already serving at `addresses`; prints the rate and the client's
/// CPU time per call.
pub(crate) async fn drive_client(
    variant: &str,
    addresses: &[String],
    in_flight: usize,
    calls: usize,
) -> anyhow::Result<()> {
    const SERVICE: &str = "overhead-profile";
    // Without addresses, three greeters in this process, as scenario 2's call rates have them.
    let mut servers = Vec::new();
    let mut addresses = addresses.to_vec();
    if addresses.is_empty() {
        for _ in 0..3 {
            let server = greeter(SERVICE, None).await?;
            addresses.push(server.local_addrs()[0].to_string());
            servers.push(server);
        }
    }
    let addresses = &addresses[..];
    let store = MemoryStore::new();
    let registrar = store.registry();
    for address in addresses {
        registrar.register(&ServiceInfo::new(SERVICE, address.as_str())).await?;
    }
    let endpoints = endpoints(addresses)?;
    let (client, instances) = match variant {
        "direct" => (
            Client::Tonic(GreeterClient::new(endpoints[0].clone().connect().await?)),
            1,
        ),
        "balance" => (
            Client::Tonic(GreeterClient::new(Channel::balance_list(endpoints.into_iter()))),
            addresses.len(),
        ),
        "jovian" => (
            Client::Jovian(GreeterClient::new(
                ClientBuilder::new(store.registry()).build(SERVICE).await?,
            )),
            addresses.len(),
        ),
        other => anyhow::bail!("no variant {other:?}: direct, balance or jovian"),
    };
    client.warm_up(instances).await?;
    let started = std::time::Instant::now();
    let counted = count(&client, in_flight, calls).await?;
    let elapsed = started.elapsed();
    println!(
        "{variant}: {calls} calls, {in_flight} in flight, {:.0} calls/s, {:.1} allocations, {:.1} µs CPU per call",
        calls as f64 / elapsed.as_secs_f64(),
        counted.allocations,
        counted.cpu_us
    );
    Ok(())
}
