//! Client-side balancing over real in-process servers: policies, filters, zones, ejection of
//! dead instances, transparent and idempotent retries, and how fast membership changes land.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jovian::client::{ClientOptions, Ejection, Filter, HashKey, Policy};
use jovian::{App, ClientBuilder, Discovery, GrpcServer, Registrar, Running, ServiceChannel, ServiceInfo};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};
use jovian_registry_memory::MemoryStore;
use jovian_tests::{eventually, init_logging};
use tonic::Code;

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

async fn start(store: &MemoryStore, server: GrpcServer) -> Running {
    App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await
        .unwrap()
}

async fn start_in(store: &MemoryStore, name: &str, f: impl FnOnce(ServiceInfo) -> ServiceInfo) -> Running {
    start(store, greeter_server(name).map_info(f)).await
}

async fn channel(store: &MemoryStore, name: &str, options: ClientOptions) -> ServiceChannel {
    ClientBuilder::new(store.registry())
        .options(options)
        .build(name)
        .await
        .unwrap()
}

fn with_policy(policy: Policy) -> ClientOptions {
    ClientOptions::default().policy(policy)
}

async fn call(channel: &ServiceChannel, key: Option<&str>) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
    if let Some(key) = key {
        request.metadata_mut().insert("x-jovian-hash-key", key.parse().unwrap());
    }
    let reply = GreeterClient::new(channel.clone()).say_hello(request).await?;
    Ok(replying_address(&reply.into_inner().message).to_owned())
}

async fn spread(channel: &ServiceChannel, calls: usize) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for _ in 0..calls {
        *spread.entry(call(channel, None).await.unwrap()).or_default() += 1;
    }
    spread
}

fn addr(running: &Running) -> String {
    running.local_addrs()[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_within_tolerance() {
    init_logging();
    let store = MemoryStore::new();
    let _servers = [
        start(&store, greeter_server("rand")).await,
        start(&store, greeter_server("rand")).await,
        start(&store, greeter_server("rand")).await,
    ];
    let channel = channel(&store, "rand", with_policy(Policy::Random)).await;
    let spread = spread(&channel, 600).await;
    assert_eq!(spread.len(), 3);
    // Binomial(600, 1/3): the mean is 200 and 140..260 is more than 6 standard deviations.
    assert!(spread.values().all(|&n| (140..=260).contains(&n)), "{spread:?}");
}

/// Answers every call after a fixed delay.
#[derive(Clone)]
struct Slow(Duration);

#[tonic::async_trait]
impl jovian_examples::proto::greeter_server::Greeter for Slow {
    async fn say_hello(
        &self,
        request: tonic::Request<jovian_examples::HelloRequest>,
    ) -> Result<tonic::Response<jovian_examples::HelloReply>, tonic::Status> {
        let local = request.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tokio::time::sleep(self.0).await;
        Ok(tonic::Response::new(jovian_examples::HelloReply {
            message: format!("Hello from {local}"),
        }))
    }
}

/// P2C's defining property: of two choices, the less loaded (fewer calls in flight, then the
/// lower latency). A slow instance loses every pair once it has answered once; random or round
/// robin would still give it a third of the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_avoids_the_slow_instance() {
    init_logging();
    let store = MemoryStore::new();
    let slow =
        GrpcServer::new("slow").add_service(jovian_examples::GreeterServer::new(Slow(Duration::from_millis(100))));
    let slow = start(&store, slow).await;
    let _fast = [
        start(&store, greeter_server("slow")).await,
        start(&store, greeter_server("slow")).await,
    ];
    let channel = channel(&store, "slow", with_policy(Policy::PowerOfTwoChoices)).await;
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        *spread.entry(call(&channel, None).await.unwrap()).or_default() += 1;
    }
    let to_slow = spread.get(&addr(&slow)).copied().unwrap_or(0);
    assert!(
        to_slow <= 10,
        "the slow instance took {to_slow} of 300 calls: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_spreads_concurrent_load() {
    init_logging();
    let store = MemoryStore::new();
    let _servers = [
        start(&store, greeter_server("p2c")).await,
        start(&store, greeter_server("p2c")).await,
        start(&store, greeter_server("p2c")).await,
    ];
    let channel = channel(&store, "p2c", with_policy(Policy::PowerOfTwoChoices)).await;
    let counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Arc::default();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (channel, counts) = (channel.clone(), counts.clone());
            tokio::spawn(async move {
                for _ in 0..75 {
                    let server = call(&channel, None).await.unwrap();
                    *counts.lock().unwrap().entry(server).or_default() += 1;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.values().sum::<usize>(), 600);
    assert!(
        counts.len() == 3 && counts.values().all(|&n| n >= 60),
        "every instance takes a fair share: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured_and_weight_zero_takes_nothing() {
    init_logging();
    let store = MemoryStore::new();
    let heavy = start_in(&store, "wrr", |i| i.with_weight(100)).await;
    let light = start_in(&store, "wrr", |i| i.with_weight(50)).await;
    let idle = start_in(&store, "wrr", |i| i.with_weight(0)).await;
    let channel = channel(&store, "wrr", with_policy(Policy::WeightedRoundRobin)).await;
    let weighted = spread(&channel, 300).await;
    let (h, l) = (
        weighted[&addr(&heavy)],
        weighted.get(&addr(&light)).copied().unwrap_or(0),
    );
    assert!(
        !weighted.contains_key(&addr(&idle)),
        "weight 0 took calls: {weighted:?}"
    );
    assert!(
        (195..=205).contains(&h) && (95..=105).contains(&l),
        "100:50 should give 2:1, got {weighted:?}"
    );

    // A new weight (as from a governance override or a re-registration) takes effect.
    let registry = heavy.registry().unwrap().clone();
    let mut reweighted = heavy.registrations()[0].clone();
    reweighted.weight = 50;
    registry.register(&reweighted).await.unwrap();
    eventually(Duration::from_secs(5), "the new weight", || async {
        channel
            .instances()
            .iter()
            .any(|i| i.address == addr(&heavy) && i.weight == 50)
            .then_some(())
    })
    .await;
    let even = spread(&channel, 300).await;
    assert!(
        (140..=160).contains(&even[&addr(&heavy)]),
        "50:50 should split evenly, got {even:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_keys_and_remaps_about_one_nth() {
    init_logging();
    let store = MemoryStore::new();
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(start(&store, greeter_server("hash")).await);
    }
    let channel = channel(&store, "hash", with_policy(Policy::ConsistentHash(HashKey::default()))).await;
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let placement = |channel: ServiceChannel, keys: Vec<String>| async move {
        let mut placed = HashMap::new();
        for key in keys {
            placed.insert(key.clone(), call(&channel, Some(&key)).await.unwrap());
        }
        placed
    };
    let before = placement(channel.clone(), keys.clone()).await;
    assert_eq!(
        placement(channel.clone(), keys.clone()).await,
        before,
        "a key moved with nothing changed"
    );
    let per_instance = before.values().fold(HashMap::<&String, usize>::new(), |mut m, s| {
        *m.entry(s).or_default() += 1;
        m
    });
    assert!(
        per_instance.len() == 4 && per_instance.values().all(|&n| n >= 50),
        "keys spread: {per_instance:?}"
    );

    let joined = start(&store, greeter_server("hash")).await;
    eventually(Duration::from_secs(5), "the fifth instance", || async {
        (channel.instances().len() == 5).then_some(())
    })
    .await;
    let after_join = placement(channel.clone(), keys.clone()).await;
    let moved: Vec<&String> = keys.iter().filter(|k| before[*k] != after_join[*k]).collect();
    assert!(
        moved.iter().all(|k| after_join[*k] == addr(&joined)),
        "keys moved between old instances"
    );
    let share = moved.len() as f64 / keys.len() as f64;
    assert!(
        (0.08..=0.35).contains(&share),
        "a fifth instance took {share:.2} of the keys, expected about 0.2"
    );

    let leaving = servers.pop().unwrap();
    let gone = addr(&leaving);
    leaving.stop().await.unwrap();
    eventually(Duration::from_secs(5), "the instance to leave", || async {
        (channel.instances().len() == 4).then_some(())
    })
    .await;
    let after_leave = placement(channel.clone(), keys.clone()).await;
    for key in &keys {
        if after_join[key] != gone {
            assert_eq!(
                after_leave[key], after_join[key],
                "{key} moved though its instance stayed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_filtered_service_fails_fast_naming_service_and_filter() {
    init_logging();
    let store = MemoryStore::new();
    let _green = start_in(&store, "filtered", |mut i| {
        i.group = "green".into();
        i
    })
    .await;
    let mut options = ClientOptions::default();
    options.filter.group = Some("blue".into());
    let channel = channel(&store, "filtered", options).await;
    let _ = call(&channel, None).await;
    let started = Instant::now();
    let status = call(&channel, None)
        .await
        .expect_err("a filtered-out instance was called");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("`filtered`") && status.message().contains("group blue"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("1 registered"), "{}", status.message());
    // Fail fast means no waiting on any timeout (connect 2 s, call 5 s); speed is the bench's.
    assert!(elapsed < Duration::from_secs(1), "failing took {elapsed:?}: it waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_deployment_and_version_filters_route_as_configured() {
    init_logging();
    let store = MemoryStore::new();
    let blue_v2 = start_in(&store, "sel", |mut i| {
        (i.group, i.deployment, i.version) = ("blue".into(), "internal".into(), "v2".into());
        i
    })
    .await;
    let _blue_v1 = start_in(&store, "sel", |mut i| {
        (i.group, i.deployment, i.version) = ("blue".into(), "internal".into(), "v1".into());
        i
    })
    .await;
    let _green_v2 = start_in(&store, "sel", |mut i| {
        (i.group, i.deployment, i.version) = ("green".into(), "internal".into(), "v2".into());
        i
    })
    .await;
    let options = ClientOptions::default().filter(Filter::default().group("blue").deployment("internal").version("v2"));
    let channel = channel(&store, "sel", options).await;
    let spread = spread(&channel, 12).await;
    assert_eq!(spread, BTreeMap::from([(addr(&blue_v2), 12)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_preference_with_fallback() {
    init_logging();
    let store = MemoryStore::new();
    let near_a = start_in(&store, "zoned", |i| i.with_zone("z1")).await;
    let near_b = start_in(&store, "zoned", |i| i.with_zone("z1")).await;
    let far = start_in(&store, "zoned", |i| i.with_zone("z2")).await;
    let prefer = |min| {
        let mut options = ClientOptions::default();
        options.filter.zone = Some("z1".into());
        options.filter.min_zone_instances = min;
        options
    };
    let local = channel(&store, "zoned", prefer(2)).await;
    let spread_local = spread(&local, 20).await;
    assert_eq!(spread_local.keys().cloned().collect::<Vec<_>>().len(), 2);
    assert!(
        !spread_local.contains_key(&addr(&far)),
        "a far instance was used: {spread_local:?}"
    );

    let demanding = channel(&store, "zoned", prefer(3)).await;
    assert_eq!(
        spread(&demanding, 30).await.len(),
        3,
        "too few local instances: every zone is used"
    );

    near_a.stop().await.unwrap();
    eventually(Duration::from_secs(5), "the fallback to every zone", || async {
        (local.instances().len() == 2 && local.instances().iter().any(|i| i.zone == "z2")).then_some(())
    })
    .await;
    let spread_fallback = spread(&local, 20).await;
    assert_eq!(spread_fallback.len(), 2, "{spread_fallback:?}");
    assert!(spread_fallback.contains_key(&addr(&far)) && spread_fallback.contains_key(&addr(&near_b)));
}

/// An address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_moves_the_call_and_ejects_the_instance() {
    init_logging();
    let store = MemoryStore::new();
    let live = start(&store, greeter_server("refused")).await;
    let registry = store.registry();
    let dead = ServiceInfo::new("refused", dead_address());
    registry.register(&dead).await.unwrap();
    // No method is marked idempotent: only calls that never reached an instance may move.
    let channel = channel(&store, "refused", ClientOptions::default()).await;
    for _ in 0..20 {
        assert_eq!(
            call(&channel, None).await.expect("the call moved to the live instance"),
            addr(&live)
        );
    }
    assert_eq!(
        channel.ejected().iter().map(|i| i.address.clone()).collect::<Vec<_>>(),
        vec![dead.address]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_instance_is_never_ejected() {
    init_logging();
    let store = MemoryStore::new();
    let registry = store.registry();
    registry
        .register(&ServiceInfo::new("last", dead_address()))
        .await
        .unwrap();
    let channel = channel(&store, "last", ClientOptions::default()).await;
    for _ in 0..3 {
        let status = call(&channel, None).await.expect_err("a dead instance answered");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("no available instance"),
            "the real failure is reported: {status}"
        );
    }
    assert!(channel.ejected().is_empty(), "the only instance was ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_instance_is_readmitted_when_its_back_off_ends() {
    init_logging();
    let store = MemoryStore::new();
    let _live = start(&store, greeter_server("readmit")).await;
    let port_owner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let revived_addr: SocketAddr = port_owner.local_addr().unwrap();
    drop(port_owner);
    store
        .registry()
        .register(&ServiceInfo::new("readmit", revived_addr.to_string()))
        .await
        .unwrap();
    let options = ClientOptions::default().ejection(
        Ejection::default()
            .after_timeouts(3)
            .base(Duration::from_millis(300))
            .max(Duration::from_secs(1)),
    );
    let channel = channel(&store, "readmit", options).await;
    for _ in 0..4 {
        call(&channel, None).await.unwrap();
    }
    assert_eq!(channel.ejected().len(), 1);
    // The instance comes back at the same address, without the registry saying anything new.
    let _revived = App::new()
        .serve(greeter_server("readmit").bind(revived_addr))
        .start()
        .await
        .unwrap();
    let served_by_revived = eventually(
        Duration::from_secs(3),
        "calls to reach the revived instance",
        || async { (call(&channel, None).await.unwrap() == revived_addr.to_string()).then_some(()) },
    );
    served_by_revived.await;
    assert!(channel.ejected().is_empty());
}

/// Callers in a loop until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(channel: &ServiceChannel, callers: usize, served: Arc<std::sync::Mutex<Vec<(Instant, String)>>>) -> Self {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let callers = (0..callers)
            .map(|_| {
                let (channel, stop, ok, failed, served) = (
                    channel.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    served.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match call(&channel, None).await {
                            Ok(server) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                served.lock().unwrap().push((Instant::now(), server));
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            callers,
        }
    }

    async fn wait_for_calls(&self, more_than: usize) {
        eventually(Duration::from_secs(10), "calls to flow", || async {
            (self.ok.load(Ordering::Relaxed) > more_than).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for caller in self.callers {
            caller.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

async fn kill_one_under_load(idempotent: bool) -> (usize, usize, usize) {
    let store = MemoryStore::new();
    let survivor = start(&store, greeter_server("kill")).await;
    let victim = start(&store, greeter_server("kill")).await;
    let victim_addr = addr(&victim);
    let mut options = ClientOptions::default();
    if idempotent {
        options.retry.idempotent_methods.insert(SAY_HELLO.into());
    }
    options.ejection.base = Duration::from_secs(30);
    let channel = channel(&store, "kill", options).await;
    let served = Arc::default();
    let load = Load::start(&channel, 8, Arc::clone(&served));
    load.wait_for_calls(200).await;
    drop(victim); // the server dies on the spot: listener closed, connections cut, still registered
    let killed_at = Instant::now();
    eventually(Duration::from_secs(5), "the dead instance to be ejected", || async {
        channel.ejected().iter().any(|i| i.address == victim_addr).then_some(())
    })
    .await;
    let ejected_at = Instant::now();
    let before = load.ok.load(Ordering::Relaxed);
    load.wait_for_calls(before + 300).await;
    let (ok, failed) = load.finish().await;
    let late: usize = served
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, server)| *at > ejected_at && *server == victim_addr)
        .count();
    assert_eq!(late, 0, "the ejected instance still received calls");
    assert!(
        store.registry().list("kill").await.unwrap().len() == 2,
        "the dead instance was still registered throughout"
    );
    tracing::info!(?killed_at, ok, failed, "load finished");
    drop(survivor);
    (ok, failed, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_under_load_fails_no_idempotent_call() {
    init_logging();
    let (ok, failed, _) = kill_one_under_load(true).await;
    assert_eq!(failed, 0, "{failed} idempotent calls failed out of {}", ok + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_under_load_fails_at_most_the_calls_in_flight_on_it() {
    init_logging();
    let (ok, failed, _) = kill_one_under_load(false).await;
    assert!(
        failed <= 8,
        "{failed} calls failed with only 8 callers in flight; ok {ok}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_under_load_gets_calls_and_one_unregistered_none() {
    init_logging();
    let store = MemoryStore::new();
    let _first = start(&store, greeter_server("join")).await;
    let channel = channel(&store, "join", ClientOptions::default()).await;
    let served = Arc::default();
    let load = Load::start(&channel, 4, Arc::clone(&served));
    load.wait_for_calls(100).await;
    // Bind and serve first, register last, and time from the registration.
    let registry = store.registry();
    let unregistered = App::new().serve(greeter_server("join")).start().await.unwrap();
    let joined_addr = addr(&unregistered);
    let info = ServiceInfo::new("join", joined_addr.clone());
    let registered_at = Instant::now();
    registry.register(&info).await.unwrap();
    // How fast is the bench's to measure (propagation); here it only has to happen.
    // Then it stays in the rotation, not one stray call: it goes on taking its share.
    let served_by_joined = || {
        let served = served.lock().unwrap();
        served
            .iter()
            .filter(|(at, s)| *s == joined_addr && *at >= registered_at)
            .count()
    };
    eventually(Duration::from_secs(5), "a call to the new instance", || async {
        (served_by_joined() >= 1).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "ten calls to the new instance", || async {
        (served_by_joined() >= 10).then_some(())
    })
    .await;

    registry.unregister(&info).await.unwrap();
    eventually(Duration::from_secs(2), "the removal to reach the client", || async {
        (!channel.instances().iter().any(|i| i.address == joined_addr)).then_some(())
    })
    .await;
    let removed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, failed) = load.finish().await;
    let after: usize = served
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, s)| *s == joined_addr && *at > removed_at)
        .count();
    assert_eq!(after, 0, "an unregistered instance still got calls");
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_can_wait_for_a_first_instance() {
    init_logging();
    let store = MemoryStore::new();
    let later = store.clone();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        start(&later, greeter_server("waited")).await
    });
    let options = ClientOptions::default().wait_for_instances(Duration::from_secs(5));
    let channel = channel(&store, "waited", options).await;
    call(&channel, None)
        .await
        .expect("the first call after waiting succeeds");
    drop(server.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_instances_with_a_ca_client_certificate_and_server_name() {
    use jovian::ServerTls;
    use jovian::client::ClientTls;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = jovian_tests::pki::Pki::generate(dir.path());
    let store = MemoryStore::new();
    let tls = ServerTls::new(&pki.server_cert, &pki.server_key).client_ca(&pki.ca);
    let server = start(&store, greeter_server("secure").tls(tls)).await;
    let client_tls = ClientTls::default()
        .ca(&pki.ca)
        .identity(&pki.client_cert, &pki.client_key)
        .server_name("localhost");
    let mut options = ClientOptions::default();
    options.connection.tls = Some(client_tls.clone());
    let secure = channel(&store, "secure", options).await;
    assert_eq!(call(&secure, None).await.expect("a TLS call"), addr(&server));

    let plain = channel(&store, "secure", ClientOptions::default()).await;
    assert!(
        call(&plain, None).await.is_err(),
        "a plaintext client reached a TLS server"
    );
    let mut without_cert = ClientOptions::default();
    without_cert.connection.tls = Some(ClientTls::default().ca(&pki.ca).server_name("localhost"));
    let anonymous = channel(&store, "secure", without_cert).await;
    assert!(
        call(&anonymous, None).await.is_err(),
        "a client without a certificate got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tls_files_fail_the_start_and_the_build_naming_the_key() {
    use jovian::ServerTls;
    use jovian::client::ClientTls;
    init_logging();
    let store = MemoryStore::new();
    let tls = ServerTls::new("/nonexistent/cert.pem", "/nonexistent/key.pem");
    let error = App::new()
        .serve(greeter_server("badtls").tls(tls))
        .start()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&error, jovian::Error::Config { key, .. } if key == "servers.badtls.tls.cert"),
        "{error}"
    );
    // A certificate without its key is an error, not a client without a certificate.
    for (tls, key) in [
        (ClientTls::default().ca("/nonexistent/ca.pem"), "clients.badtls.tls.ca"),
        (
            {
                // A certificate without its key.
                let mut tls = ClientTls::default();
                tls.cert = Some("/nonexistent/cert.pem".into());
                tls
            },
            "clients.badtls.tls.key",
        ),
    ] {
        let mut options = ClientOptions::default();
        options.connection.tls = Some(tls);
        let error = ClientBuilder::new(store.registry())
            .options(options)
            .build("badtls")
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, jovian::Error::Config { key: k, .. } if k == key),
            "{key}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_instance_is_readmitted_at_once_when_the_registry_reannounces_it() {
    init_logging();
    let store = MemoryStore::new();
    let _live = start(&store, greeter_server("reannounce")).await;
    let registry = store.registry();
    let dead = ServiceInfo::new("reannounce", dead_address()).with_metadata("started_at", "1");
    registry.register(&dead).await.unwrap();
    let options = ClientOptions::default().ejection(
        Ejection::default()
            .after_timeouts(3)
            .base(Duration::from_secs(60))
            .max(Duration::from_secs(60)),
    );
    let channel = channel(&store, "reannounce", options).await;
    for _ in 0..4 {
        call(&channel, None).await.unwrap();
    }
    assert_eq!(channel.ejected().len(), 1, "the dead instance is ejected for a minute");
    // The process restarts at the same address and registers again (a new start time).
    registry
        .register(&dead.clone().with_metadata("started_at", "2"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(2),
        "the re-announced instance to be re-admitted",
        || async { channel.ejected().is_empty().then_some(()) },
    )
    .await;
}
