//! Scenario 7: jovian against grpc-go, the stack it is measured against, and tonic's own
//! stack beside them. Three grpc-go Greeter servers and three jovian ones register in one
//! etcd; a grpc-go client (round_robin over etcd's resolver) and a jovian client each call both
//! sets, so the four client → servers pairings run side by side; three plain tonic servers
//! called through tonic's `balance_channel` (tonic has no registry: their addresses are given)
//! are the fifth. Each pairing runs closed loop at 1, 16 and 64 calls in flight (throughput),
//! then open loop at a steady rate every stack carries (latency without saturation: a faster
//! stack with a worse tail is not faster). The grpc-go side is today's release (the versions
//! measured are in the title). Skipped, with a note, where Go is absent.

use std::sync::Arc;

use jovian::{ClientBuilder, Registrar, ServiceInfo};
use jovian_examples::GreeterClient;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry, Layout};
use jovian_tests::etcd::EtcdCluster;

use crate::Sizes;
use crate::closed_loop::{Client, Sample, Samples, at_rate, drive, interleaved};
use crate::cpu::process_cpu;
use crate::failover::{server_process, tonic_server_process, wait_registered};
use crate::gopeer::{self, GoPeer, LoadClient, Missing};
use crate::process::Process;
use crate::report::{Section, ms, ratio};

/// The jovian service name and etcd naming target of each server set. grpc-go sends the
/// target as the `:authority`, where a `/` is a protocol error to hyper: hence the dots.
const GO_SERVICE: &str = "grpcgo-go";
const GO_TARGET: &str = "grpcgo.go";
const JOVIAN_SERVICE: &str = "grpcgo-jovian";
const JOVIAN_TARGET: &str = "grpcgo.jovian";
const SERVERS: usize = 3;
/// The open-loop rate: below what every stack carries at one call in flight on this machine.
const STEADY_RATE: u32 = 2_000;

/// The pairings, in report order; `compare` is the pairing with the other client on the same
/// servers.
const PAIRINGS: [(&str, Option<usize>); 5] = [
    ("grpc-go → grpc-go", None),
    ("jovian → jovian", Some(3)),
    ("jovian → grpc-go servers", Some(0)),
    ("grpc-go → jovian servers", None),
    ("tonic balance_channel → tonic", None),
];
/// Where the tonic stack is in `PAIRINGS`.
const TONIC: usize = 4;

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "7. grpc-go peer",
        "at 16 and 64 in flight, the jovian stack at least 1.2x the grpc-go stack, and the jovian client at least \
         1.1x the grpc-go client against the same servers",
        &[
            "in flight",
            "client → servers",
            "calls/s (median)",
            "vs grpc-go stack",
            "vs grpc-go client, same servers",
            "p50",
            "p99",
            "client CPU / call",
            "server CPU / call",
            "failed",
        ],
    );
    let GoPeer { binary, versions, .. } = match gopeer::build().await? {
        Ok(peer) => peer,
        Err(Missing(how)) => {
            section.note(format!("Skipped: the grpc-go peer (bench/go) is built with Go. {how}"));
            return Ok(section);
        }
    };
    section.title = format!("7. grpc-go peer ({versions})");

    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints().join(",");
    // Held to the end of the scenario: dropping a process kills it.
    let (mut go_servers, mut jovian_servers, mut tonic_servers) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SERVERS {
        go_servers.push(gopeer::server(&binary, &endpoints, GO_SERVICE, GO_TARGET).await?);
        jovian_servers.push(server_process(&etcd, JOVIAN_SERVICE).await?);
        tonic_servers.push(tonic_server_process().await?);
    }
    // The jovian servers register in jovian's layout; the bench registers them in etcd's
    // naming layout too, through the etcd registry's `etcd-naming` layout (the bytes
    // go.etcd.io/etcd/client/v3/naming/endpoints writes), for grpc-go's etcd resolver. The
    // grpc-go client calling them is the proof that stock grpc-go resolves what jovian writes.
    let naming =
        Arc::new(EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()).layout(Layout::etcd_naming())).await?);
    for server in &jovian_servers {
        let address = server.first_line.trim_start_matches("serving ");
        naming.register(&ServiceInfo::new(JOVIAN_TARGET, address)).await?;
    }
    wait_registered(&etcd, GO_SERVICE, SERVERS).await?;
    wait_registered(&etcd, JOVIAN_SERVICE, SERVERS).await?;

    let builder = ClientBuilder::new(EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await?);
    let jovian_to_jovian = Client::Jovian(GreeterClient::new(builder.build(JOVIAN_SERVICE).await?));
    // The jovian client finds the Go servers by what Go's naming package registered, as
    // stock grpc-go clients do: the proof that jovian reads what that package writes.
    let jovian_to_go = Client::Jovian(GreeterClient::new(
        ClientBuilder::new(Arc::clone(&naming)).build(GO_TARGET).await?,
    ));
    let tonic_endpoints = tonic_servers
        .iter()
        .map(|server| {
            tonic::transport::Endpoint::from_shared(format!(
                "http://{}",
                server.first_line.trim_start_matches("serving ")
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tonic_to_tonic = Client::Tonic(GreeterClient::new(tonic::transport::Channel::balance_list(
        tonic_endpoints.into_iter(),
    )));
    jovian_to_jovian.warm_up(SERVERS).await?;
    jovian_to_go.warm_up(SERVERS).await?;
    tonic_to_tonic.warm_up(SERVERS).await?;
    let mut go_to_go = LoadClient::start(&binary, &endpoints, GO_TARGET, SERVERS).await?;
    let mut go_to_jovian = LoadClient::start(&binary, &endpoints, JOVIAN_TARGET, SERVERS).await?;

    let duration = sizes.call_duration;
    let mut goals = Vec::new();
    for in_flight in [1usize, 16, 64] {
        let samples = interleaved(sizes.reps, PAIRINGS.len(), async |pairing| {
            let servers = match pairing {
                0 | 2 => &go_servers,
                1 | 3 => &jovian_servers,
                _ => &tonic_servers,
            };
            let before = servers_cpu(servers);
            let mut sample = match pairing {
                0 => go_to_go.drive(in_flight, duration).await?,
                1 => with_cpu(drive(&jovian_to_jovian, in_flight, duration)).await,
                2 => with_cpu(drive(&jovian_to_go, in_flight, duration)).await,
                3 => go_to_jovian.drive(in_flight, duration).await?,
                _ => with_cpu(drive(&tonic_to_tonic, in_flight, duration)).await,
            };
            sample.server_cpu = Some(servers_cpu(servers).saturating_sub(before));
            Ok(sample)
        })
        .await?;
        let rates: Vec<f64> = samples.iter().map(|s| s.rate(duration)).collect();
        for ((name, compare), (samples, rate)) in PAIRINGS.iter().zip(samples.iter().zip(&rates)) {
            section.row(row(
                in_flight,
                name,
                samples,
                *rate,
                rates[0],
                compare.map(|c| rates[c]),
            ));
        }
        if in_flight > 1 {
            goals.push(format!(
                "{in_flight} in flight: stack {} (goal 1.2x; {} tonic's), client on grpc-go servers {} and on jovian \
                 servers {} (goal 1.1x)",
                ratio(rates[1], rates[0]),
                ratio(rates[1], rates[TONIC]),
                ratio(rates[2], rates[0]),
                ratio(rates[1], rates[3]),
            ));
        }
    }
    let samples = interleaved(sizes.reps, PAIRINGS.len(), async |pairing| {
        Ok(match pairing {
            0 => go_to_go.at_rate(STEADY_RATE, duration).await?,
            1 => at_rate(&jovian_to_jovian, STEADY_RATE, duration).await,
            2 => at_rate(&jovian_to_go, STEADY_RATE, duration).await,
            3 => go_to_jovian.at_rate(STEADY_RATE, duration).await?,
            _ => at_rate(&tonic_to_tonic, STEADY_RATE, duration).await,
        })
    })
    .await?;
    let mut tails = Vec::new();
    for ((name, _), samples) in PAIRINGS.iter().zip(&samples) {
        section.row(vec![
            format!("{STEADY_RATE}/s"),
            (*name).to_owned(),
            format!("{:.0}", samples.rate(duration)),
            "-".to_owned(),
            "-".to_owned(),
            ms(samples.p50()),
            ms(samples.p99()),
            "-".to_owned(),
            "-".to_owned(),
            samples.failed().to_string(),
        ]);
        tails.push(samples.p99());
    }
    if let (Some(jovian), Some(go), Some(tonic)) = (tails[1], tails[0], tails[TONIC]) {
        goals.push(format!(
            "at {STEADY_RATE} calls/s the jovian stack's p99 is {} the grpc-go stack's and {} tonic's",
            ratio(jovian.as_secs_f64(), go.as_secs_f64()),
            ratio(jovian.as_secs_f64(), tonic.as_secs_f64()),
        ));
    }
    section.note(format!("Against the goals: {}.", goals.join("; ")));
    section.note(format!(
        "{SERVERS} servers of each kind, each its own process, registered in one etcd under a lease (the tonic \
         servers registered nowhere: tonic's balance_channel is given their addresses); the grpc-go \
         client is its own process (GOMAXPROCS defaults to the cores), the jovian client runs in this one. All share \
         the machine's cores with etcd. Each cell is {} s of calls per repetition; latencies are medians over \
         repetitions. The {STEADY_RATE}/s rows start calls at that steady rate whether or not earlier ones \
         finished (open loop), each call timed from when it was due. Client CPU / call is the CPU time of the client's process per call (every thread, from \
         /proc/<pid>/task/*/schedstat): the jovian client is this process, whose servers are processes of \
         their own. Server CPU / call is the CPU time of the three servers called, all together, per call: \
         what serving a call costs, which call rates on a machine that both clients, all six servers and etcd share \
         blur. The Go Greeter encodes its two one-string messages by hand (no generated code to build), \
         which if anything flatters grpc-go.",
        duration.as_secs_f64()
    ));
    Ok(section)
}

fn row(
    in_flight: usize,
    name: &str,
    samples: &Samples,
    rate: f64,
    stack: f64,
    same_servers: Option<f64>,
) -> Vec<String> {
    vec![
        in_flight.to_string(),
        name.to_owned(),
        format!("{rate:.0}"),
        ratio(rate, stack),
        same_servers.map_or_else(|| "-".to_owned(), |other| ratio(rate, other)),
        ms(samples.p50()),
        ms(samples.p99()),
        samples
            .cpu_per_call()
            .map_or_else(|| "n/a".to_owned(), |cpu| format!("{:.1} µs", cpu.as_secs_f64() * 1e6)),
        samples
            .server_cpu_per_call()
            .map_or_else(|| "n/a".to_owned(), |cpu| format!("{:.1} µs", cpu.as_secs_f64() * 1e6)),
        samples.failed().to_string(),
    ]
}

/// The CPU time the server processes `servers` have used so far, all together.
fn servers_cpu(servers: &[Process]) -> std::time::Duration {
    servers.iter().map(Process::cpu).sum()
}

/// A jovian sample with the CPU time this process (the jovian client: its servers are
/// processes of their own) used meanwhile.
async fn with_cpu(sample: impl Future<Output = Sample>) -> Sample {
    let before = process_cpu();
    let mut sample = sample.await;
    sample.cpu = Some(process_cpu().saturating_sub(before));
    sample
}
