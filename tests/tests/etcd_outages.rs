//! What etcd trouble does to registrations, watches and calls, on etcd with its stock flags:
//! frozen or cut off past the TTL, idle for long, large, overwritten, refusing one key, or a
//! member without a leader. Each test names the defect it failed on before its fix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, Permission, RoleRevokePermissionOptions, Txn, TxnOp};
use jovian::{App, ClientBuilder, Discovery, Registrar, Running, ServiceChannel, ServiceInfo};
use jovian_examples::greeter_server;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::load::{Load, failures};
use jovian_tests::proxy::Proxy;
use jovian_tests::{eventually, init_logging, within};

async fn registry(endpoints: Vec<String>) -> EtcdRegistry {
    EtcdRegistry::connect(EtcdConfig::new(endpoints)).await.unwrap()
}

async fn server(endpoints: Vec<String>, name: &str, ttl: Duration) -> Running {
    let registry = EtcdRegistry::connect(EtcdConfig::new(endpoints).ttl(ttl))
        .await
        .unwrap();
    App::new()
        .registry(registry)
        .governor(None)
        .serve(greeter_server(name))
        .start()
        .await
        .unwrap()
}

/// The fewest instances `channel` offered at any moment until the returned guard is read.
fn lowest_count(channel: &ServiceChannel) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let lowest = Arc::new(AtomicUsize::new(usize::MAX));
    let (seen, channel) = (lowest.clone(), channel.clone());
    let sampler = tokio::spawn(async move {
        loop {
            seen.fetch_min(channel.instance_count(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (lowest, sampler)
}

/// Calls under load through an outage that `outage` makes, given the proxies through which
/// the three servers (0 to 2) and the client (3) reach etcd; asserts no call failed and the
/// client never offered fewer than its 3 instances.
async fn ride_through(name: &str, etcd: &EtcdCluster, outage: impl AsyncFnOnce(&[Proxy])) {
    let grace = EtcdConfig::new(["unused:1"]).relist_grace;
    ride_through_with(name, etcd, jovian_registry_etcd::DEFAULT_TTL, grace, outage).await;
}

/// [`ride_through`] with servers holding leases of `ttl`, and a client keeping instances
/// missing after trouble for `grace`.
async fn ride_through_with(
    name: &str,
    etcd: &EtcdCluster,
    ttl: Duration,
    grace: Duration,
    outage: impl AsyncFnOnce(&[Proxy]),
) {
    let target = etcd.endpoint(0).parse().unwrap();
    let mut proxies = Vec::new();
    for _ in 0..4 {
        proxies.push(Proxy::start(target).await);
    }
    let through = |i: usize| vec![proxies[i].addr().to_string()];
    let servers = [
        server(through(0), name, ttl).await,
        server(through(1), name, ttl).await,
        server(through(2), name, ttl).await,
    ];
    let client = EtcdRegistry::connect(EtcdConfig::new(through(3)).relist_grace(grace))
        .await
        .unwrap();
    let channel = ClientBuilder::new(client).build(name).await.unwrap();
    assert_eq!(channel.instance_count(), 3);
    let (lowest, sampler) = lowest_count(&channel);
    let load = Load::start(&channel, 8);
    load.wait_for(200).await;
    outage(&proxies).await;
    let observer = registry(etcd.endpoints()).await;
    eventually(Duration::from_secs(15), "every server to register again", || async {
        (observer.list(name).await.ok()?.len() == 3).then_some(())
    })
    .await;
    load.wait_for(500).await;
    let calls = load.stop().await;
    sampler.abort();
    let failed = failures(&calls);
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        calls.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(lowest.load(Ordering::Relaxed), 3, "the client dropped live instances");
    drop(servers);
}

/// Failed on the old code: after etcd came back the servers' leases had expired, the client's
/// re-list found no instance, and calls failed until the servers had registered again. (The
/// servers' links are down through the freeze, so no renewal they queued is read when etcd
/// wakes, and they come back 3 s after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen_past_the_ttl_fails_no_call() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let freeze = async |proxies: &[Proxy]| {
        proxies[..3].iter().for_each(Proxy::cut);
        etcd.pause(0);
        tokio::time::sleep(Duration::from_secs(20)).await; // the outage itself: twice the TTL
        etcd.resume(0);
        tokio::time::sleep(Duration::from_secs(3)).await; // the servers reconnect later
        proxies[..3].iter().for_each(Proxy::restore);
    };
    ride_through("frozen", &etcd, freeze).await;
}

/// Found by the fault runs (seed 2, lease TTL 3 s): a freeze just long enough to expire the
/// leases went unnoticed by the client's watch, which then applied the expiries as removals
/// and emptied. The servers lose etcd 1.5 s before it freezes for 2.5 s, so their leases
/// expire in the freeze; the client's link never breaks, only etcd's silence tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_just_past_short_leases_fails_no_call() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let freeze = async |proxies: &[Proxy]| {
        proxies[..3].iter().for_each(Proxy::cut);
        tokio::time::sleep(Duration::from_millis(1500)).await; // the fault schedule
        etcd.pause(0);
        tokio::time::sleep(Duration::from_millis(2500)).await; // the freeze itself
        etcd.resume(0);
        tokio::time::sleep(Duration::from_secs(2)).await; // the servers reconnect later
        proxies[..3].iter().for_each(Proxy::restore);
    };
    let grace = Duration::from_secs(10);
    ride_through_with("shortlease", &etcd, Duration::from_secs(3), grace, freeze).await;
}

/// Found by the fault runs (seed 11): instances kept after one outage were dropped when their
/// grace ran out during the next, while the client could not hear from etcd and their owners
/// could not re-register. The grace now counts from the last time the client could look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_outages_longer_than_the_grace_fail_no_call() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let outages = async |proxies: &[Proxy]| {
        proxies.iter().for_each(Proxy::cut);
        tokio::time::sleep(Duration::from_secs(5)).await; // every lease expires meanwhile
        proxies[3].restore(); // the client re-lists: nobody there, all kept
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxies[3].cut();
        tokio::time::sleep(Duration::from_secs(5)).await; // past the 3 s grace
        proxies[3].restore(); // the client re-lists: still nobody
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxies[..3].iter().for_each(Proxy::restore);
    };
    ride_through_with(
        "backtoback",
        &etcd,
        Duration::from_secs(3),
        Duration::from_secs(3),
        outages,
    )
    .await;
}

/// Failed on the old code, as the freeze did: every process cut off from etcd for longer than
/// the TTL while etcd runs on and expires every lease; the client's link heals 3 s before the
/// servers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_cut_off_from_etcd_past_the_ttl_fails_no_call() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let partition = async |proxies: &[Proxy]| {
        proxies.iter().for_each(Proxy::cut);
        tokio::time::sleep(Duration::from_secs(15)).await; // the outage itself: past the TTL
        proxies[3].restore();
        tokio::time::sleep(Duration::from_secs(3)).await; // the servers' links heal later
        proxies[..3].iter().for_each(Proxy::restore);
    };
    ride_through("cutoff", &etcd, partition).await;
}

/// Failed on the old code: its 3 s pings broke etcd's default 5 s minimum, and etcd closed the
/// connection with GOAWAY every 12 s, restarting every watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_on_a_stock_etcd_is_never_torn_down() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let reader = registry(etcd.endpoints()).await;
    let mut watch = reader.watch("idle").await.unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await; // idleness is the scenario
    assert_eq!(reader.stats().watch_restarts, 0, "the idle watch was restarted");
    registry(etcd.endpoints())
        .await
        .register(&ServiceInfo::new("idle", "127.0.0.1:1"))
        .await
        .unwrap();
    within(
        Duration::from_secs(5),
        "the watch to see a change",
        watch.wait_for(|e| e.len() == 1),
    )
    .await
    .unwrap();
}

const MANY: usize = 20_000;

fn many_address(i: usize) -> String {
    format!("127.1.{}.{}:50051", i / 250, i % 250 + 1)
}

/// Failed on the old code: the list was one range request, over the 4 MiB a client decodes,
/// so a new client could not build and a running one re-listed in vain forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_instances_and_five_mib_of_other_values() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let running = registry(etcd.endpoints()).await;
    let mut running_watch = running.watch("big").await.unwrap();
    let mut admin = etcd.client().await;
    let blob = "x".repeat(1 << 20);
    for i in 0..5 {
        admin
            .put(format!("/jovian/big/blobs/{i}"), blob.clone(), None)
            .await
            .unwrap();
    }
    let entries: Vec<ServiceInfo> = (0..MANY)
        .map(|i| ServiceInfo::new("big", many_address(i)).with_metadata("padding", "p".repeat(100)))
        .collect();
    for chunk in entries.chunks(128) {
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|info| TxnOp::put(format!("/jovian/big/providers/{}", info.uri()), info.encode(), None))
            .collect();
        admin.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let listed = admin
        .get("/jovian/big/", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(listed.count() as usize, MANY + 5);

    for max_message_bytes in [jovian_registry_etcd::DEFAULT_MAX_MESSAGE_BYTES, 2 << 20] {
        let config = EtcdConfig::new(etcd.endpoints()).max_message_bytes(max_message_bytes);
        let fresh = EtcdRegistry::connect(config).await.unwrap();
        let endpoints = within(Duration::from_secs(20), "a new client's list", fresh.list("big"))
            .await
            .unwrap();
        assert_eq!(endpoints.len(), MANY, "with {max_message_bytes}-byte messages");
    }
    within(
        Duration::from_secs(30),
        "the running watch to follow",
        running_watch.wait_for(|e| e.len() == MANY),
    )
    .await
    .unwrap();
    let fresh = registry(etcd.endpoints()).await;
    let mut fresh_watch = fresh.watch("big").await.unwrap();
    admin
        .delete(format!("/jovian/big/providers/grpc://{}", many_address(7)), None)
        .await
        .unwrap();
    fresh
        .register(&ServiceInfo::new("big", "127.2.0.1:50051"))
        .await
        .unwrap();
    for watch in [&mut running_watch, &mut fresh_watch] {
        let after = within(
            Duration::from_secs(10),
            "both changes",
            watch.wait_for(|e| e.get("grpc://127.2.0.1:50051").is_some() && e.len() == MANY),
        )
        .await
        .unwrap();
        assert!(after.get(&format!("grpc://{}", many_address(7))).is_none());
    }
}

/// Failed on the old code: the keeper watched its keys for deletes only, so a key someone
/// overwrote kept the stranger's value, off our lease, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_registration_is_put_back_on_our_lease() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let owner = registry(etcd.endpoints()).await;
    let ours = ServiceInfo::new("overwritten", "127.0.0.1:7");
    owner.register(&ours).await.unwrap();
    let key = "/jovian/overwritten/providers/grpc://127.0.0.1:7";
    let mut admin = etcd.client().await;
    let lease = admin.get(key, None).await.unwrap().kvs()[0].lease();
    assert_ne!(lease, 0);
    admin
        .put(key, ours.clone().with_weight(1).encode(), None)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the registration to be put back", || async {
        let response = etcd.client().await.get(key, None).await.ok()?;
        let kv = response.kvs().first()?;
        (kv.value() == ours.encode().as_bytes() && kv.lease() == lease).then_some(())
    })
    .await;
    // Normally the keeper puts it back (one put-back); on a loaded machine a repair started by
    // a late keep-alive may restore it first, which is as good. Never more than once.
    let stats = owner.stats();
    assert!(stats.put_backs <= 1, "{stats:?}");
}

/// Failed on the old code: one key etcd refused failed the whole repair, which was retried
/// forever with no keep-alive sent, so every other registration expired too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_etcd_refuses_does_not_stop_the_others() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let mut admin = etcd.client().await;
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("svc").await.unwrap();
    for permission in [
        Permission::read("/jovian/").with_prefix(),
        Permission::read_write("/jovian/good/").with_prefix(),
        Permission::read_write("/jovian/bad/").with_prefix(),
    ] {
        admin.role_grant_permission("svc", permission).await.unwrap();
    }
    admin.user_add("svc", "svc-pw", None).await.unwrap();
    admin.user_grant_role("svc", "svc").await.unwrap();
    admin.auth_enable().await.unwrap();
    let options = etcd_client::ConnectOptions::new().with_user("root", "root-pw");
    let mut admin = etcd_client::Client::connect(etcd.endpoints(), Some(options))
        .await
        .unwrap();

    let config = EtcdConfig::new(etcd.endpoints())
        .credentials("svc", "svc-pw")
        .ttl(Duration::from_secs(3));
    let owner = EtcdRegistry::connect(config).await.unwrap();
    owner.register(&ServiceInfo::new("good", "127.0.0.1:1")).await.unwrap();
    owner.register(&ServiceInfo::new("bad", "127.0.0.1:2")).await.unwrap();
    let good = "/jovian/good/providers/grpc://127.0.0.1:1";
    let bad = "/jovian/bad/providers/grpc://127.0.0.1:2";
    let lease = admin.get(good, None).await.unwrap().kvs()[0].lease();

    admin
        .role_revoke_permission(
            "svc",
            "/jovian/bad/",
            Some(RoleRevokePermissionOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    admin.lease_revoke(lease).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the good key back and the bad one reported",
        || async {
            let back = !admin.clone().get(good, None).await.ok()?.kvs().is_empty();
            (back && owner.stats().refused_keys > 0).then_some(())
        },
    )
    .await;
    let renewed = owner.stats().lease_renewals;
    eventually(Duration::from_secs(10), "keep-alives to go on", || async {
        (owner.stats().lease_renewals >= renewed + 3).then_some(())
    })
    .await;
    assert!(
        !admin.get(good, None).await.unwrap().kvs().is_empty(),
        "the good key outlived its TTL several times over"
    );
    assert!(admin.get(bad, None).await.unwrap().kvs().is_empty());

    admin
        .role_grant_permission("svc", Permission::read_write("/jovian/bad/").with_prefix())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the refused key once etcd allows it",
        || async { (!admin.clone().get(bad, None).await.ok()?.kvs().is_empty()).then_some(()) },
    )
    .await;
}

/// Failed on the old code: a watch on a member that had lost its leader stayed open and
/// silent, serving nothing, instead of ending so the client could try elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_member_without_a_leader_ends() {
    init_logging();
    let mut etcd = EtcdCluster::three().await;
    let writer = registry(etcd.endpoints()).await;
    writer
        .register(&ServiceInfo::new("leader", "127.0.0.1:1"))
        .await
        .unwrap();
    let reader = registry(vec![etcd.endpoint(0)]).await;
    let watch = reader.watch("leader").await.unwrap();
    assert_eq!(watch.peek().len(), 1);
    etcd.kill(1);
    etcd.kill(2);
    eventually(
        Duration::from_secs(10),
        "the leaderless member to end the watch",
        || async { (reader.stats().watch_restarts > 0).then_some(()) },
    )
    .await;
    assert_eq!(watch.peek().len(), 1, "trouble never empties a watch");
    etcd.restart(1).await;
    etcd.restart(2).await;
    writer
        .register(&ServiceInfo::new("leader", "127.0.0.1:2"))
        .await
        .unwrap();
    let mut watch = watch;
    within(
        Duration::from_secs(15),
        "the watch to recover",
        watch.wait_for(|e| e.len() == 2),
    )
    .await
    .unwrap();
}

/// Found by the fault runs (seed 17): a server stopping within the grace after a client's watch
/// had trouble stayed in that client's set (its delete was taken for a lease expiry), so calls
/// went on to it past its drain and one was cut off. A delete whose lease lives is a
/// withdrawal, and takes effect at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_withdrawn_while_a_client_settles_leaves_it_at_once() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = Proxy::start(etcd.endpoint(0).parse().unwrap()).await;
    let owner = registry(etcd.endpoints()).await;
    let leaving = ServiceInfo::new("settle", "127.0.0.1:1");
    owner.register(&leaving).await.unwrap();
    owner
        .register(&ServiceInfo::new("settle", "127.0.0.1:2"))
        .await
        .unwrap();
    let config = EtcdConfig::new([proxy.addr().to_string()]).request_timeout(Duration::from_millis(500));
    let reader = EtcdRegistry::connect(config).await.unwrap();
    let mut watch = reader.watch("settle").await.unwrap();
    proxy.cut();
    eventually(Duration::from_secs(5), "the reader to lose its watch", || async {
        (reader.stats().watch_restarts >= 1).then_some(())
    })
    .await;
    proxy.restore();
    owner
        .register(&ServiceInfo::new("settle", "127.0.0.1:3"))
        .await
        .unwrap();
    within(
        Duration::from_secs(10),
        "the reader to watch again",
        watch.wait_for(|e| e.len() == 3),
    )
    .await
    .unwrap();
    // The reader re-listed moments ago: it is settling, and would keep an expired instance.
    owner.unregister(&leaving).await.unwrap();
    within(
        Duration::from_secs(2),
        "the withdrawn instance to leave",
        watch.wait_for(|e| e.get(&leaving.uri()).is_none()),
    )
    .await
    .unwrap();
}
