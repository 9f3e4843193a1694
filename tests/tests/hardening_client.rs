//! What a dead instance, an unlucky start or a hostile caller does to the client and the
//! server, in one process on the in-memory registry: round robin stays even around a dead
//! instance, fresh clients spread, concurrent failures are one ejection, a broken transport is
//! `Unavailable`, and neither junk paths nor address churn grow the metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use jovian::client::{ClientOptions, Ejection, RetryPolicy};
use jovian::{App, ClientBuilder, GrpcServer, Registrar, Running, ServiceChannel, ServiceInfo};
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{GreeterClient, HelloReply, HelloRequest, greeter_server, replying_address};
use jovian_registry_memory::MemoryStore;
use jovian_tests::{eventually, init_logging, within};
use tonic::{Code, Request, Response, Status};

/// A server whose registration outlives it: dropping the returned `Running` kills the server
/// (connections cut, listener closed) but leaves its entry, as a crash does until the lease
/// expires.
async fn start(store: &MemoryStore, server: GrpcServer) -> Running {
    App::new()
        .registry(store.registry_with_ttl(Duration::from_secs(60)))
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await
        .unwrap()
}

async fn channel(store: &MemoryStore, name: &str, options: ClientOptions) -> ServiceChannel {
    ClientBuilder::new(store.registry())
        .options(options)
        .build(name)
        .await
        .unwrap()
}

async fn call(channel: &ServiceChannel) -> Result<String, Status> {
    let reply = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "t".into() })
        .await?;
    Ok(replying_address(&reply.into_inner().message).to_owned())
}

fn addr(running: &Running) -> String {
    running.local_addrs()[0].to_string()
}

/// Failed on the old code: a dead instance's share fell to its neighbour in key order, which
/// took twice the calls of the third instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_around_a_dead_instance_stays_even() {
    init_logging();
    let store = MemoryStore::new();
    let mut servers = vec![
        start(&store, greeter_server("even")).await,
        start(&store, greeter_server("even")).await,
        start(&store, greeter_server("even")).await,
    ];
    let channel = channel(&store, "even", ClientOptions::default()).await;
    let killed = servers.remove(1);
    let killed_addr = addr(&killed);
    drop(killed);
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..600 {
        *spread.entry(call(&channel).await.unwrap()).or_default() += 1;
    }
    assert_eq!(channel.instance_count(), 3, "the dead instance is still registered");
    assert!(!spread.contains_key(&killed_addr), "{spread:?}");
    let counts: Vec<usize> = spread.values().copied().collect();
    let (low, high) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(
        counts.len() == 2 && (high - low) * 10 <= *high,
        "the two live instances are not within 10% of each other: {spread:?}"
    );
}

/// Failed on the old code: every new client started at the first instance in key order, so
/// one-call clients all called the same instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_clients_spread_their_first_calls() {
    init_logging();
    let store = MemoryStore::new();
    let servers = [
        start(&store, greeter_server("fresh")).await,
        start(&store, greeter_server("fresh")).await,
        start(&store, greeter_server("fresh")).await,
    ];
    let mut reached = BTreeSet::new();
    for _ in 0..30 {
        let channel = channel(&store, "fresh", ClientOptions::default()).await;
        reached.insert(call(&channel).await.unwrap());
    }
    let all: BTreeSet<String> = servers.iter().map(addr).collect();
    assert_eq!(
        reached, all,
        "30 one-call clients over 3 instances reached only {reached:?}"
    );
}

/// Accepts connections and closes them at once: every call on a connection to it fails
/// together, as calls in flight on an instance that dies do.
async fn slamming_listener() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    address
}

/// Failed on the old code: each of the concurrent failures doubled the back-off once more, so
/// eight failures in one instant ejected the instance for 2^7 times the base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_are_one_ejection() {
    init_logging();
    let store = MemoryStore::new();
    let _live = start(&store, greeter_server("episode")).await;
    let dying = slamming_listener().await;
    store
        .registry()
        .register(&ServiceInfo::new("episode", dying.clone()))
        .await
        .unwrap();
    // A connection the peer slams shut can fail as the request is being written ("broken
    // pipe"), and from the client that cannot be told apart from a request that got there; so
    // these calls may be retried, and the test is about the failures being one episode.
    let options = ClientOptions::default()
        .ejection(
            Ejection::default()
                .base(Duration::from_secs(1))
                .max(Duration::from_secs(30))
                .after_timeouts(3),
        )
        .retry(RetryPolicy::default().idempotent("/helloworld.Greeter/SayHello"));
    let channel = channel(&store, "episode", options).await;
    assert_eq!(channel.instance_count(), 2);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move { call(&channel).await })
        })
        .collect();
    for outcome in futures_util::future::join_all(calls).await {
        outcome
            .unwrap()
            .expect("calls that failed on the slammed instance moved to the live one");
    }
    assert_eq!(
        ejections("episode", &dying),
        1,
        "the failures of one instant are one episode"
    );
    assert_eq!(channel.ejected().len(), 1);
    eventually(
        Duration::from_millis(2500),
        "the instance to be readmitted after one base back-off",
        || async { channel.ejected().is_empty().then_some(()) },
    )
    .await;
}

fn ejections(service: &str, instance: &str) -> u64 {
    jovian::metrics::metrics()
        .client_ejections
        .with_label_values(&[service, instance])
        .get()
}

/// Tells the test when a call has arrived, then never answers.
#[derive(Clone)]
struct Swallow(Arc<tokio::sync::Notify>);

#[tonic::async_trait]
impl Greeter for Swallow {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Failed on the old code: the call reached the application as `Unknown: transport error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_dies_with_its_instance_is_unavailable() {
    init_logging();
    let store = MemoryStore::new();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let server = start(
        &store,
        GrpcServer::new("dies").add_service(GreeterServer::new(Swallow(arrived.clone()))),
    )
    .await;
    let channel = channel(&store, "dies", ClientOptions::default()).await;
    let in_flight = tokio::spawn(async move { call(&channel).await });
    within(
        Duration::from_secs(5),
        "the call to reach the server",
        arrived.notified(),
    )
    .await;
    drop(server);
    let status = within(Duration::from_secs(5), "the call to fail", in_flight)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Lines of `/metrics` that belong to `service` (the client metrics label it).
fn series(service: &str) -> Vec<String> {
    let needle = format!("service=\"{service}\"");
    jovian::metrics::render()
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// The lines of `/metrics` where junk calls could land: server series (`grpc_server_*`) of
/// anything but the services real servers offer, which the other tests of this binary call.
fn junk_series() -> Vec<String> {
    jovian::metrics::render()
        .lines()
        .filter(|line| {
            line.starts_with("grpc_server_")
                && !line.contains("grpc_service=\"helloworld.Greeter\"")
                && !line.contains("grpc_service=\"grpc.health.v1.Health\"")
        })
        .map(str::to_owned)
        .collect()
}

/// Failed on the old code: every path a caller made up became a label value, so 100k junk
/// calls grew the server's memory and its `/metrics` without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_paths_do_not_grow_the_server_metrics() {
    init_logging();
    let store = MemoryStore::new();
    let server = start(&store, greeter_server("junk")).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addr(&server)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "real".into() })
        .await
        .unwrap();
    let junk_call = |i: usize| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            let path = format!("/junk{}.Service/Method{i}", i % 7).parse().unwrap();
            let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
            grpc.unary(Request::new(HelloRequest::default()), path, codec).await
        }
    };
    for i in 0..1000 {
        let status = junk_call(i).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    let before = junk_series();
    // Only those lines: the other tests of this binary add their own series meanwhile.
    let size_of = |lines: &[String]| lines.iter().map(String::len).sum::<usize>();
    let size_before = size_of(&before);
    futures_util::stream::iter(1000..100_000)
        .for_each_concurrent(64, |i| async move {
            let _ = junk_call(i).await;
        })
        .await;
    let after = junk_series();
    assert_eq!(after.len(), before.len(), "new series after junk calls: {after:#?}");
    let grown = size_of(&after).saturating_sub(size_before);
    assert!(
        grown < 1024,
        "the junk-reachable lines of /metrics grew by {grown} bytes"
    );
    assert!(
        after.iter().any(|l| l.starts_with("grpc_server_handled_total")
            && l.contains("grpc_method=\"unknown\"")
            && l.contains("grpc_code=\"Unimplemented\"")),
        "junk calls are counted, as one unknown method: {after:#?}"
    );
    let real =
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"SayHello\",grpc_service=\"helloworld.Greeter\"";
    let metrics = jovian::metrics::render();
    assert!(metrics.contains(real), "real methods keep their label: {metrics}");
}

/// Failed on the old code: the series of every instance a client had ever called stayed, so
/// churning addresses grew the client's metrics without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_churn_does_not_grow_the_client_metrics() {
    init_logging();
    let store = MemoryStore::new();
    let _live = start(&store, greeter_server("churn")).await;
    let channel = channel(&store, "churn", ClientOptions::default()).await;
    let registry = store.registry();
    let mut baseline = None;
    for i in 0..1000usize {
        // Loopback addresses where nobody listens: each refuses, leaving failure series.
        let dead = ServiceInfo::new("churn", format!("127.0.{}.{}:9", i / 250, i % 250 + 1));
        registry.register(&dead).await.unwrap();
        eventually(Duration::from_secs(5), "the new instance", || async {
            (channel.instance_count() == 2).then_some(())
        })
        .await;
        for _ in 0..3 {
            call(&channel).await.unwrap();
        }
        registry.unregister(&dead).await.unwrap();
        eventually(Duration::from_secs(5), "the instance to go", || async {
            (channel.instance_count() == 1).then_some(())
        })
        .await;
        if i == 9 {
            baseline = Some(series("churn").len());
        }
    }
    let after = series("churn");
    assert_eq!(Some(after.len()), baseline, "series after 1,000 churns: {after:#?}");
    assert!(
        after
            .iter()
            .all(|l| !l.contains("127.0.0.1:9") && !l.contains("127.0.3.250:9")),
        "series of instances that left remain: {after:#?}"
    );
}

/// Lines of `/metrics` of the client's per-method family that junk paths could reach (the
/// other tests of this binary add series of their own meanwhile).
fn client_junk_series() -> Vec<String> {
    jovian::metrics::render()
        .lines()
        .filter(|line| line.starts_with("grpc_client_"))
        .filter(|line| line.contains("grpc_service=\"clientjunk") || line.contains("grpc_service=\"unknown\""))
        .map(str::to_owned)
        .collect()
}

/// Paths a caller makes up through a `ServiceChannel` are labelled only up to a bound, then as
/// one `unknown` method: 10,000 junk paths cannot grow the client's metrics without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_paths_do_not_grow_the_client_metrics() {
    init_logging();
    let store = MemoryStore::new();
    let _server = start(&store, greeter_server("clientjunk")).await;
    let channel = channel(&store, "clientjunk", ClientOptions::default()).await;
    let junk_call = |i: usize| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            let path = format!("/clientjunk{i}.Service/Method").parse().unwrap();
            let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
            grpc.unary(Request::new(HelloRequest::default()), path, codec).await
        }
    };
    for i in 0..200 {
        let status = junk_call(i).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    let before = client_junk_series();
    futures_util::stream::iter(200..10_000)
        .for_each_concurrent(64, |i| async move {
            let _ = junk_call(i).await;
        })
        .await;
    let after = client_junk_series();
    assert_eq!(after.len(), before.len(), "new client series after junk calls");
    let labelled: BTreeSet<&str> = after
        .iter()
        .filter_map(|l| l.split("grpc_service=\"").nth(1)?.split('"').next())
        .filter(|s| s.starts_with("clientjunk"))
        .collect();
    assert!(labelled.len() <= 64, "{} made-up services labelled", labelled.len());
    assert!(
        after
            .iter()
            .any(|l| l.contains("grpc_method=\"unknown\"") && l.contains("grpc_code=\"Unimplemented\"")),
        "junk past the bound is counted, as one unknown method"
    );
}

/// Answers nothing, ever, but tells the test each call arrived.
#[derive(Clone)]
struct Hang(Arc<tokio::sync::Notify>);

#[tonic::async_trait]
impl Greeter for Hang {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// An instance whose link goes silent with a call in flight (a frozen process, a partition)
/// is noticed by keep-alive, not by the call's deadline: the call fails `Unavailable` saying
/// so, long before its 60 s deadline, and the instance is ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_noticed_by_keep_alive_and_ejected() {
    init_logging();
    let store = MemoryStore::new();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let hanging = App::new()
        .governor(None)
        .serve(GrpcServer::new("silent").add_service(GreeterServer::new(Hang(arrived.clone()))))
        .start()
        .await
        .unwrap();
    let proxy = jovian_tests::proxy::Proxy::start(hanging.local_addrs()[0]).await;
    let _healthy = start(&store, greeter_server("silent")).await;
    let registry = store.registry();
    let silent = ServiceInfo::new("silent", proxy.addr().to_string());
    registry.register(&silent).await.unwrap();
    let options = ClientOptions::default().timeout(Duration::from_secs(60));
    let channel = channel(&store, "silent", options).await;
    eventually(Duration::from_secs(5), "both instances", || async {
        (channel.instance_count() == 2).then_some(())
    })
    .await;
    // One call after another: calls to the healthy instance come back, the first to the
    // silent one stays in flight.
    let in_flight = {
        let channel = channel.clone();
        tokio::spawn(async move {
            loop {
                match call(&channel).await {
                    Ok(_) => continue,
                    Err(status) => return status,
                }
            }
        })
    };
    within(
        Duration::from_secs(10),
        "a call to reach the silent instance",
        arrived.notified(),
    )
    .await;
    proxy.blackhole();
    let status = within(Duration::from_secs(30), "the call to fail", in_flight)
        .await
        .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("keep-alive"), "{status:?}");
    assert_eq!(
        channel.ejected().into_iter().map(|i| i.address).collect::<Vec<_>>(),
        [silent.address]
    );
}
