//! Watches against real etcd: every snapshot is the true state at its revision, compaction and
//! disconnection end in a re-list that converges, a frozen member is noticed, and a leader's
//! death drops no instance from any snapshot.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use jovian::{Discovery, Instances, Registrar, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::proxy::Proxy;
use jovian_tests::{eventually, init_logging, within};

fn instance(port: u16) -> ServiceInfo {
    ServiceInfo::new("w", format!("127.0.0.1:{port}"))
}

fn addresses(endpoints: &Instances) -> BTreeSet<String> {
    endpoints.iter().map(|i| i.address.clone()).collect()
}

/// Keeps every snapshot a watch delivers until the watch ends.
fn record(mut watch: jovian::InstancesWatch) -> Arc<Mutex<Vec<Instances>>> {
    let seen = Arc::new(Mutex::new(vec![watch.current()]));
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok(snapshot) = watch.changed().await {
            recorder.lock().unwrap().push(snapshot);
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_is_the_true_state_at_its_revision() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let writer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let reader = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    writer.register(&instance(999)).await.unwrap();
    let seen = record(reader.watch("w").await.unwrap());
    for port in 1000..1100u16 {
        writer.register(&instance(port)).await.unwrap();
        if port % 3 == 0 {
            writer.unregister(&instance(port - 1)).await.unwrap();
        }
        if port % 10 == 0 {
            writer.register(&instance(port).with_weight(7)).await.unwrap();
        }
    }
    let truth = writer.list("w").await.unwrap();
    eventually(Duration::from_secs(5), "the watch to reach the final state", || async {
        let last = seen.lock().unwrap().last().cloned().unwrap();
        (last.same_instances(&truth)).then_some(())
    })
    .await;

    let snapshots = seen.lock().unwrap().clone();
    assert!(
        snapshots.len() > 10,
        "only {} snapshots for 150 changes",
        snapshots.len()
    );
    let mut client = etcd.client().await;
    let mut previous = 0;
    for snapshot in &snapshots {
        assert!(
            snapshot.revision() > previous,
            "revisions went {previous} -> {}",
            snapshot.revision()
        );
        previous = snapshot.revision();
        let options = GetOptions::new().with_prefix().with_revision(snapshot.revision());
        let at = client.get("/jovian/w/providers/", Some(options)).await.unwrap();
        let expected: BTreeSet<String> = at
            .kvs()
            .iter()
            .map(|kv| ServiceInfo::decode(kv.value()).unwrap().address)
            .collect();
        assert_eq!(
            addresses(snapshot),
            expected,
            "snapshot at revision {} differs from etcd",
            snapshot.revision()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_relists_and_converges() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let proxy = Proxy::start(etcd.endpoint(0).parse().unwrap()).await;
    let writer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let grace = Duration::from_secs(2);
    let reader_config = EtcdConfig::new([proxy.addr().to_string()])
        .keepalive(Duration::from_secs(1), Duration::from_secs(1))
        .request_timeout(Duration::from_millis(500))
        .relist_grace(grace);
    let reader = EtcdRegistry::connect(reader_config).await.unwrap();
    writer.register(&instance(1)).await.unwrap();
    let mut watch = reader.watch("w").await.unwrap();
    assert_eq!(watch.current().len(), 1);

    proxy.cut();
    writer.register(&instance(2)).await.unwrap();
    writer.unregister(&instance(1)).await.unwrap();
    for port in 3..20 {
        writer.register(&instance(port)).await.unwrap();
        writer.unregister(&instance(port)).await.unwrap();
    }
    etcd.compact().await;
    eventually(
        Duration::from_secs(5),
        "the reader to notice the disconnection",
        || async { (reader.stats().watch_restarts >= 1).then_some(()) },
    )
    .await;
    assert_eq!(
        addresses(&watch.peek()),
        ["127.0.0.1:1".to_owned()].into(),
        "the outage changed the snapshot"
    );

    proxy.restore();
    // The re-list shows instance 2 at once; instance 1, gone while the reader was away, is
    // kept for the grace (its owner might have been about to put it back), then dropped.
    let relisted = within(
        Duration::from_secs(5),
        "the reader to re-list",
        watch.wait_for(|e| e.get("grpc://127.0.0.1:2").is_some()),
    )
    .await
    .unwrap();
    assert_eq!(
        addresses(&relisted),
        ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()].into()
    );
    within(
        grace + Duration::from_secs(3),
        "the reader to converge",
        watch.wait_for(|e| addresses(e) == ["127.0.0.1:2".to_owned()].into()),
    )
    .await
    .unwrap();
    writer.register(&instance(30)).await.unwrap();
    within(
        Duration::from_secs(5),
        "the reader to keep watching",
        watch.wait_for(|e| e.len() == 2),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_is_noticed_and_the_watch_converges_after_it_thaws() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let writer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let reader_config = EtcdConfig::new(etcd.endpoints())
        .keepalive(Duration::from_secs(1), Duration::from_secs(1))
        .request_timeout(Duration::from_millis(500));
    let reader = EtcdRegistry::connect(reader_config).await.unwrap();
    writer.register(&instance(1)).await.unwrap();
    let mut watch = reader.watch("w").await.unwrap();

    etcd.pause(0); // a panic below still ends it: SIGKILL works on a stopped process
    eventually(
        Duration::from_secs(6),
        "the reader to notice the frozen etcd",
        || async { (reader.stats().watch_restarts >= 1).then_some(()) },
    )
    .await;
    etcd.resume(0);
    assert_eq!(watch.peek().len(), 1, "the freeze changed the snapshot");

    writer.register(&instance(2)).await.unwrap();
    within(
        Duration::from_secs(5),
        "the reader to see a change after the thaw",
        watch.wait_for(|e| e.len() == 2),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_drops_no_instance_from_any_snapshot() {
    init_logging();
    let mut etcd = EtcdCluster::three().await;
    let endpoints = etcd.endpoints();
    let config = || {
        EtcdConfig::new(endpoints.clone())
            .ttl(Duration::from_secs(5))
            .keepalive(Duration::from_secs(1), Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
    };
    let mut owners = Vec::new();
    for port in 1..=3 {
        let owner = EtcdRegistry::connect(config()).await.unwrap();
        owner.register(&instance(port)).await.unwrap();
        owners.push(owner);
    }
    let reader = EtcdRegistry::connect(config()).await.unwrap();
    let watch = reader.watch("w").await.unwrap();
    assert_eq!(watch.peek().len(), 3);
    let seen = record(watch);

    let leader = etcd.leader().await;
    etcd.kill(leader);
    // Outlive a TTL so a lease that was not renewed through the election would expire.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let late = EtcdRegistry::connect(config()).await.unwrap();
    late.register(&instance(4)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the watch to deliver after the leader died",
        || async { (seen.lock().unwrap().last().unwrap().len() == 4).then_some(()) },
    )
    .await;
    let smallest = seen.lock().unwrap().iter().map(|s| s.len()).min().unwrap();
    assert_eq!(
        smallest, 3,
        "an instance dropped out of a snapshot while the leader was replaced"
    );
    assert_eq!(reader.list("w").await.unwrap().len(), 4);
}

/// The premise of starting watches at the listed revision (`registry-etcd/src/watch.rs`): etcd
/// answers a progress request on a stream whose watches start at or below its revision; from
/// 3.5 on, not while one starts above it, as a watch from "the list's revision + 1" does on a
/// quiet etcd. The answer (watch id -1) is what arms the registry's stall detection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_answers_progress_requests_for_a_watch_from_its_revision_and_from_3_5_not_above_it() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let version = jovian_tests::etcd::server().version;
    let mut client = etcd.client().await;
    client.put("/quiet/a", "1", None).await.unwrap();
    let current = client
        .get("/quiet/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let above_answered = version < jovian_tests::etcd::EtcdVersion::new(3, 5, 0);
    for (start, answered) in [(current, true), (current + 1, above_answered)] {
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        let (mut requests, mut responses) = client.watch("/quiet/", Some(options)).await.unwrap().split();
        let created = responses.message().await.unwrap().unwrap();
        assert!(created.created(), "the first message is the creation notice");
        if start == current {
            // The listed revision's own event, which the registry skips.
            let replayed = responses.message().await.unwrap().unwrap();
            assert_eq!(replayed.events().len(), 1, "{replayed:?}");
        }
        // A watch that starts below etcd's revision is synced in the background (every 100 ms):
        // ask until answered, for longer than that.
        let mut answer = None;
        for _ in 0..5 {
            requests.request_progress().await.unwrap();
            if let Ok(message) = tokio::time::timeout(Duration::from_millis(500), responses.message()).await {
                answer = message.unwrap();
                break;
            }
        }
        match (answered, answer) {
            (true, Some(answer)) => {
                assert!(answer.events().is_empty(), "etcd {version}: {answer:?}");
                assert_eq!(answer.watch_id(), -1, "etcd {version}: {answer:?}");
            }
            (false, None) => {}
            (expected, answer) => panic!(
                "etcd {version}, a watch from revision {start} (etcd at {current}): expected an answer: \
                 {expected}, got {answer:?}"
            ),
        }
    }
}
