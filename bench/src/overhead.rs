//! Scenario 2: what the client costs per call, against a direct tonic channel to one instance
//! and tonic's balance channel over the same three.

use std::sync::Arc;

use jovian::{ClientBuilder, Registry};
use jovian_examples::GreeterClient;
use jovian_registry_memory::MemoryStore;
use tonic::transport::{Channel, Endpoint};

use crate::Sizes;
use crate::closed_loop::{Client, drive, interleaved};
use crate::report::{Section, ms, ratio};
use crate::servers::greeter;

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
    // Connect to every instance before measuring.
    for (client, instances) in clients.iter().zip([1, 3, 3]) {
        client.warm_up(instances).await?;
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
        let samples = interleaved(sizes.reps, clients.len(), async |variant| {
            Ok(drive(&clients[variant], in_flight, sizes.call_duration).await)
        })
        .await?;
        let baseline = samples[0].rate(sizes.call_duration);
        for (name, samples) in VARIANTS.iter().zip(&samples) {
            let rate = samples.rate(sizes.call_duration);
            section.row(vec![
                in_flight.to_string(),
                (*name).to_owned(),
                format!("{rate:.0}"),
                ratio(rate, baseline),
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
