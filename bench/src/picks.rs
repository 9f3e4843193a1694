//! Scenario 3: the cost of one pick, per policy, as the service grows. A pick runs on every
//! call, so it must stay cheap and flat in the number of instances.

use std::hint::black_box;
use std::time::Instant;

use jovian::client::{ClientOptions, HashKey, Policy};
use jovian::{ClientBuilder, Registrar, ServiceChannel, ServiceInfo};
use jovian_registry_memory::MemoryStore;

use crate::Sizes;
use crate::report::{Section, median_f64, ratio};

pub(crate) fn policies() -> Vec<Policy> {
    vec![
        Policy::RoundRobin,
        Policy::WeightedRoundRobin,
        Policy::PowerOfTwoChoices,
        Policy::ConsistentHash(HashKey::default()),
        Policy::Random,
    ]
}

/// A channel over `n` registered instances (nothing listens: picks never connect).
pub(crate) async fn channel(n: usize, policy: Policy) -> anyhow::Result<ServiceChannel> {
    let store = MemoryStore::new();
    let registry = store.registry();
    for i in 0..n {
        let info = ServiceInfo::new(
            "picks",
            format!("10.{}.{}.{}:50051", i / 65536, (i / 256) % 256, i % 256),
        )
        .with_weight(50 + (i % 3) as u32 * 25);
        registry.register(&info).await?;
    }
    let options = ClientOptions::default().policy(policy);
    let channel = ClientBuilder::new(registry).options(options).build("picks").await?;
    anyhow::ensure!(
        channel.instances().len() == n,
        "the channel holds {} of {n} instances",
        channel.instances().len()
    );
    Ok(channel)
}

/// Nanoseconds per pick over `iterations` picks.
pub(crate) fn time_picks(channel: &ServiceChannel, iterations: u64) -> f64 {
    let keys: Vec<[u8; 8]> = (0..1024u64).map(|k| k.to_le_bytes()).collect();
    let hashing = matches!(channel.options().policy, Policy::ConsistentHash(_));
    let started = Instant::now();
    for i in 0..iterations {
        let key = hashing.then(|| &keys[(i % 1024) as usize][..]);
        black_box(channel.bench_pick(black_box(key)));
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "3. Pick cost",
        "under 200 ns per pick, flat in the number of instances",
        &["policy", "instances", "ns/pick (median)", "vs smallest"],
    );
    for policy in policies() {
        let mut channels = Vec::new();
        for n in sizes.pick_sizes {
            channels.push(channel(n, policy.clone()).await?);
        }
        let mut samples = vec![Vec::new(); channels.len()];
        for _ in 0..sizes.reps {
            for (i, channel) in channels.iter().enumerate() {
                time_picks(channel, sizes.pick_iterations / 10); // warm caches
                samples[i].push(time_picks(channel, sizes.pick_iterations));
            }
        }
        let smallest = median_f64(&samples[0]);
        for (i, n) in sizes.pick_sizes.iter().enumerate() {
            let ns = median_f64(&samples[i]);
            section.row(vec![
                policy.name().to_owned(),
                n.to_string(),
                format!("{ns:.0}"),
                ratio(ns, smallest),
            ]);
        }
    }
    section.note(format!(
        "{} picks per sample, single thread, through the same path a call takes (load the instance set, pick, skip ejected). \
         `cargo bench -p jovian-bench` runs the same with criterion.",
        sizes.pick_iterations
    ));
    Ok(section)
}
