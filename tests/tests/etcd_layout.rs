//! What the etcd registry writes, read back with a plain etcd client: keys, values, leases.

use std::time::Duration;

use etcd_client::GetOptions;
use jovian::service::EntryKind;
use jovian::{Discovery, Registrar, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{init_logging, within};

async fn connect(etcd: &EtcdCluster, config: impl FnOnce(EtcdConfig) -> EtcdConfig) -> EtcdRegistry {
    EtcdRegistry::connect(config(EtcdConfig::new(etcd.endpoints())))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_follow_the_design() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = connect(&etcd, |c| c.prefix("jupiter")).await;
    let provider = ServiceInfo::new("greeter", "127.0.0.1:50051")
        .with_zone("z1")
        .with_metadata("version", "1.2.0");
    let mut governor = ServiceInfo::new("greeter", "127.0.0.1:9090");
    governor.kind = EntryKind::Governor;
    governor.scheme = "http".into();
    governor.hostname = "host-a".into();
    registry.register(&provider).await.unwrap();
    registry.register(&governor).await.unwrap();

    let mut client = etcd.client().await;
    let got = client
        .get("/jupiter/greeter/providers/grpc://127.0.0.1:50051", None)
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    let expected = serde_json::json!({
        "name": "greeter", "appId": "", "scheme": "grpc", "address": "127.0.0.1:50051",
        "weight": 100, "enable": true, "healthy": true, "metadata": {"version": "1.2.0"},
        "region": "", "zone": "z1", "kind": 1, "version": "", "mode": "", "hostname": "",
        "deployment": "", "group": ""
    });
    assert_eq!(
        value, expected,
        "the provider value has jupiter's field names and types"
    );

    let target = client
        .get("/prometheus/job/greeter/host-a/127.0.0.1:9090", None)
        .await
        .unwrap();
    assert_eq!(
        target.kvs()[0].value(),
        b"127.0.0.1:9090",
        "the metrics target holds the governor address"
    );

    let all = client.get("/", Some(GetOptions::new().with_prefix())).await.unwrap();
    let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "/jupiter/greeter/providers/grpc://127.0.0.1:50051",
            "/prometheus/job/greeter/host-a/127.0.0.1:9090"
        ],
        "nothing else is written"
    );
    let listed = registry.list("greeter").await.unwrap();
    assert_eq!(
        listed.addresses(),
        vec!["127.0.0.1:50051"],
        "a governor is not a provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_per_registry_with_the_configured_ttl() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = connect(&etcd, |c| c.ttl(Duration::from_secs(7))).await;
    for (name, port) in [("a", 1), ("b", 2), ("b", 3)] {
        registry
            .register(&ServiceInfo::new(name, format!("127.0.0.1:{port}")))
            .await
            .unwrap();
    }
    let mut client = etcd.client().await;
    let all = client
        .get("/jovian/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let leases: Vec<i64> = all.kvs().iter().map(|kv| kv.lease()).collect();
    assert_eq!(leases.len(), 3);
    assert!(
        leases.iter().all(|&l| l != 0 && l == leases[0]),
        "keys are bound to one lease: {leases:?}"
    );
    let ttl = client.lease_time_to_live(leases[0], None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_about_every_third_of_its_ttl() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = connect(&etcd, |c| c.ttl(Duration::from_secs(3))).await;
    registry
        .register(&ServiceInfo::new("renew", "127.0.0.1:1"))
        .await
        .unwrap();
    let start = registry.stats().lease_renewals;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let renewals = registry.stats().lease_renewals - start;
    // Two TTLs at one renewal per second: 6 or 7, with room for scheduling noise.
    assert!(
        (5..=8).contains(&renewals),
        "{renewals} renewals in 6.5 s with a 3 s TTL"
    );
    let mut client = etcd.client().await;
    let lease = client
        .get("/jovian/renew/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    let remaining = client.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(remaining >= 1, "the lease ran down to {remaining} s despite renewals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_disappears_within_ttl_plus_one_second() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let ttl = Duration::from_secs(2);
    let crashing = connect(&etcd, |c| c.ttl(ttl)).await;
    let observer = connect(&etcd, |c| c).await;
    crashing
        .register(&ServiceInfo::new("crash", "127.0.0.1:1"))
        .await
        .unwrap();
    let mut watch = observer.watch("crash").await.unwrap();
    assert_eq!(watch.current().len(), 1);
    drop(crashing); // stops renewing without unregistering, as a killed process would
    within(
        ttl + Duration::from_secs(1),
        "the crashed owner's instance to vanish",
        watch.wait_for(|e| e.is_empty()),
    )
    .await
    .unwrap();
}
