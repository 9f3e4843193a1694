//! Registrations heal themselves after anything etcd goes through: a restart, wiped data, a key
//! deleted or a lease revoked by someone else. Watchers keep their last snapshot throughout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use jovian::service::EntryKind;
use jovian::{Discovery, Registrar, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{eventually, init_logging};

const TTL: Duration = Duration::from_secs(2);

struct Setup {
    etcd: EtcdCluster,
    registry: EtcdRegistry,
    expected: BTreeSet<String>,
}

/// A registry with two providers and a metrics target on a fresh etcd.
async fn setup() -> Setup {
    let etcd = EtcdCluster::single().await;
    let config = EtcdConfig::new(etcd.endpoints())
        .ttl(TTL)
        .request_timeout(Duration::from_millis(500));
    let registry = EtcdRegistry::connect(config).await.unwrap();
    let mut governor = ServiceInfo::new("heal", "127.0.0.1:9090");
    governor.kind = EntryKind::Governor;
    governor.hostname = "h".into();
    for info in [
        ServiceInfo::new("heal", "127.0.0.1:1"),
        ServiceInfo::new("heal", "127.0.0.1:2"),
        governor,
    ] {
        registry.register(&info).await.unwrap();
    }
    let expected = [
        "/jovian/heal/providers/grpc://127.0.0.1:1",
        "/jovian/heal/providers/grpc://127.0.0.1:2",
        "/prometheus/job/heal/h/127.0.0.1:9090",
    ]
    .map(String::from)
    .into();
    Setup {
        etcd,
        registry,
        expected,
    }
}

async fn keys(etcd: &EtcdCluster) -> Option<BTreeSet<String>> {
    let mut client = etcd.client().await;
    let all = tokio::time::timeout(
        Duration::from_secs(1),
        client.get("/", Some(GetOptions::new().with_prefix())),
    )
    .await
    .ok()?
    .ok()?;
    Some(all.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect())
}

async fn all_keys_back(setup: &Setup, within: Duration, what: &str) {
    let expected = setup.expected.clone();
    eventually(within, what, || async {
        (keys(&setup.etcd).await.as_ref() == Some(&expected)).then_some(())
    })
    .await;
}

/// Every key must also stay: the restored lease is really being renewed.
async fn keys_stay_for_two_ttls(setup: &Setup) {
    tokio::time::sleep(TTL * 2 + Duration::from_millis(500)).await;
    assert_eq!(
        keys(&setup.etcd).await.as_ref(),
        Some(&setup.expected),
        "keys vanished after the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_with_its_data_after_more_than_a_ttl() {
    init_logging();
    let mut setup = setup().await;
    let observer = EtcdRegistry::connect(EtcdConfig::new(setup.etcd.endpoints()))
        .await
        .unwrap();
    let watch = observer.watch("heal").await.unwrap();
    setup.etcd.kill(0);
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert_eq!(watch.peek().len(), 2, "an outage emptied the watcher's snapshot");
    setup.etcd.restart(0).await;
    let answering = Instant::now();
    all_keys_back(
        &setup,
        Duration::from_secs(2),
        "every key back within 2 s of etcd answering",
    )
    .await;
    tracing::info!(elapsed = ?answering.elapsed(), "keys back");
    keys_stay_for_two_ttls(&setup).await;
    assert_eq!(watch.peek().len(), 2, "the watcher lost instances across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_with_wiped_data() {
    init_logging();
    let mut setup = setup().await;
    let ghost = EtcdRegistry::connect(EtcdConfig::new(setup.etcd.endpoints()))
        .await
        .unwrap();
    ghost.register(&ServiceInfo::new("heal", "127.0.0.1:3")).await.unwrap();
    drop(ghost); // crashed before the wipe: nobody will put its key back
    let observer_config = EtcdConfig::new(setup.etcd.endpoints())
        .relist_grace(Duration::from_secs(3))
        .request_timeout(Duration::from_millis(500));
    let observer = EtcdRegistry::connect(observer_config).await.unwrap();
    let mut watch = observer.watch("heal").await.unwrap();
    assert_eq!(watch.current().len(), 3);
    let smallest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let mut recorder = watch.clone();
    let recorded = smallest.clone();
    tokio::spawn(async move {
        while let Ok(snapshot) = recorder.changed().await {
            recorded.fetch_min(snapshot.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });

    setup.etcd.restart_wiped().await;
    all_keys_back(
        &setup,
        Duration::from_secs(2),
        "every key back within 2 s of a wiped etcd answering",
    )
    .await;
    assert!(setup.registry.stats().reregistrations >= 1, "a new lease was needed");
    let only_live = ["127.0.0.1:1", "127.0.0.1:2"];
    // The grace is 3 s from the watcher's relist; a watch that restarts meanwhile (a stall on
    // a loaded machine) relists and grants it again, hence the wait of several graces.
    let gone = tokio::time::timeout(Duration::from_secs(15), watch.wait_for(|e| e.addresses() == only_live)).await;
    assert!(
        gone.is_ok(),
        "the crashed owner's instance did not go once the reset grace ended: {:?}; registry stats {:?}",
        watch.peek().addresses(),
        observer.stats()
    );
    let smallest = smallest.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        smallest >= 2,
        "a live instance dropped out of a watcher's snapshot while etcd came back empty ({smallest} left)"
    );
    keys_stay_for_two_ttls(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_deleted_by_someone_else_is_put_back() {
    init_logging();
    let setup = setup().await;
    let mut client = setup.etcd.client().await;
    client
        .delete("/jovian/heal/providers/grpc://127.0.0.1:1", None)
        .await
        .unwrap();
    all_keys_back(&setup, Duration::from_secs(1), "the deleted key back within 1 s").await;
    // The watch on the registry's own keys puts it back once; on a busy machine a full repair
    // (after a late keep-alive, say) may have put it back first and counted nothing, so this
    // says only that one delete is never put back twice.
    let put_backs = setup.registry.stats().put_backs;
    assert!(put_backs <= 1, "one deleted key was put back {put_backs} times");
    client
        .delete("/prometheus/job/heal/h/127.0.0.1:9090", None)
        .await
        .unwrap();
    all_keys_back(
        &setup,
        Duration::from_secs(1),
        "the deleted metrics target back within 1 s",
    )
    .await;
    keys_stay_for_two_ttls(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_by_someone_else_is_replaced() {
    init_logging();
    let setup = setup().await;
    let mut client = setup.etcd.client().await;
    let lease = client
        .get("/jovian/heal/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    client.lease_revoke(lease).await.unwrap();
    all_keys_back(
        &setup,
        Duration::from_secs(1),
        "every key back within 1 s of the revoke",
    )
    .await;
    let relisted = client
        .get("/jovian/heal/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(
        relisted.kvs().iter().all(|kv| kv.lease() != lease),
        "keys are on a new lease"
    );
    keys_stay_for_two_ttls(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_keys_are_not_put_back() {
    init_logging();
    let setup = setup().await;
    setup
        .registry
        .unregister(&ServiceInfo::new("heal", "127.0.0.1:1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let remaining = keys(&setup.etcd).await.unwrap();
    assert!(
        !remaining.contains("/jovian/heal/providers/grpc://127.0.0.1:1"),
        "{remaining:?}"
    );
    assert_eq!(remaining.len(), 2);
}
