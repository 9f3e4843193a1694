//! What operators see: Prometheus metrics that move with calls, health, the debug view of
//! registrations and client instance sets, and the governor's metrics-target key in etcd.

use std::net::SocketAddr;
use std::time::Duration;

use jovian::{App, Config, Discovery, Error};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_registry_memory::MemoryStore;
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{eventually, http_get, init_logging};

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Where the governor listens in these tests: off by default, so each test asks for it.
fn governor_address() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_calls() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .name("obs")
        .governor(governor_address())
        .registry(store.registry())
        .serve(greeter_server("obs-metrics"))
        .start()
        .await
        .unwrap();
    let governor = running.governor_addr().expect("the governor runs when asked");
    let address = running.local_addrs()[0].to_string();
    let mut client = GreeterClient::new(running.client("obs-metrics").await.unwrap());
    // go-grpc-prometheus's labels. The series belong to the Greeter, not to one server or
    // client, so what this test's calls add is measured from what was there before.
    let method = [
        ("grpc_type", "unary"),
        ("grpc_service", "helloworld.Greeter"),
        ("grpc_method", "SayHello"),
    ];
    let ok = [&method[..], &[("grpc_code", "OK")]].concat();
    let before = scrape(governor).await;
    let baseline = |name: &str, labels: &[(&str, &str)]| sample(&before, name, labels).unwrap_or(0.0);
    let per_method = [
        "grpc_server_started_total",
        "grpc_server_handling_seconds_count",
        "grpc_client_started_total",
        "grpc_client_handling_seconds_count",
    ]
    .map(|name| (name, baseline(name, &method)));
    let per_code = ["grpc_server_handled_total", "grpc_client_handled_total"].map(|name| (name, baseline(name, &ok)));
    let handled_before = per_code[1].1;
    for round in [5.0, 8.0] {
        while sample(&scrape(governor).await, "grpc_client_handled_total", &ok).unwrap_or(0.0) < handled_before + round
        {
            client.say_hello(HelloRequest { name: "m".into() }).await.unwrap();
        }
        let metrics = scrape(governor).await;
        for (name, before) in per_method {
            assert_eq!(sample(&metrics, name, &method), Some(before + round), "{name}");
        }
        for (name, before) in per_code {
            assert_eq!(sample(&metrics, name, &ok), Some(before + round), "{name}");
        }
        let attempted = [
            ("service", "obs-metrics"),
            ("instance", address.as_str()),
            ("grpc_code", "OK"),
        ];
        assert_eq!(
            sample(&metrics, "jovian_client_attempts_total", &attempted),
            Some(round)
        );
        let instance = [("service", "obs-metrics"), ("instance", address.as_str())];
        assert_eq!(
            sample(&metrics, "jovian_client_attempt_seconds_count", &instance),
            Some(round)
        );
        assert_eq!(
            sample(&metrics, "jovian_client_picks_total", &[("service", "obs-metrics")]),
            Some(round)
        );
        assert_eq!(
            sample(&metrics, "jovian_client_instances", &[("service", "obs-metrics")]),
            Some(1.0)
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_debug_registry_show_the_live_state() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .name("obs")
        .governor(governor_address())
        .registry(store.registry())
        .drain_delay(Duration::from_millis(600))
        .serve(greeter_server("obs-debug"))
        .start()
        .await
        .unwrap();
    let governor = running.governor_addr().unwrap();
    let address = running.local_addrs()[0].to_string();
    let channel = running.client("obs-debug").await.unwrap();
    assert_eq!(http_get(governor, "/healthz").await, (200, "ok\n".to_owned()));

    let (status, body) = http_get(governor, "/debug/registry").await;
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).expect("/debug/registry is JSON");
    let registered: Vec<&str> = view["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert!(registered.contains(&address.as_str()), "{view}");
    assert!(
        registered.contains(&governor.to_string().as_str()),
        "the governor's own entry is listed: {view}"
    );
    let client = view["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "obs-debug")
        .expect("the client is listed");
    assert_eq!(client["policy"], "round_robin");
    assert_eq!(client["instances"][0]["address"], address.as_str());
    assert_eq!(client["instances"][0]["ejected"], false);

    let stopping = tokio::spawn(running.stop());
    eventually(Duration::from_secs(2), "/healthz to report stopping", || async {
        (http_get(governor, "/healthz").await.0 == 503).then_some(())
    })
    .await;
    stopping.await.unwrap().unwrap();
    drop(channel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_is_registered_as_a_metrics_target_in_etcd() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let running = App::new()
        .name("obs-app")
        .governor(governor_address())
        .registry(registry)
        .serve(greeter_server("obs-etcd"))
        .start()
        .await
        .unwrap();
    let governor = running.governor_addr().unwrap().to_string();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let key = format!("/prometheus/job/obs-app/{hostname}/{governor}");
    let mut client = etcd.client().await;
    let found = client.get(key.as_str(), None).await.unwrap();
    assert_eq!(
        found.kvs().first().map(|kv| kv.value()),
        Some(governor.as_bytes()),
        "no {key}"
    );
    let provider = client
        .get(
            "/jovian/obs-etcd/providers/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(
        provider.kvs()[0].lease(),
        found.kvs()[0].lease(),
        "the metrics target shares the provider's lease"
    );
    running.stop().await.unwrap();
    assert!(
        client.get(key.as_str(), None).await.unwrap().kvs().is_empty(),
        "stopping removes the metrics target"
    );
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    assert!(observer.list("obs-etcd").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_governor_runs_unless_configured() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .registry(store.registry())
        .serve(greeter_server("obs-quiet"))
        .start()
        .await
        .unwrap();
    assert_eq!(running.governor_addr(), None);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_registers_its_advertised_address_and_never_an_unreachable_one() {
    init_logging();
    let store = MemoryStore::new();
    let config =
        Config::from_toml("[governor]\nenabled = true\naddress = \"0.0.0.0:0\"\nadvertise = \"metrics.internal:9100\"")
            .unwrap();
    let running = App::from_config(config)
        .name("obs")
        .registry(store.registry())
        .serve(greeter_server("obs-advertised"))
        .start()
        .await
        .unwrap();
    let governor = running.governor_addr().unwrap();
    let local = SocketAddr::from(([127, 0, 0, 1], governor.port()));
    let (_, body) = http_get(local, "/debug/registry").await;
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let target = view["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == 2) // EntryKind::Governor
        .unwrap_or_else(|| panic!("no metrics target in {view}"));
    assert_eq!(target["address"], "metrics.internal:9100", "{view}");
    running.stop().await.unwrap();

    let everywhere = Config::from_toml("[governor]\nenabled = true\naddress = \"0.0.0.0:0\"").unwrap();
    let error = App::from_config(everywhere)
        .registry(store.registry())
        .serve(greeter_server("obs-everywhere"))
        .start()
        .await
        .expect_err("a governor on 0.0.0.0 has no address to register");
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "governor.advertise"),
        "{error}"
    );
    assert!(
        store.registry().list("obs-everywhere").await.unwrap().is_empty(),
        "a failed start registers nothing"
    );
}

/// The governor's `/sd`: Prometheus HTTP SD of every governor in the App's registry (here a
/// compound of two stores, so the union), labelled from each App's servers; a stopped App
/// leaves it; an App without a registry answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_governor_serves_http_sd_of_every_governor_in_its_registry() {
    init_logging();
    let (old, new) = (MemoryStore::new(), MemoryStore::new());
    let compound = jovian::registry::Compound::builder()
        .source("old", old.registry())
        .source("new", new.registry())
        .build()
        .unwrap();
    let start = |name: &'static str, registry: Box<dyn jovian::Registry>| async move {
        App::new()
            .name(name)
            .governor(governor_address())
            .registry(std::sync::Arc::<dyn jovian::Registry>::from(registry))
            .serve(greeter_server(&format!("{name}-svc")).map_info(|info| info.with_zone("z9")))
            .start()
            .await
            .unwrap()
    };
    let a = start("obs-sd-a", Box::new(compound)).await;
    let b = start("obs-sd-b", Box::new(new.registry())).await;
    let (governor_a, governor_b) = (a.governor_addr().unwrap(), b.governor_addr().unwrap());

    let groups = |body: String| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("/sd is not JSON ({e}): {body}"))
            .as_array()
            .cloned()
            .unwrap()
    };
    let (status, body) = http_get(governor_a, "/sd").await;
    assert_eq!(status, 200, "{body}");
    let found = groups(body);
    assert_eq!(found.len(), 2, "both governors, one group each: {found:?}");
    let b_group = found
        .iter()
        .find(|g| g["targets"][0] == governor_b.to_string())
        .unwrap_or_else(|| panic!("{governor_b} in {found:?}"));
    assert_eq!(b_group["labels"]["jovian_app"], "obs-sd-b");
    assert_eq!(b_group["labels"]["jovian_service"], "obs-sd-b-svc");
    assert_eq!(b_group["labels"]["jovian_zone"], "z9");

    b.stop().await.unwrap();
    let (_, body) = http_get(governor_a, "/sd").await;
    let left: Vec<String> = groups(body).iter().map(|g| g["targets"][0].to_string()).collect();
    assert_eq!(left, [format!("\"{governor_a}\"")], "the stopped App left");
    a.stop().await.unwrap();

    let alone = App::new()
        .governor(governor_address())
        .serve(greeter_server("obs-sd-alone"))
        .start()
        .await
        .unwrap();
    let (status, body) = http_get(alone.governor_addr().unwrap(), "/sd").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no registry"), "{body}");
    alone.stop().await.unwrap();
}
