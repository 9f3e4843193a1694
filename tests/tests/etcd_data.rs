//! What watchers make of what others write under the prefix: operators' overrides are merged
//! in, and garbage is skipped and counted while good instances keep flowing.

use std::time::Duration;

use jovian::{Discovery, Instances, Registrar, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{init_logging, within};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_are_merged_into_every_snapshot_and_removing_them_restores() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let owner = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let reader = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let a = ServiceInfo::new("gov", "127.0.0.1:1").with_weight(100);
    let b = ServiceInfo::new("gov", "127.0.0.1:2");
    owner.register(&a).await.unwrap();
    owner.register(&b).await.unwrap();
    let mut client = etcd.client().await;
    // An override that exists before the watch starts is applied to the first snapshot.
    client
        .put("/jovian/gov/configurators/grpc://127.0.0.1:1", r#"{"weight":20}"#, None)
        .await
        .unwrap();
    let mut watch = reader.watch("gov").await.unwrap();
    assert_eq!(watch.current().get(&a.uri()).unwrap().weight, 20);
    assert_eq!(
        reader.list("gov").await.unwrap().get(&a.uri()).unwrap().weight,
        20,
        "list merges too"
    );

    client
        .put(
            "/jovian/gov/configurators/grpc://127.0.0.1:2",
            r#"{"enable":false,"address":"evil:1"}"#,
            None,
        )
        .await
        .unwrap();
    let disabled = within(
        WAIT,
        "b disabled",
        watch.wait_for(|e| e.get(&b.uri()).is_some_and(|i| !i.enable)),
    )
    .await
    .unwrap();
    assert_eq!(
        disabled.get(&b.uri()).unwrap().address,
        "127.0.0.1:2",
        "an override cannot move an instance"
    );

    // The provider re-registering (a restart) does not undo the operator's override.
    owner
        .register(&a.clone().with_metadata("restarted", "yes"))
        .await
        .unwrap();
    let restarted = within(
        WAIT,
        "a's new entry",
        watch.wait_for(|e| e.get(&a.uri()).is_some_and(|i| i.metadata.contains_key("restarted"))),
    )
    .await
    .unwrap();
    assert_eq!(restarted.get(&a.uri()).unwrap().weight, 20);

    client
        .delete("/jovian/gov/configurators/grpc://127.0.0.1:1", None)
        .await
        .unwrap();
    client
        .delete("/jovian/gov/configurators/grpc://127.0.0.1:2", None)
        .await
        .unwrap();
    within(
        WAIT,
        "the provider's own values back",
        watch.wait_for(|e| {
            e.get(&a.uri()).is_some_and(|i| i.weight == 100) && e.get(&b.uri()).is_some_and(|i| i.enable)
        }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_prefix_is_skipped_and_counted() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let owner = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let good = ServiceInfo::new("junk", "127.0.0.1:1");
    owner.register(&good).await.unwrap();
    let mut client = etcd.client().await;
    let huge = format!(
        r#"{{"name":"junk","address":"127.0.0.1:9","zone":"{}"}}"#,
        "z".repeat(1024 * 1024)
    );
    let garbage: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            b"/jovian/junk/providers/grpc://127.0.0.1:2".to_vec(),
            b"not json".to_vec(),
        ),
        (
            b"/jovian/junk/providers/grpc://127.0.0.1:3".to_vec(),
            br#"{"name":"junk","address":"127.0.0.1:3","weight":"heavy"}"#.to_vec(),
        ),
        (
            b"/jovian/junk/providers/grpc://127.0.0.1:4".to_vec(),
            br#"{"name":"junk","address":"127.0.0.1:5"}"#.to_vec(),
        ),
        (b"/jovian/junk/providers/grpc://127.0.0.1:9".to_vec(), huge.into_bytes()),
        (
            b"/jovian/junk/providers/".to_vec(),
            br#"{"name":"junk","address":"127.0.0.1:6"}"#.to_vec(),
        ),
        (b"/jovian/junk/providers/grpc://\xff\xfe".to_vec(), b"{}".to_vec()),
        (
            b"/jovian/junk/providers/grpc://127.0.0.1:7".to_vec(),
            b"\xff\xfe\xfd".to_vec(),
        ),
        (
            b"/jovian/junk/configurators/grpc://127.0.0.1:1".to_vec(),
            br#"{"weight":"lots"}"#.to_vec(),
        ),
    ];
    // Half before the reader lists, half after it watches: both paths must skip them.
    let (before, after) = garbage.split_at(4);
    for (key, value) in before {
        client.put(key.clone(), value.clone(), None).await.unwrap();
    }
    let reader = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let mut watch = reader.watch("junk").await.unwrap();
    assert_eq!(watch.current().addresses(), vec!["127.0.0.1:1"]);
    for (key, value) in after {
        client.put(key.clone(), value.clone(), None).await.unwrap();
    }
    let late = ServiceInfo::new("junk", "127.0.0.1:8");
    owner.register(&late).await.unwrap();
    let snapshot = within(
        WAIT,
        "the good instance after the garbage",
        watch.wait_for(|e| e.len() == 2),
    )
    .await
    .unwrap();
    assert_eq!(snapshot.addresses(), vec!["127.0.0.1:1", "127.0.0.1:8"]);
    assert_eq!(
        snapshot.get(&good.uri()).unwrap().weight,
        100,
        "a bad override is ignored"
    );
    assert_eq!(
        reader.stats().bad_entries,
        garbage.len() as u64,
        "each bad entry counted once"
    );

    // Listing again (a fresh view) still skips them, and a repaired value is taken.
    assert_eq!(reader.list("junk").await.unwrap().len(), 2);
    assert_eq!(
        reader.stats().bad_entries,
        garbage.len() as u64,
        "listing again counted them again"
    );
    client
        .put(
            "/jovian/junk/providers/grpc://127.0.0.1:2",
            ServiceInfo::new("junk", "127.0.0.1:2").encode(),
            None,
        )
        .await
        .unwrap();
    within(WAIT, "the repaired entry", watch.wait_for(|e: &Instances| e.len() == 3))
        .await
        .unwrap();
}
