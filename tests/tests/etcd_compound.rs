//! A compound registry over TWO real etcd clusters: one App registered in both, clients of
//! each cluster and a compound client see it; one cluster killed or frozen leaves it
//! registered in the other and a compound client's calls succeeding; the cluster's return
//! heals the registration there.

use std::sync::Arc;
use std::time::Duration;

use jovian::prelude::*;
use jovian::registry::Compound;
use jovian::{App, ClientBuilder, Running, ServiceChannel};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{eventually, init_logging, within};

const SERVICE: &str = "compound-greeter";
const HEAL: Duration = Duration::from_secs(30);

fn config(cluster: &EtcdCluster) -> EtcdConfig {
    EtcdConfig::new(cluster.endpoints())
        .ttl(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(1))
}

async fn etcd(cluster: &EtcdCluster) -> EtcdRegistry {
    EtcdRegistry::connect(config(cluster)).await.unwrap()
}

async fn compound(a: &EtcdCluster, b: &EtcdCluster) -> Compound {
    Compound::builder()
        .source("a", etcd(a).await)
        .source("b", etcd(b).await)
        .attempt_timeout(Duration::from_secs(2))
        .max_retry_delay(Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn app(registry: Arc<Compound>) -> Running {
    App::new()
        .registry(registry)
        .serve(greeter_server(SERVICE))
        .start()
        .await
        .unwrap()
}

/// A fresh client of `cluster` lists the App's instance at `address`.
async fn listed_in(cluster: &EtcdCluster, address: &str) -> bool {
    match EtcdRegistry::connect(config(cluster)).await {
        Ok(client) => {
            let found = client
                .list(SERVICE)
                .await
                .is_ok_and(|listed| listed.addresses() == [address]);
            let _ = client.close().await;
            found
        }
        Err(_) => false,
    }
}

/// `calls` calls in a row through `channel`, each of which must reach `address`.
async fn calls_succeed(channel: &ServiceChannel, address: &str, calls: usize, what: &str) {
    let mut client = GreeterClient::new(channel.clone());
    for i in 0..calls {
        let reply = client
            .say_hello(HelloRequest { name: format!("{i}") })
            .await
            .unwrap_or_else(|status| panic!("call {i} {what} failed: {status}"));
        assert_eq!(replying_address(&reply.into_inner().message), address, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_in_two_clusters_survives_either_one_dying_or_freezing() {
    init_logging();
    let mut a = EtcdCluster::single().await;
    let b = EtcdCluster::single().await;
    let registry = Arc::new(compound(&a, &b).await);
    let running = app(registry.clone()).await;
    let address = running.registrations()[0].address.clone();

    // a client of each cluster sees it, and so does a compound client
    assert!(listed_in(&a, &address).await, "registered in cluster a");
    assert!(listed_in(&b, &address).await, "registered in cluster b");
    let client_registry = compound(&a, &b).await;
    assert_eq!(
        client_registry.list(SERVICE).await.unwrap().addresses(),
        [address.as_str()]
    );
    let channel = ClientBuilder::new(client_registry).build(SERVICE).await.unwrap();
    calls_succeed(&channel, &address, 5, "with both clusters up").await;
    let late = compound(&a, &b).await; // connected now, watched only once a is dead

    // cluster a dies: b keeps the registration, calls go on
    a.kill(0);
    assert!(listed_in(&b, &address).await, "cluster b keeps it while a is dead");
    calls_succeed(&channel, &address, 20, "while cluster a is dead").await;
    // a client whose watch starts now, with a dead, starts from b
    let fresh = within(Duration::from_secs(10), "a client to build with a dead", async {
        ClientBuilder::new(late).build(SERVICE).await
    })
    .await
    .unwrap();
    calls_succeed(&fresh, &address, 5, "through a client started while a is dead").await;

    // a comes back empty (data wiped): the App's registration heals there
    a.restart_wiped().await;
    eventually(HEAL, "the registration to heal in the wiped cluster a", || async {
        listed_in(&a, &address).await.then_some(())
    })
    .await;
    calls_succeed(&channel, &address, 5, "after cluster a is back").await;

    // cluster b freezes (SIGSTOP): a keeps it, calls go on; b's return heals it there
    b.pause(0);
    assert!(listed_in(&a, &address).await, "cluster a keeps it while b is frozen");
    calls_succeed(&channel, &address, 20, "while cluster b is frozen").await;
    let listed = within(Duration::from_secs(10), "a compound list with b frozen", async {
        running.registry().unwrap().list(SERVICE).await
    })
    .await
    .unwrap();
    assert_eq!(listed.addresses(), [address.as_str()]);
    tokio::time::sleep(Duration::from_secs(4)).await; // frozen past the lease TTL
    b.resume(0);
    eventually(HEAL, "the registration to be in cluster b after the freeze", || async {
        listed_in(&b, &address).await.then_some(())
    })
    .await;
    calls_succeed(&channel, &address, 5, "after cluster b thawed").await;

    running.stop().await.unwrap();
    assert!(!listed_in(&a, &address).await, "unregistered from a");
    assert!(!listed_in(&b, &address).await, "unregistered from b");
    registry.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_down_at_start_neither_fails_nor_holds_up_the_start_and_gets_the_registration_back() {
    init_logging();
    let a = EtcdCluster::single().await;
    let mut b = EtcdCluster::single().await;
    let registry = Arc::new(compound(&a, &b).await);
    b.kill(0); // connected, then gone before the App starts
    let running = within(
        Duration::from_secs(20),
        "the App to start with cluster b down",
        app(registry.clone()),
    )
    .await;
    let address = running.registrations()[0].address.clone();
    assert!(listed_in(&a, &address).await, "registered in cluster a");
    let pending = registry.pending();
    assert!(
        pending.iter().any(|p| p.source == "b" && p.entry.address == address),
        "owed to b: {pending:?}"
    );

    b.restart(0).await;
    eventually(HEAL, "the registration to reach cluster b once it is back", || async {
        listed_in(&b, &address).await.then_some(())
    })
    .await;
    eventually(HEAL, "nothing owed any more", || async {
        registry.pending().is_empty().then_some(())
    })
    .await;
    running.stop().await.unwrap();
    registry.close().await.unwrap();
}
