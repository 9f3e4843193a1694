//! The App lifecycle on the in-memory registry: what gets registered, hook order, health, and
//! an orderly stop that loses no call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jovian::{App, ClientBuilder, Discovery, Error, Registrar, Registry, Stage};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{Announcing, server};
use jovian_tests::{eventually, init_logging, within};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn direct_hello(addr: SocketAddr, name: &str) -> Result<String, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest { name: name.into() })
        .await?;
    Ok(reply.into_inner().message)
}

async fn health(addr: SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap();
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_bound_address_once_serving() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .name("svc-app")
        .registry(store.registry())
        .serve(greeter_server("bound"))
        .start()
        .await
        .unwrap();
    let addr = running.local_addr("bound").unwrap();
    assert_ne!(addr.port(), 0, "port 0 resolved to the bound port");
    let listed = store.registry().list("bound").await.unwrap();
    let info = listed
        .get(&format!("grpc://{addr}"))
        .expect("the bound address is registered");
    assert_eq!(info.app_id, "svc-app");
    assert_eq!(info.kind, jovian::service::EntryKind::Provider);
    assert!(
        info.metadata.contains_key(jovian::app::STARTED_AT),
        "registrations carry the process start time"
    );
    assert!(direct_hello(addr, "x").await.unwrap().contains(&addr.to_string()));
    assert_eq!(health(addr).await, ServingStatus::Serving);
    running.stop().await.unwrap();
    assert!(
        store.registry().list("bound").await.unwrap().is_empty(),
        "stop unregisters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertise_address_is_registered_instead_of_the_bound_one() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .registry(store.registry())
        .serve(
            greeter_server("adv")
                .advertise("greeter.internal:7000")
                .map_info(|i| i.with_zone("z9")),
        )
        .start()
        .await
        .unwrap();
    let listed = store.registry().list("adv").await.unwrap();
    let info = listed
        .get("grpc://greeter.internal:7000")
        .expect("the advertised address is registered");
    assert_eq!(info.zone, "z9");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_everywhere_without_advertise_is_a_config_error() {
    init_logging();
    let store = MemoryStore::new();
    let error = App::new()
        .registry(store.registry())
        .serve(greeter_server("anywhere").bind("0.0.0.0:0".parse().unwrap()))
        .start()
        .await
        .expect_err("started without an address to register");
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "servers.anywhere.advertise"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_governor_serving() {
    init_logging();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        jovian::Config::from_toml(&format!("[governor]\nenabled = true\naddress = \"0.0.0.0:{port}\"")).unwrap();
    let store = MemoryStore::new();
    let error = App::from_config(config)
        .registry(store.registry())
        .serve(greeter_server("governed"))
        .start()
        .await
        .expect_err("started a governor on every interface without an address to register");
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "governor.advertise"),
        "{error}"
    );
    // The governor bound its port before the start failed: the failed start gave it back.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(
        refused.is_err(),
        "the governor of a failed start still answers on port {port}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_an_error_naming_the_address() {
    init_logging();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let store = MemoryStore::new();
    let error = App::new()
        .registry(store.registry())
        .serve(greeter_server("taken").bind(addr))
        .start()
        .await
        .err()
        .unwrap();
    assert!(matches!(error, Error::Bind { .. }), "{error}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    assert!(store.registry().list("taken").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_around_registration() {
    init_logging();
    let store = MemoryStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut app = App::new().registry(store.registry()).serve(greeter_server("hooks"));
    for stage in [
        Stage::AfterStop,
        Stage::BeforeStop,
        Stage::AfterStart,
        Stage::BeforeStart,
    ] {
        let (log, registry) = (log.clone(), store.registry());
        app = app.hook(stage, move || async move {
            let registered = registry.list("hooks").await.map(|e| e.len()).unwrap_or(0);
            log.lock().unwrap().push((stage, registered));
            Ok(())
        });
    }
    app.start().await.unwrap().stop().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (Stage::BeforeStart, 0),
            (Stage::AfterStart, 1),
            (Stage::BeforeStop, 1),
            (Stage::AfterStop, 0)
        ],
        "stage order, with how many instances were registered at each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_hook_aborts_the_start() {
    init_logging();
    let store = MemoryStore::new();
    let error = App::new()
        .registry(store.registry())
        .serve(greeter_server("hookfail"))
        .hook(Stage::AfterStart, || async { Err("not today".into()) })
        .start()
        .await
        .expect_err("start succeeded");
    assert!(
        matches!(
            error,
            Error::Hook {
                stage: Stage::AfterStart,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        store.registry().list("hookfail").await.unwrap().is_empty(),
        "a failed start leaves nothing registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_unregisters_and_goes_not_serving_before_it_stops_serving() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .registry(store.registry())
        .drain_delay(Duration::from_millis(500))
        .serve(greeter_server("order"))
        .start()
        .await
        .unwrap();
    let addr = running.local_addrs()[0];
    let observer = store.registry();
    let mut watch = observer.watch("order").await.unwrap();
    let stopping = tokio::spawn(running.stop());
    within(
        Duration::from_secs(2),
        "the unregistration",
        watch.wait_for(|e| e.is_empty()),
    )
    .await
    .unwrap();
    assert_eq!(
        health(addr).await,
        ServingStatus::NotServing,
        "health flips before serving stops"
    );
    direct_hello(addr, "x")
        .await
        .expect("the server still serves during the drain delay");
    stopping.await.unwrap().unwrap();
    assert!(direct_hello(addr, "x").await.is_err(), "the server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_finish_during_a_graceful_stop() {
    init_logging();
    let store = MemoryStore::new();
    let greeter = Announcing::default();
    let running = App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(server("inflight", greeter.clone()))
        .start()
        .await
        .unwrap();
    let addr = running.local_addrs()[0];
    let call = tokio::spawn(direct_hello(addr, "600"));
    within(
        Duration::from_secs(10),
        "the call reaching its handler",
        greeter.started.notified(),
    )
    .await;
    running.stop().await.unwrap();
    assert!(
        call.await
            .unwrap()
            .expect("the in-flight call was cut off")
            .starts_with("Hello 600")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_shutdown_deadline_are_cut_off_and_reported() {
    init_logging();
    let store = MemoryStore::new();
    let greeter = Announcing::default();
    let running = App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .shutdown_deadline(Duration::from_millis(200))
        .serve(server("deadline", greeter.clone()))
        .start()
        .await
        .unwrap();
    let addr = running.local_addrs()[0];
    let call = tokio::spawn(direct_hello(addr, "10000"));
    within(
        Duration::from_secs(10),
        "the call reaching its handler",
        greeter.started.notified(),
    )
    .await;
    let stopped = within(Duration::from_secs(5), "the stop", running.stop()).await;
    assert!(matches!(stopped, Err(Error::ShutdownDeadline(_))), "{stopped:?}");
    assert!(
        within(Duration::from_secs(5), "the cut-off call", call)
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_handle_stops_run() {
    init_logging();
    let store = MemoryStore::new();
    let app = App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(greeter_server("handle"));
    let handle = app.shutdown_handle();
    let run = tokio::spawn(app.run());
    let observer = store.registry();
    eventually(Duration::from_secs(5), "the registration", || async {
        (observer.list("handle").await.unwrap().len() == 1).then_some(())
    })
    .await;
    handle.shutdown();
    within(Duration::from_secs(5), "run to return", run)
        .await
        .unwrap()
        .unwrap();
    assert!(observer.list("handle").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_loses_no_call() {
    init_logging();
    let store = MemoryStore::new();
    let staying = App::new()
        .registry(store.registry())
        .serve(greeter_server("load"))
        .start()
        .await
        .unwrap();
    let leaving = App::new()
        .registry(store.registry())
        .drain_delay(Duration::from_millis(300))
        .serve(greeter_server("load"))
        .start()
        .await
        .unwrap();
    let channel = ClientBuilder::new(store.registry()).build("load").await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match client.say_hello(HelloRequest { name: "x".into() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(5), "calls to flow", || async {
        (ok.load(Ordering::Relaxed) > 100).then_some(())
    })
    .await;
    leaving.stop().await.unwrap();
    let after_stop = ok.load(Ordering::Relaxed);
    eventually(Duration::from_secs(5), "calls to keep flowing", || async {
        (ok.load(Ordering::Relaxed) > after_stop + 100).then_some(())
    })
    .await;
    done.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed out of {}",
        ok.load(Ordering::Relaxed)
    );
    staying.stop().await.unwrap();
}

/// Failed on the old code: stopping A closed the registry both Apps used, which withdrew B's
/// instance while B kept serving, and B's own stop then failed with `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_sharing_a_registry_each_withdraw_only_their_own_instances() {
    init_logging();
    let store = MemoryStore::new();
    let shared: Arc<dyn Registry> = Arc::new(store.registry());
    let start = |name: &'static str| {
        App::new()
            .registry(Arc::clone(&shared))
            .drain_delay(Duration::ZERO)
            .serve(greeter_server(name))
            .start()
    };
    let a = start("shared-a").await.unwrap();
    let b = start("shared-b").await.unwrap();
    let b_addr = b.local_addrs()[0];
    let observer = store.registry();

    a.stop().await.expect("A stops");
    assert!(
        observer.list("shared-a").await.unwrap().is_empty(),
        "A withdrew its instance"
    );
    let listed = observer.list("shared-b").await.unwrap();
    assert!(
        listed.get(&format!("grpc://{b_addr}")).is_some(),
        "B's instance is still registered after A stopped: {listed:?}"
    );
    direct_hello(b_addr, "x").await.expect("B still serves");

    b.stop().await.expect("B's stop succeeds: the registry is still open");
    assert!(
        observer.list("shared-b").await.unwrap().is_empty(),
        "B withdrew its instance"
    );
    shared
        .list("shared-b")
        .await
        .expect("the Apps left the registry open for its owner");
    shared.close().await.expect("its owner closes it");
    assert!(matches!(shared.list("shared-b").await, Err(Error::Closed)));
}

/// Failed on the old code: the futures borrowed the App (not `Sync`), so they could not be
/// spawned, and without a registry `client` panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_be_built_on_another_task_and_need_a_registry() {
    init_logging();
    let lonely = App::new().config(jovian::Config::default()).governor(None);
    let error = tokio::spawn(lonely.client("greeter")).await.unwrap().unwrap_err();
    assert!(matches!(error, Error::NoRegistry), "{error}");

    let store = MemoryStore::new();
    let app = App::new()
        .config(jovian::Config::default())
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(greeter_server("spawned"));
    let channel = tokio::spawn(app.client("spawned")).await.unwrap().unwrap();
    let running = app.start().await.unwrap();
    let from_running = tokio::spawn(running.client("spawned")).await.unwrap().unwrap();
    for channel in [channel, from_running] {
        eventually(Duration::from_secs(5), "the server to be seen", || async {
            (channel.instance_count() == 1).then_some(())
        })
        .await;
    }
    running.stop().await.unwrap();
}

#[test]
fn the_public_types_print_something_useful() {
    let server = greeter_server("printed");
    assert!(format!("{server:?}").contains("helloworld.Greeter"), "{server:?}");
    let app = App::new().serve(server).governor(None);
    assert!(format!("{app:?}").contains("printed"), "{app:?}");
    let builder = ClientBuilder::new(MemoryStore::new().registry());
    assert!(format!("{builder:?}").contains("RoundRobin"), "{builder:?}");
}
