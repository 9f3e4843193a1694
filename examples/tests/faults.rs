//! Real `greeter-server` processes on a stock etcd, faulted as operators see them fail: one
//! frozen under load, one stopped while etcd is dead, one told twice to stop.

mod support;

use jovian::Discovery;
use std::time::Duration;

use jovian::ClientBuilder;
use jovian::client::ClientOptions;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::load::{Load, failures, rate};
use jovian_tests::{eventually, init_logging};
use support::GreeterProcess;

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// Failed on the old code: calls had no deadline and the connection no keep-alive that noticed
/// a frozen peer, so throughput fell to zero for the whole freeze and calls stalled ~15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_costs_seconds_not_the_freeze() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let servers: Vec<GreeterProcess> = (0..3).map(|_| GreeterProcess::start(&etcd, 200)).collect();
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let mut options = ClientOptions::default();
    options.retry.idempotent_methods.insert(SAY_HELLO.into());
    let timeout = options.timeout.expect("a default deadline");
    let channel = ClientBuilder::new(registry)
        .options(options)
        .build("greeter")
        .await
        .unwrap();
    assert_eq!(channel.instance_count(), 3);

    let load = Load::start(&channel, 16);
    load.wait_for(300).await;
    let warm = load.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await; // the baseline's measuring window
    let frozen_at = load.elapsed();
    servers[0].signal("-STOP");
    tokio::time::sleep(Duration::from_secs(25)).await; // the freeze is the scenario
    let thawed_at = load.elapsed();
    servers[0].signal("-CONT");
    load.wait_for(300).await;
    let calls = load.stop().await;

    assert!(
        failures(&calls).is_empty(),
        "idempotent calls failed: {:?}",
        &failures(&calls)[..failures(&calls).len().min(5)]
    );
    let before = rate(&calls, warm, frozen_at);
    let second = Duration::from_secs(1);
    let mut at = frozen_at + Duration::from_secs(3);
    // The defect was no call at all for the whole freeze. A quarter of the rate tells that
    // apart with room for a loaded machine, where anything else running takes its share of
    // two cores from one second to the next (this is a correctness bound, not a speed claim).
    while at + second <= thawed_at {
        let during = rate(&calls, at, at + second);
        assert!(
            during >= 0.25 * before,
            "{:?} into the freeze: {during:.0} calls/s against {before:.0} before",
            at - frozen_at
        );
        at += second;
    }
    let longest = calls.iter().map(|c| c.took).max().unwrap();
    assert!(
        longest <= timeout + Duration::from_millis(500),
        "a call took {longest:?}"
    );
}

/// Failed on the old code: stopping queued behind the lease repair, each etcd request waiting
/// out its timeout: 17 s to stop with etcd dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_etcd_dead_takes_one_request_timeout_at_most() {
    init_logging();
    let mut etcd = EtcdCluster::stock().await;
    let drain = Duration::from_millis(500);
    let at_once = GreeterProcess::start(&etcd, drain.as_millis() as u64);
    let repairing = GreeterProcess::start(&etcd, drain.as_millis() as u64);
    etcd.kill(0);
    // One is stopped before it notices etcd is gone, the other once it is deep in repairs.
    at_once.signal("-TERM");
    let request_timeout = EtcdConfig::new(["unused:1"]).request_timeout;
    let bound = drain + request_timeout + Duration::from_millis(1500);
    let (_, took) = at_once.wait_exit(Duration::from_secs(30)).await;
    assert!(took <= bound, "stopping right after etcd died took {took:?}");
    tokio::time::sleep(Duration::from_secs(12)).await; // past the TTL: the keeper is repairing
    repairing.signal("-TERM");
    let (_, took) = repairing.wait_exit(Duration::from_secs(30)).await;
    assert!(took <= bound, "stopping during repairs took {took:?}");
}

/// Failed on the old code: a second SIGTERM was ignored while the first stop drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    init_logging();
    let etcd = EtcdCluster::stock().await;
    let server = GreeterProcess::start(&etcd, 30_000);
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    server.signal("-TERM");
    eventually(Duration::from_secs(5), "the first stop to unregister", || async {
        observer.list("greeter").await.ok()?.is_empty().then_some(())
    })
    .await;
    server.signal("-TERM");
    let (status, took) = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        took <= Duration::from_secs(2),
        "the second signal took {took:?} to stop it"
    );
    assert!(!status.success(), "an interrupted stop is not a clean exit");
}
