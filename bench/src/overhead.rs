//! Scenario 2: what the client costs per call, against a direct tonic channel to one instance
//! and tonic's balance channel over the same three.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jovian::{ClientBuilder, Registry, ServiceChannel};
use jovian_examples::{GreeterClient, HelloRequest};
use jovian_registry_memory::MemoryStore;
use tonic::transport::{Channel, Endpoint};

use crate::Sizes;
use crate::report::{Section, median_f64, ms, quantile, ratio};
use crate::servers::greeter;

#[derive(Clone)]
enum Client {
    Tonic(GreeterClient<Channel>),
    Jovian(GreeterClient<ServiceChannel>),
}

impl Client {
    async fn call(&mut self) -> bool {
        let request = HelloRequest { name: "bench".into() };
        match self {
            Client::Tonic(client) => client.say_hello(request).await.is_ok(),
            Client::Jovian(client) => client.say_hello(request).await.is_ok(),
        }
    }
}

const VARIANTS: [&str; 3] = [
    "direct tonic Channel (1 instance)",
    "tonic balance_channel (3)",
    "jovian ServiceChannel (3)",
];

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let store = MemoryStore::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let registry: Arc<dyn Registry> = Arc::new(store.registry());
        servers.push(greeter("overhead", Some(registry)).await?);
    }
    let endpoints: Vec<Endpoint> = servers
        .iter()
        .map(|s| Endpoint::from_shared(format!("http://{}", s.local_addrs()[0])).map(|e| e.tcp_nodelay(true)))
        .collect::<Result<_, _>>()?;
    let direct = endpoints[0].clone().connect().await?;
    let balanced = Channel::balance_list(endpoints.into_iter());
    let jovian = ClientBuilder::new(store.registry()).build("overhead").await?;
    let clients = [
        Client::Tonic(GreeterClient::new(direct)),
        Client::Tonic(GreeterClient::new(balanced)),
        Client::Jovian(GreeterClient::new(jovian)),
    ];
    for client in &clients {
        client.clone().call().await; // connect before measuring
    }

    let mut section = Section::new(
        "2. Client overhead",
        "at least 97% of the direct channel's call rate",
        &[
            "in flight",
            "variant",
            "calls/s (median)",
            "vs direct",
            "p50",
            "p99",
            "failed",
        ],
    );
    for in_flight in [1usize, 16, 64] {
        // rates[variant][rep], latencies[variant] over all reps
        let mut rates = vec![Vec::new(); clients.len()];
        let mut latencies = vec![Vec::new(); clients.len()];
        let mut failures = vec![0usize; clients.len()];
        for rep in 0..sizes.reps {
            // Rotate the order each repetition so no variant always runs first.
            for offset in 0..clients.len() {
                let variant = (rep + offset) % clients.len();
                let (calls, mut lat, failed) = drive(&clients[variant], in_flight, sizes.call_duration).await;
                rates[variant].push(calls as f64 / sizes.call_duration.as_secs_f64());
                latencies[variant].append(&mut lat);
                failures[variant] += failed;
            }
        }
        let baseline = median_f64(&rates[0]);
        for (variant, name) in VARIANTS.iter().enumerate() {
            let rate = median_f64(&rates[variant]);
            section.row(vec![
                in_flight.to_string(),
                (*name).to_owned(),
                format!("{rate:.0}"),
                ratio(rate, baseline),
                ms(quantile(&latencies[variant], 0.5)),
                ms(quantile(&latencies[variant], 0.99)),
                failures[variant].to_string(),
            ]);
        }
    }
    section.note(format!(
        "Client and servers share the machine's cores; each cell is {} s of calls per repetition.",
        sizes.call_duration.as_secs_f64()
    ));
    Ok(section)
}

/// `in_flight` callers for `duration`: calls made, their latencies, failures.
async fn drive(client: &Client, in_flight: usize, duration: Duration) -> (usize, Vec<Duration>, usize) {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if client.call().await {
                        latencies.push(started.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((mut latencies, f)) = task.await {
            all.append(&mut latencies);
            failed += f;
        }
    }
    (all.len(), all, failed)
}
