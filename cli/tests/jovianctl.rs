//! `jovianctl` against a real etcd: every command's output, its errors, and a running
//! `ServiceChannel` obeying what it writes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jovian::client::Policy;
use jovian::{App, ClientBuilder, ClientOptions, Running, ServiceChannel};
use jovian_examples::greeter_server;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::{EtcdCluster, free_port};
use jovian_tests::{eventually, init_logging};
use serde_json::Value;

const SERVICE: &str = "ctl-greeter";

/// `jovianctl` with `args`, in an empty directory and without `JOVIAN_*` variables, so only
/// the flags configure it.
fn jovianctl(endpoints: &[String], args: &[&str]) -> Command {
    let dir = std::env::temp_dir();
    let mut command = Command::new(env!("CARGO_BIN_EXE_jovianctl"));
    command.current_dir(dir).arg("--endpoints").arg(endpoints.join(","));
    command.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JOVIAN_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `jovianctl` to completion off the runtime's threads.
async fn run(endpoints: &[String], args: &[&str]) -> Output {
    let mut command = jovianctl(endpoints, args);
    tokio::task::spawn_blocking(move || command.output().expect("run jovianctl"))
        .await
        .unwrap()
}

/// Runs `jovianctl`, expecting success; its stdout.
async fn ok(endpoints: &[String], args: &[&str]) -> String {
    let output = run(endpoints, args).await;
    assert!(
        output.status.success(),
        "jovianctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `jovianctl`, expecting failure; its stderr.
async fn fails(endpoints: &[String], args: &[&str]) -> String {
    let output = run(endpoints, args).await;
    assert!(
        !output.status.success(),
        "jovianctl {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// A killed-on-drop child process.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn server(endpoints: &[String], zone: &str) -> (Running, Arc<EtcdRegistry>) {
    let registry = Arc::new(EtcdRegistry::connect(EtcdConfig::new(endpoints)).await.unwrap());
    let zone = zone.to_owned();
    let server = greeter_server(SERVICE).map_info(|mut info| {
        info.zone = zone;
        info.version = "v1.2".to_owned();
        info
    });
    let running = App::new()
        .name("ctl-app")
        .registry(registry.clone())
        .serve(server)
        .start()
        .await
        .unwrap();
    (running, registry)
}

fn weight_of(channel: &ServiceChannel, address: &str) -> Option<u32> {
    channel
        .instances()
        .into_iter()
        .find(|i| i.address == address)
        .map(|i| i.weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jovianctl_reads_and_governs_the_registry_and_clients_obey() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints();
    let (app_a, _registry_a) = server(&endpoints, "z1").await;
    let (app_b, _registry_b) = server(&endpoints, "z2").await;
    let a = app_a.local_addrs()[0].to_string();
    let b = app_b.local_addrs()[0].to_string();

    // services
    let services = ok(&endpoints, &["services"]).await;
    assert_eq!(services.lines().collect::<Vec<_>>(), [SERVICE]);
    let services: Value = serde_json::from_str(&ok(&endpoints, &["services", "--json"]).await).unwrap();
    assert_eq!(services, serde_json::json!([SERVICE]));

    // list: the table
    let table = ok(&endpoints, &["list", SERVICE]).await;
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        [
            "ADDRESS",
            "ZONE/REGION",
            "GROUP",
            "VERSION",
            "WEIGHT",
            "ENABLE",
            "HEALTHY",
            "STARTED",
            "LEASE TTL",
            "OVERRIDES"
        ],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let row_a: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&a))
        .unwrap_or_else(|| panic!("{a} in {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row_a[..7],
        [&a[..], "z1/-", "-", "v1.2", "100", "true", "true"],
        "{table}"
    );
    assert!(row_a[7].ends_with('Z') && row_a[7].contains('T'), "started: {table}");
    assert!(row_a[8].ends_with("/10s"), "lease ttl: {table}");
    assert_eq!(row_a[9], "-", "{table}");

    // list --json
    let listed: Value = serde_json::from_str(&ok(&endpoints, &["list", SERVICE, "--json"]).await).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let json_a = listed.iter().find(|i| i["address"] == a.as_str()).unwrap();
    assert_eq!(json_a["uri"], format!("grpc://{a}"));
    assert_eq!(json_a["zone"], "z1");
    assert_eq!(json_a["version"], "v1.2");
    assert_eq!(json_a["weight"], 100);
    assert_eq!(json_a["enable"], true);
    assert_eq!(json_a["healthy"], true);
    assert_eq!(json_a["pickable"], true);
    assert_eq!(json_a["override"], Value::Null);
    assert_eq!(json_a["lease"]["granted_seconds"], 10);
    assert!(json_a["lease"]["ttl_left_seconds"].as_u64().unwrap() <= 10);
    assert!(json_a["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(json_a["entry"]["appId"], "ctl-app");

    // describe: the lease is the one etcd holds the provider key on
    let provider_key = format!("/jovian/{SERVICE}/providers/grpc://{a}");
    let mut etcd_client = etcd.client().await;
    let lease = etcd_client.get(provider_key.as_str(), None).await.unwrap().kvs()[0].lease();
    let described: Value = serde_json::from_str(&ok(&endpoints, &["describe", SERVICE, &a, "--json"]).await).unwrap();
    assert_eq!(described["provider_key"], provider_key);
    assert_eq!(described["lease"]["id"], lease);
    assert_eq!(described["entry"]["address"], a.as_str());
    assert_eq!(described["pickable"], true);
    let text = ok(&endpoints, &["describe", SERVICE, &format!("grpc://{a}")]).await;
    assert!(text.contains(&format!("lease:     {lease:x} ({lease}),")), "{text}");
    assert!(text.contains("override:  none"), "{text}");
    assert!(text.contains("\"zone\": \"z1\""), "{text}");

    // A client that balances by weight, following the registry.
    let observer = EtcdRegistry::connect(EtcdConfig::new(&endpoints)).await.unwrap();
    let options = ClientOptions::default().policy(Policy::WeightedRoundRobin);
    let channel = ClientBuilder::new(observer)
        .options(options)
        .build(SERVICE)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the client sees both", || async {
        (channel.instance_count() == 2).then_some(())
    })
    .await;

    // watch, in the background, for the next three changes
    let mut watcher = Killed(
        jovianctl(&endpoints, &["watch", SERVICE, "--count", "3", "--for", "30s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut watch_out = BufReader::new(watcher.0.stdout.take().unwrap());
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        watch_out.read_line(&mut line).unwrap();
        (line, watch_out)
    });
    let (first, watch_out) = jovian_tests::within(Duration::from_secs(10), "the watch to start", first)
        .await
        .unwrap();
    assert!(
        first.contains(&format!("watching {SERVICE}: 2 instances at revision")),
        "{first}"
    );

    // disable: the instance leaves the client's pickable set
    let disabled = ok(&endpoints, &["disable", SERVICE, &a]).await;
    assert!(
        disabled.contains(r#"override {"enable":false} (was none)"#),
        "{disabled}"
    );
    eventually(
        Duration::from_secs(10),
        "the client to drop the disabled instance",
        || async { (weight_of(&channel, &a).is_none() && channel.instance_count() == 1).then_some(()) },
    )
    .await;

    // weight: merged into the existing override, and weighted round robin follows
    let weighted = ok(&endpoints, &["weight", SERVICE, &a, "30"]).await;
    assert!(
        weighted.contains(r#"override {"enable":false,"weight":30} (was {"enable":false})"#),
        "{weighted}"
    );
    ok(&endpoints, &["enable", SERVICE, &a]).await;
    ok(&endpoints, &["weight", SERVICE, &b, "10"]).await;
    eventually(
        Duration::from_secs(10),
        "the client to take the new weights",
        || async { (weight_of(&channel, &a) == Some(30) && weight_of(&channel, &b) == Some(10)).then_some(()) },
    )
    .await;
    let mut client = jovian_examples::GreeterClient::new(channel.clone());
    let mut to_a = 0;
    for _ in 0..40 {
        let reply = client
            .say_hello(jovian_examples::HelloRequest { name: "w".into() })
            .await
            .unwrap();
        to_a += usize::from(jovian_examples::replying_address(&reply.into_inner().message) == a);
    }
    // 3:1 (an even split would be 20); smooth weighted round robin gives exactly 30, a
    // little slack keeps the test about the shift, not the algorithm's phase.
    assert!(
        (27..=33).contains(&to_a),
        "{to_a} of 40 calls went to the weight-30 instance"
    );
    let override_a = etcd_client
        .get(format!("/jovian/{SERVICE}/configurators/grpc://{a}"), None)
        .await
        .unwrap();
    let override_a: Value = serde_json::from_slice(override_a.kvs()[0].value()).unwrap();
    assert_eq!(override_a, serde_json::json!({"enable": true, "weight": 30}));

    // the watch printed the changes, one timestamped line each, and stopped after three
    let rest = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = watch_out.lines().map(Result::unwrap).collect();
        (lines, watcher.0.wait().unwrap())
    });
    let (lines, status) = jovian_tests::within(Duration::from_secs(15), "the watch to end", rest)
        .await
        .unwrap();
    assert!(status.success());
    let changes: Vec<&String> = lines.iter().filter(|l| !l.contains(" present ")).collect();
    assert_eq!(changes.len(), 3, "{lines:#?}");
    assert!(
        changes[0].contains(&format!("updated grpc://{a} enable true -> false")),
        "{lines:#?}"
    );
    assert!(
        changes.iter().all(|l| l.split(' ').next().unwrap().ends_with('Z')),
        "{lines:#?}"
    );
    assert!(
        lines.iter().filter(|l| l.contains(" present grpc://")).count() == 2,
        "{lines:#?}"
    );

    // list shows the overrides
    let table = ok(&endpoints, &["list", SERVICE]).await;
    assert!(table.contains(r#"{"enable":true,"weight":30}"#), "{table}");

    // drain: disabled, and waited for until this tool's watch sees it unpickable
    let drained = ok(&endpoints, &["drain", SERVICE, &b]).await;
    assert!(
        drained.contains(r#"override {"enable":false,"weight":10}"#),
        "{drained}"
    );
    assert!(
        drained.contains(&format!("shows grpc://{b} not pickable at revision")),
        "{drained}"
    );
    eventually(
        Duration::from_secs(10),
        "the client to drop the drained instance",
        || async { (weight_of(&channel, &b).is_none()).then_some(()) },
    )
    .await;

    // errors: what is wrong and what to do, non-zero exit
    let unknown = fails(&endpoints, &["describe", SERVICE, "127.0.0.1:1"]).await;
    assert!(
        unknown.contains(&format!("unknown instance grpc://127.0.0.1:1 of service {SERVICE}"))
            && unknown.contains(&format!("grpc://{a}"))
            && unknown.contains("jovianctl list"),
        "{unknown}"
    );
    let unknown = fails(&endpoints, &["disable", SERVICE, "127.0.0.1:1"]).await;
    assert!(
        unknown.contains("unknown instance") && unknown.contains("--force"),
        "{unknown}"
    );
    let unknown = fails(&endpoints, &["list", "nosuch"]).await;
    assert!(
        unknown.contains("unknown service nosuch") && unknown.contains(SERVICE),
        "{unknown}"
    );
    let nowhere = [format!("127.0.0.1:{}", free_port())];
    let unreachable = fails(&nowhere, &["services", "--timeout", "500ms"]).await;
    assert!(
        unreachable.contains(&format!("cannot reach the registry at {}", nowhere[0]))
            && unreachable.contains("--endpoints"),
        "{unreachable}"
    );
    let bad = fails(&endpoints, &["describe", SERVICE, "h:1/x"]).await;
    assert!(bad.contains("write host:port"), "{bad}");

    app_a.stop().await.unwrap();
    app_b.stop().await.unwrap();
}

/// `jovianctl` under another layout (from the environment, as Apps take it): it lists what the
/// layout holds, and refuses governance, which only the jupiter layout has, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jovianctl_follows_the_configured_layout_and_refuses_overrides_without_one() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints();
    let registry =
        EtcdRegistry::connect(EtcdConfig::new(&endpoints).layout(jovian_registry_etcd::Layout::etcd_naming()))
            .await
            .unwrap();
    jovian::Registrar::register(&registry, &jovian::ServiceInfo::new("naming-svc", "127.0.0.1:7"))
        .await
        .unwrap();
    let under = |layout: &str, args: &[&str]| {
        let mut command = jovianctl(&endpoints, args);
        command.env("JOVIAN_REGISTRY__LAYOUT", layout);
        tokio::task::spawn_blocking(move || command.output().expect("run jovianctl"))
    };
    let services = under("etcd-naming", &["services", "--json"]).await.unwrap();
    assert!(
        services.status.success(),
        "{}",
        String::from_utf8_lossy(&services.stderr)
    );
    let services: Value = serde_json::from_slice(&services.stdout).unwrap();
    assert_eq!(services, serde_json::json!(["naming-svc"]));
    let list = under("etcd-naming", &["list", "naming-svc"]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("127.0.0.1:7"),
        "{list:?}"
    );
    let disable = under("etcd-naming", &["disable", "naming-svc", "127.0.0.1:7"])
        .await
        .unwrap();
    assert!(!disable.status.success());
    let stderr = String::from_utf8_lossy(&disable.stderr);
    assert!(stderr.contains("jupiter"), "{stderr}");
    let jupiter = under("jupiter", &["services", "--json"]).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&jupiter.stdout).unwrap(),
        serde_json::json!([])
    );
    let wrong = under("flat", &["services"]).await.unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("registry.layout") && stderr.contains("etcd-naming"),
        "{stderr}"
    );
}
