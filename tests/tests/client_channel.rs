//! The balanced client channel over the in-memory registry: round robin, incremental updates,
//! fail-fast on an empty service, and following the registry with no calls flowing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jovian::{App, ClientBuilder, Registrar, Running, ServiceChannel, ServiceInfo};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{PeerEcho, server};
use jovian_tests::{eventually, init_logging};
use tonic::Code;

async fn start(store: &MemoryStore, app: jovian::GrpcServer) -> Running {
    App::new()
        .registry(store.registry())
        .serve(app)
        .start()
        .await
        .expect("app starts")
}

async fn hello(channel: &ServiceChannel) -> Result<String, tonic::Status> {
    let reply = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "t".into() })
        .await?;
    Ok(reply.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_calls_evenly() {
    init_logging();
    let store = MemoryStore::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start(&store, greeter_server("rr")).await);
    }
    let channel = ClientBuilder::new(store.registry()).build("rr").await.unwrap();
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let message = hello(&channel).await.unwrap();
        *spread.entry(replying_address(&message).to_owned()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = servers.iter().map(|s| (s.local_addrs()[0].to_string(), 10)).collect();
    assert_eq!(spread, expected, "30 calls over 3 instances, 10 each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_instances_keep_their_connection() {
    init_logging();
    let store = MemoryStore::new();
    let first = start(&store, server("keep", PeerEcho)).await;
    let first_addr = first.local_addrs()[0].to_string();
    let channel = ClientBuilder::new(store.registry()).build("keep").await.unwrap();
    let before = hello(&channel).await.unwrap();
    let (server_addr, client_addr) = before.split_once(' ').unwrap();
    assert_eq!(server_addr, first_addr);

    // An unrelated change: a second instance joins.
    let _second = start(&store, server("keep", PeerEcho)).await;
    eventually(
        Duration::from_secs(5),
        "the channel to see the second instance",
        || async { (channel.instances().len() == 2).then_some(()) },
    )
    .await;
    let mut seen_first_again = false;
    for _ in 0..4 {
        let message = hello(&channel).await.unwrap();
        let (server, client) = message.split_once(' ').unwrap();
        if server == first_addr {
            assert_eq!(client, client_addr, "the first instance's connection was replaced");
            seen_first_again = true;
        }
    }
    assert!(seen_first_again, "round robin never came back to the first instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_service_fails_fast_with_unavailable_naming_it() {
    init_logging();
    let store = MemoryStore::new();
    let channel = ClientBuilder::new(store.registry()).build("nobody-home").await.unwrap();
    let _ = hello(&channel).await; // warm up code paths; the call itself is what is timed below
    let started = Instant::now();
    let status = hello(&channel).await.expect_err("a call with no instance succeeded");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("nobody-home"),
        "message does not name the service: {}",
        status.message()
    );
    // Fail fast means no waiting on any timeout (connect 2 s, call 5 s); speed is the bench's.
    assert!(elapsed < Duration::from_secs(1), "failing took {elapsed:?}: it waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_apply_with_no_calls_flowing() {
    init_logging();
    let store = MemoryStore::new();
    let channel = ClientBuilder::new(store.registry()).build("quiet").await.unwrap();
    assert!(channel.instances().is_empty());
    let running = start(&store, greeter_server("quiet")).await;
    let address = running.local_addrs()[0].to_string();
    eventually(Duration::from_secs(5), "the new instance without any call", || async {
        channel.instances().iter().any(|i| i.address == address).then_some(())
    })
    .await;
    running.stop().await.unwrap();
    eventually(Duration::from_secs(5), "the removal without any call", || async {
        channel.instances().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_instance_gets_no_more_calls() {
    init_logging();
    let store = MemoryStore::new();
    let staying = start(&store, greeter_server("rm")).await;
    let leaving = start(&store, greeter_server("rm")).await;
    let leaving_addr = leaving.local_addrs()[0].to_string();
    let channel = ClientBuilder::new(store.registry()).build("rm").await.unwrap();
    let registry = leaving.registry().unwrap().clone();
    for info in leaving.registrations() {
        registry.unregister(&info).await.unwrap();
    }
    eventually(Duration::from_secs(5), "the channel to drop the instance", || async {
        (channel.instances().len() == 1).then_some(())
    })
    .await;
    for _ in 0..20 {
        let message = hello(&channel).await.unwrap();
        assert_eq!(replying_address(&message), staying.local_addrs()[0].to_string());
        assert_ne!(replying_address(&message), leaving_addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_unhealthy_and_foreign_scheme_instances_are_not_picked() {
    init_logging();
    let store = MemoryStore::new();
    let registry = store.registry();
    let live = start(&store, greeter_server("filter")).await;
    let mut disabled = ServiceInfo::new("filter", "127.0.0.1:1");
    disabled.enable = false;
    let mut unhealthy = ServiceInfo::new("filter", "127.0.0.1:2");
    unhealthy.healthy = false;
    let mut http = ServiceInfo::new("filter", "127.0.0.1:3");
    http.scheme = "http".into();
    for info in [&disabled, &unhealthy, &http] {
        registry.register(info).await.unwrap();
    }
    let channel = ClientBuilder::new(store.registry()).build("filter").await.unwrap();
    let picked: Vec<String> = channel.instances().into_iter().map(|i| i.address).collect();
    assert_eq!(picked, vec![live.local_addrs()[0].to_string()]);
    for _ in 0..5 {
        hello(&channel).await.expect("only the live instance is called");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_trouble_keeps_the_last_instance_set() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, greeter_server("sticky")).await;
    let client_registry = std::sync::Arc::new(store.registry());
    let channel = ClientBuilder::new(client_registry.clone())
        .build("sticky")
        .await
        .unwrap();
    client_registry.close().await.unwrap(); // the channel's watch ends
    tokio::task::yield_now().await;
    assert_eq!(channel.instances().len(), 1, "a watch that ended emptied the channel");
    hello(&channel)
        .await
        .expect("calls still go to the last known instance");
    drop(running);
}

/// A client of fixed addresses (`jovian::registry::Static`) balances over them, routes around
/// one that is down, and a service it was not given fails fast, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_discovery_balances_over_fixed_addresses() {
    jovian_tests::init_logging();
    let store = jovian_registry_memory::MemoryStore::new();
    let a = jovian_tests::greeters::serve(
        &store,
        jovian_tests::greeters::server("fixed", jovian_tests::greeters::PeerEcho),
    )
    .await;
    let b = jovian_tests::greeters::serve(
        &store,
        jovian_tests::greeters::server("fixed", jovian_tests::greeters::PeerEcho),
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addresses = [
        a.local_addrs()[0].to_string(),
        b.local_addrs()[0].to_string(),
        closed.to_string(),
    ];
    let fixed = jovian::registry::Static::new().service("fixed", addresses.clone());
    let builder = jovian::ClientBuilder::new(fixed);
    let channel = builder.build("fixed").await.unwrap();
    assert_eq!(channel.instance_count(), 3);
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let reply = jovian_examples::GreeterClient::new(channel.clone())
            .say_hello(jovian_examples::HelloRequest { name: "x".into() })
            .await
            .expect("the closed address is routed around");
        answered.insert(reply.into_inner().message.split(' ').next().unwrap().to_owned());
    }
    assert_eq!(
        answered,
        addresses[..2].iter().cloned().collect(),
        "both live addresses answered"
    );
    let unknown = builder.build("elsewhere").await.unwrap();
    let status = jovian_examples::GreeterClient::new(unknown)
        .say_hello(jovian_examples::HelloRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("elsewhere"), "{status:?}");
}
