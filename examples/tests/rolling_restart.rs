//! A rolling restart under load, as separate processes on real etcd: three greeter servers,
//! 16 calls always in flight, each server restarted in turn (SIGTERM, start again). Not one
//! call may fail.

mod support;

use jovian::Discovery;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use jovian::ClientBuilder;
use jovian_examples::{GreeterClient, HelloRequest};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::eventually;
use support::GreeterProcess;

const IN_FLIGHT: usize = 16;
const DRAIN_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call() {
    let etcd = EtcdCluster::single().await;
    let mut servers: Vec<GreeterProcess> = (0..3).map(|_| GreeterProcess::start(&etcd, DRAIN_MS)).collect();
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let channel = ClientBuilder::new(registry).build("greeter").await.unwrap();
    assert_eq!(channel.instances().len(), 3);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.say_hello(HelloRequest { name: "rolling".into() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            eprintln!("call failed: {status}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let calls_flow = |at_least: usize| {
        let ok = ok.clone();
        eventually(Duration::from_secs(10), "calls to flow", move || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= at_least).then_some(()) }
        })
    };
    calls_flow(200).await;

    for round in 0..3 {
        let old = servers.remove(0);
        let old_address = old.address.clone();
        let (status, _) = old.terminate().await;
        assert!(status.success(), "SIGTERM did not end the server cleanly: {status}");
        let new = GreeterProcess::start(&etcd, DRAIN_MS);
        let new_address = new.address.clone();
        servers.push(new);
        eventually(
            Duration::from_secs(10),
            "the restarted server to be registered and the old one gone",
            || async {
                let listed = observer.list("greeter").await.ok()?;
                let addresses = listed.addresses();
                (addresses.len() == 3
                    && addresses.contains(&new_address.as_str())
                    && !addresses.contains(&old_address.as_str()))
                .then_some(())
            },
        )
        .await;
        let before = ok.load(Ordering::Relaxed);
        calls_flow(before + 200).await;
        println!("restart {}: {old_address} -> {new_address}", round + 1);
    }

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "rolling restart of 3 servers with {IN_FLIGHT} calls in flight: {} calls, {ok} ok, {failed} failed",
        ok + failed
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} calls failed during the rolling restart",
        ok + failed
    );
}
