//! jovian through etcd's gRPC proxy (`etcd grpc-proxy start`), the stock way to put many
//! watchers on one etcd: registration, lease keep-alive, expiry and watches work unchanged, and
//! clients heal when the proxy restarts.
//!
//! etcd runs with its stock flags, and so does the proxy (but for its addresses and data dir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::PutOptions;
use jovian::{App, ClientBuilder, Discovery, InstancesWatch, ServiceInfo};
use jovian_examples::{GreeterClient, HelloRequest};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::{EtcdCluster, EtcdOptions, GrpcProxy};
use jovian_tests::greeters::{Sleepy, server};
use jovian_tests::proxy::Proxy;
use jovian_tests::{eventually, init_logging, within};

/// At least 3 s, so that the watch's stall detection stays meaningful (see docs/etcd.md).
const TTL: Duration = Duration::from_secs(3);

fn config(endpoint: String) -> EtcdConfig {
    EtcdConfig::new([endpoint])
        .ttl(TTL)
        .request_timeout(Duration::from_secs(1))
}

async fn registry(endpoint: String) -> Arc<EtcdRegistry> {
    Arc::new(EtcdRegistry::connect(config(endpoint)).await.unwrap())
}

fn provider_key(service: &str, address: &str) -> String {
    format!("/jovian/{service}/providers/grpc://{address}")
}

/// The lease and mod revision of `key` as etcd itself holds it, if it exists.
async fn stored(etcd: &EtcdCluster, key: &str) -> Option<(i64, i64)> {
    let mut client = etcd.client().await;
    let got = client.get(key, None).await.unwrap();
    got.kvs().first().map(|kv| (kv.lease(), kv.mod_revision()))
}

async fn wait_for(watch: &mut InstancesWatch, what: &str, mut condition: impl FnMut(&jovian::Instances) -> bool) {
    within(Duration::from_secs(20), what, watch.wait_for(|i| condition(i)))
        .await
        .unwrap();
}

async fn hello(channel: &jovian::ServiceChannel, name: &str) -> String {
    let mut client = GreeterClient::new(channel.clone());
    let reply = client.say_hello(HelloRequest { name: name.into() }).await.unwrap();
    reply.into_inner().message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_registers_keeps_its_lease_and_unregisters_through_the_proxy() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    // A longer lease than the file's: this binary runs eight etcd + proxy pairs at once, and
    // on two cores a 3 s lease renewed through a loaded proxy lapsed once (renewals that took
    // longer than the 1 s request timeout), which this test is not about.
    let lease_ttl = Duration::from_secs(6);
    let app_registry = Arc::new(
        EtcdRegistry::connect(config(proxy.endpoint()).ttl(lease_ttl))
            .await
            .unwrap(),
    );
    let running = App::new()
        .name("px-app")
        .registry(Arc::clone(&app_registry))
        .serve(server("px", Sleepy))
        .start()
        .await
        .unwrap();
    let address = running.local_addr("px").unwrap().to_string();
    let key = provider_key("px", &address);

    // A client discovers the App through the proxy and calls it.
    let client_registry = registry(proxy.endpoint()).await;
    let channel = ClientBuilder::new(Arc::clone(&client_registry))
        .build("px")
        .await
        .unwrap();
    assert!(
        hello(&channel, "x").await.contains(&address),
        "the call reached the App"
    );
    let mut watch = client_registry.watch("px").await.unwrap();
    assert!(watch.current().contains(&format!("grpc://{address}")));

    // The keep-alive goes through the proxy: the entry outlives several TTLs on its first lease,
    // never re-put by a repair.
    let (lease, revision) = stored(&etcd, &key).await.expect("registered in etcd");
    let renewals = app_registry.stats().lease_renewals;
    tokio::time::sleep(lease_ttl * 2).await;
    assert_eq!(
        stored(&etcd, &key).await,
        Some((lease, revision)),
        "the entry lived through 2 TTLs on its lease"
    );
    let stats = app_registry.stats();
    assert!(
        stats.lease_renewals >= renewals + 3,
        "renewals were answered through the proxy: {stats:?}"
    );
    assert_eq!(stats.reregistrations, 0, "{stats:?}");
    let mut etcd_client = etcd.client().await;
    let ttl = etcd_client.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl > 0, "etcd itself holds the lease alive ({ttl} s left)");

    // Stopping the App removes the entry, and the client sees it through the proxy.
    running.stop().await.unwrap();
    assert_eq!(stored(&etcd, &key).await, None, "stop deleted the entry in etcd");
    wait_for(&mut watch, "the client to see the App go", |i| i.is_empty()).await;
    eventually(Duration::from_secs(10), "the channel to drop the App", || async {
        (channel.instance_count() == 0).then_some(())
    })
    .await;
    assert_eq!(client_registry.stats().watch_restarts, 0, "the watch never restarted");
}

/// An App that goes away without unregistering: its lease expires, etcd deletes the entry, and
/// the deletion reaches a watch through the proxy, both when the App's connection closes (a
/// killed process) and when it stays open but silent (a frozen or cut-off host, where the
/// proxy's own keep-alive of the lease runs on for up to a TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_expires_and_the_watch_through_the_proxy_sees_it() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    let watcher = registry(proxy.endpoint()).await;

    // Closed: the App and its registry are dropped, as a killed process's are.
    let app_registry = registry(proxy.endpoint()).await;
    let running = App::new()
        .registry(Arc::clone(&app_registry))
        .serve(server("gone", Sleepy))
        .start()
        .await
        .unwrap();
    let uri = format!("grpc://{}", running.local_addr("gone").unwrap());
    let mut watch = watcher.watch("gone").await.unwrap();
    assert!(watch.current().contains(&uri));
    let abandoned = Instant::now();
    drop(running);
    drop(app_registry);
    wait_for(&mut watch, "the expiry of a dropped App's lease", |i| !i.contains(&uri)).await;
    let closed_after = abandoned.elapsed();

    // Silent: the App's connection to the proxy stays open and carries nothing.
    let link = Proxy::start(proxy.addr()).await;
    let app_registry = registry(link.addr().to_string()).await;
    let running = App::new()
        .registry(Arc::clone(&app_registry))
        .serve(server("gone", Sleepy))
        .start()
        .await
        .unwrap();
    let uri = format!("grpc://{}", running.local_addr("gone").unwrap());
    wait_for(&mut watch, "the second App", |i| i.contains(&uri)).await;
    let abandoned = Instant::now();
    link.blackhole();
    wait_for(&mut watch, "the expiry of a silent App's lease", |i| !i.contains(&uri)).await;
    let silent_after = abandoned.elapsed();
    eprintln!(
        "through the proxy, an abandoned lease of {TTL:?} expired after {closed_after:?} (connection closed) and {silent_after:?} (connection silent)"
    );
    // A lease renewed every TTL/3 expires within a TTL of its owner's end. Behind the proxy, a
    // silent owner's lease is renewed by the proxy itself until a TTL after it last answered
    // the owner: it expires up to 2 1/3 TTLs after the owner went silent (6 s of a 3 s TTL was
    // seen; see docs/etcd.md).
    assert!(closed_after < TTL * 2, "closed: {closed_after:?}");
    assert!(silent_after < TTL * 3, "silent: {silent_after:?}");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_written_to_etcd_directly_reaches_a_watch_through_the_proxy() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    let watcher = registry(proxy.endpoint()).await;
    let mut watch = watcher.watch("direct").await.unwrap();
    assert!(watch.current().is_empty());

    let mut client = etcd.client().await;
    let info = ServiceInfo::new("direct", "127.0.0.1:7001");
    let key = provider_key("direct", "127.0.0.1:7001");
    client.put(key.as_str(), info.encode(), None).await.unwrap();
    wait_for(&mut watch, "the put", |i| i.contains("grpc://127.0.0.1:7001")).await;

    let override_key = "/jovian/direct/configurators/grpc://127.0.0.1:7001";
    client.put(override_key, r#"{"weight":7}"#, None).await.unwrap();
    wait_for(&mut watch, "the override", |i| {
        i.get("grpc://127.0.0.1:7001").is_some_and(|e| e.weight == 7)
    })
    .await;

    client.delete(key.as_str(), None).await.unwrap();
    wait_for(&mut watch, "the delete", |i| i.is_empty()).await;
    assert_eq!(watcher.stats().watch_restarts, 0);
}

/// The proxy is killed and started again on the same port: the App keeps its registration (on
/// the same lease, as the restart is shorter than its TTL), and the client's watch resumes
/// without missing the change made while the proxy was down, nor the ones after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_heal_when_the_proxy_restarts() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let mut proxy = GrpcProxy::start(&etcd).await;
    let app_registry = registry(proxy.endpoint()).await;
    let running = App::new()
        .registry(Arc::clone(&app_registry))
        .serve(server("heal", Sleepy))
        .start()
        .await
        .unwrap();
    let address = running.local_addr("heal").unwrap().to_string();
    let app_uri = format!("grpc://{address}");
    let client_registry = registry(proxy.endpoint()).await;
    let channel = ClientBuilder::new(Arc::clone(&client_registry))
        .build("heal")
        .await
        .unwrap();
    let mut watch = client_registry.watch("heal").await.unwrap();
    assert!(watch.current().contains(&app_uri));
    let (lease, _) = stored(&etcd, &provider_key("heal", &address)).await.unwrap();

    let mut client = etcd.client().await;
    let direct_lease = client.lease_grant(3600, None).await.unwrap().id();
    let on_lease = || Some(PutOptions::new().with_lease(direct_lease));
    let put = |client: &mut etcd_client::Client, port: u16| {
        let info = ServiceInfo::new("heal", format!("127.0.0.1:{port}"));
        let (key, value) = (provider_key("heal", &info.address), info.encode());
        let mut client = client.clone();
        async move { client.put(key, value, on_lease()).await.unwrap() }
    };

    proxy.kill();
    put(&mut client, 7101).await;
    proxy.restart().await;
    wait_for(&mut watch, "the change made while the proxy was down", |i| {
        i.contains("grpc://127.0.0.1:7101") && i.contains(&app_uri)
    })
    .await;
    assert!(
        client_registry.stats().watch_restarts >= 1,
        "the watch was interrupted and re-listed"
    );

    // Changes after the restart flow again, one by one.
    put(&mut client, 7102).await;
    wait_for(&mut watch, "a put after the restart", |i| {
        i.contains("grpc://127.0.0.1:7102")
    })
    .await;
    client
        .delete(provider_key("heal", "127.0.0.1:7101"), None)
        .await
        .unwrap();
    wait_for(&mut watch, "a delete after the restart", |i| {
        !i.contains("grpc://127.0.0.1:7101") && i.contains("grpc://127.0.0.1:7102")
    })
    .await;

    // The App held on to its lease through the proxy's restart and still renews it.
    tokio::time::sleep(TTL * 2).await;
    let (now_lease, _) = stored(&etcd, &provider_key("heal", &address))
        .await
        .expect("the App is still registered");
    assert_eq!(now_lease, lease, "the App kept its lease across the proxy's restart");
    assert_eq!(app_registry.stats().reregistrations, 0);
    assert!(hello(&channel, "after").await.contains(&address));
    running.stop().await.unwrap();
    wait_for(&mut watch, "the App's stop", |i| !i.contains(&app_uri)).await;
}

/// etcd sends a watch that asked for them a progress notification when it has been idle for a
/// while (every 10 minutes by default; 4 s here, to see it in a test), and the proxy forwards
/// it. Such a notification is no answer to the watch's own progress requests, which the proxy
/// does not forward: taking it for one would make the watch believe etcd answers them, then
/// restart it as dead (and treat expiries as an outage's) every time the proxy stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_periodic_progress_notifications_through_the_proxy_restart_no_watch() {
    init_logging();
    let options = EtcdOptions {
        stock: true,
        extra_args: vec![
            jovian_tests::etcd::server()
                .version
                .progress_notify_interval_flag(Duration::from_secs(4)),
        ],
        ..EtcdOptions::default()
    };
    let etcd = EtcdCluster::start(1, options).await;
    let proxy = GrpcProxy::start(&etcd).await;
    let watcher = registry(proxy.endpoint()).await;
    let mut watch = watcher.watch("quiet").await.unwrap();
    // Several notification periods, each longer than the stall threshold and the request
    // timeout + 2 s after which a watch answering progress requests is given up.
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert_eq!(watcher.stats().watch_restarts, 0, "{:?}", watcher.stats());

    // And the watch is alive: a change still arrives.
    let mut client = etcd.client().await;
    let info = ServiceInfo::new("quiet", "127.0.0.1:7201");
    client
        .put(provider_key("quiet", "127.0.0.1:7201"), info.encode(), None)
        .await
        .unwrap();
    wait_for(&mut watch, "a put", |i| i.contains("grpc://127.0.0.1:7201")).await;
}

/// The premise of telling answers from notifications: etcd answers a progress request with
/// watch id -1 (for every watch on the stream), and the proxy does not answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_answers_progress_requests_with_watch_id_minus_one_and_the_proxy_not_at_all() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    for (endpoint, answers) in [(etcd.endpoint(0), true), (proxy.endpoint(), false)] {
        let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await.unwrap();
        let options = etcd_client::WatchOptions::new().with_prefix().with_progress_notify();
        let (mut requests, mut responses) = client.watch("/progress/", Some(options)).await.unwrap().split();
        let created = responses.message().await.unwrap().unwrap();
        assert!(
            created.created(),
            "{endpoint}: the first message is the creation notice"
        );
        requests.request_progress().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(2), responses.message()).await;
        match (answers, answer) {
            (true, Ok(Ok(Some(answer)))) => {
                assert!(
                    answer.events().is_empty() && !answer.created(),
                    "{endpoint}: {answer:?}"
                );
                assert_eq!(answer.watch_id(), -1, "{endpoint}: {answer:?}");
            }
            (false, Err(_)) => {}
            (_, other) => panic!("{endpoint} (answers progress: {answers}): {other:?}"),
        }
    }
}

/// The etcd leader is killed under a proxy that knows every member: the App behind the proxy
/// keeps its registration, the client's snapshot never loses it, and changes after the
/// election reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_behind_the_proxy_loses_no_instance() {
    init_logging();
    let mut etcd = EtcdCluster::three().await;
    let proxy = GrpcProxy::start(&etcd).await;
    let app_registry = registry(proxy.endpoint()).await;
    let running = App::new()
        .registry(Arc::clone(&app_registry))
        .serve(server("elect", Sleepy))
        .start()
        .await
        .unwrap();
    let address = running.local_addr("elect").unwrap().to_string();
    let app_uri = format!("grpc://{address}");
    let client_registry = registry(proxy.endpoint()).await;
    let mut watch = client_registry.watch("elect").await.unwrap();
    assert!(watch.current().contains(&app_uri));
    let emptied = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let (mut watch, emptied, app_uri) = (
            client_registry.watch("elect").await.unwrap(),
            Arc::clone(&emptied),
            app_uri.clone(),
        );
        tokio::spawn(async move {
            while let Ok(snapshot) = watch.changed().await {
                if !snapshot.contains(&app_uri) {
                    emptied.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let leader = etcd.leader().await;
    etcd.kill(leader);
    // Outlive a TTL, so a lease not renewed through the election would expire.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    let mut client = etcd.client().await;
    let info = ServiceInfo::new("elect", "127.0.0.1:7301");
    within(Duration::from_secs(20), "a put after the election", async {
        loop {
            let put = client.put(provider_key("elect", "127.0.0.1:7301"), info.encode(), None);
            if put.await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    wait_for(&mut watch, "the change after the election", |i| {
        i.contains("grpc://127.0.0.1:7301") && i.contains(&app_uri)
    })
    .await;
    eventually(Duration::from_secs(20), "the App's entry in etcd", || async {
        let mut client = etcd.client().await;
        let got = client.get(provider_key("elect", &address), None).await.ok()?;
        (!got.kvs().is_empty()).then_some(())
    })
    .await;
    eprintln!(
        "leader change behind the proxy: app {:?}, client {:?}",
        app_registry.stats(),
        client_registry.stats()
    );
    assert!(
        !emptied.load(std::sync::atomic::Ordering::Relaxed),
        "a snapshot lost the App"
    );
    recorder.abort();
    running.stop().await.unwrap();
}

/// The proxy's `--max-send-bytes` (1.5 MiB by default) does not limit what it relays: a
/// service whose pages are larger lists and watches through it as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_pages_above_the_proxys_send_limit_lists_through_it() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let proxy = GrpcProxy::start(&etcd).await;
    let mut client = etcd.client().await;
    // 1,000 entries of about 2 KiB: one page of 1,000 keys is about 2 MiB.
    let padding = "x".repeat(2048);
    for batch in 0..10 {
        let puts: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let mut info = ServiceInfo::new("big", format!("127.0.0.1:{}", 20_000 + batch * 100 + i));
                info.metadata.insert("padding".into(), padding.clone());
                etcd_client::TxnOp::put(provider_key("big", &info.address), info.encode(), None)
            })
            .collect();
        client.txn(etcd_client::Txn::new().and_then(puts)).await.unwrap();
    }
    let watcher = registry(proxy.endpoint()).await;
    let listed = watcher.list("big").await.unwrap();
    assert_eq!(listed.len(), 1000);
    let mut watch = watcher.watch("big").await.unwrap();
    assert_eq!(watch.current().len(), 1000);
}
