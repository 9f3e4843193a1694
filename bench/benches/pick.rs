//! Pick cost per policy at 10, 1,000 and 10,000 instances, with criterion.
//!
//! `cargo bench -p jovian-bench --bench pick`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jovian::ServiceChannel;
use jovian::client::{ClientOptions, HashKey, Policy};
use jovian::{ClientBuilder, Registrar, ServiceInfo};
use jovian_registry_memory::MemoryStore;

fn channel(runtime: &tokio::runtime::Runtime, n: usize, policy: Policy) -> ServiceChannel {
    runtime.block_on(async {
        let registry = MemoryStore::new().registry();
        for i in 0..n {
            let address = format!("10.{}.{}.{}:50051", i / 65536, (i / 256) % 256, i % 256);
            registry.register(&ServiceInfo::new("picks", address)).await.unwrap();
        }
        let options = ClientOptions::default().policy(policy);
        ClientBuilder::new(registry)
            .options(options)
            .build("picks")
            .await
            .unwrap()
    })
}

fn picks(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let policies = [
        Policy::RoundRobin,
        Policy::WeightedRoundRobin,
        Policy::PowerOfTwoChoices,
        Policy::ConsistentHash(HashKey::default()),
        Policy::Random,
    ];
    for policy in policies {
        let mut group = c.benchmark_group(format!("pick/{}", policy.name()));
        for n in [10, 1_000, 10_000] {
            let channel = channel(&runtime, n, policy.clone());
            let hashing = matches!(policy, Policy::ConsistentHash(_));
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(1);
                    let bytes = key.to_le_bytes();
                    black_box(channel.bench_pick(hashing.then_some(&bytes[..])))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
