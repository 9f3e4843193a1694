//! A real Prometheus, configured only with `http_sd_configs` pointing at `jovianctl sd`, or
//! at one App's governor `/sd`, finds every App's governor, scrapes it, and drops the one that
//! stops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jovian::{App, Running};
use jovian_examples::greeter_server;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::{EtcdCluster, free_port};
use jovian_tests::{eventually, http_get, init_logging};
use serde_json::Value;

/// A child process killed when dropped (panicking test included), with a watchdog shell that
/// kills it should this test process die without unwinding.
struct Killed {
    child: Child,
    watchdog: Child,
}

impl Killed {
    fn new(child: Child) -> Self {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null",
            parent = std::process::id(),
            pid = child.id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh for the watchdog");
        Self { child, watchdog }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        for child in [&mut self.child, &mut self.watchdog] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `$PROMETHEUS_BIN`, else `prometheus` on `PATH` or in /usr/bin; panics saying how to install
/// it: this test never passes without a real Prometheus.
fn prometheus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "PROMETHEUS_BIN={} is not a file", bin.display());
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs a real Prometheus server and none was found (looked at $PROMETHEUS_BIN, PATH and /usr/bin).\n\
                 Install one: `apt-get install prometheus` (Debian/Ubuntu, as root), or set PROMETHEUS_BIN to a \
                 prometheus binary (2.28 or later, for http_sd_configs)."
            )
        })
}

async fn app(endpoints: &[String], name: &str, zone: &str) -> Running {
    let registry = Arc::new(EtcdRegistry::connect(EtcdConfig::new(endpoints)).await.unwrap());
    let zone = zone.to_owned();
    App::new()
        .name(name)
        .governor(Some("127.0.0.1:0".parse().unwrap()))
        .registry(registry)
        .serve(greeter_server("sd-greeter").map_info(|mut info| {
            info.region = format!("r-{zone}");
            info.zone = zone;
            info.version = "v3".into();
            info
        }))
        .start()
        .await
        .unwrap()
}

/// A real Prometheus whose only scrape config is `http_sd_configs` at `sd_url`, refreshed and
/// scraping every second; killed when dropped.
struct Prometheus {
    addr: SocketAddr,
    _process: Killed,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(sd_url: &str) -> Self {
        let bin = prometheus_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: jovian\n    \
                 http_sd_configs:\n      - url: {sd_url}\n        refresh_interval: 1s\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let process = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut process = Killed::new(process);
        eventually(Duration::from_secs(30), "Prometheus to answer", || {
            if let Some(status) = process.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("prometheus exited ({status}); its log:\n{log}");
            }
            async {
                try_get(addr, "/-/ready")
                    .await
                    .filter(|r| r.starts_with("HTTP/1.1 200"))
            }
        })
        .await;
        Self {
            addr,
            _process: process,
            _dir: dir,
        }
    }
}

/// Prometheus' active targets: (scrape address, health, labels).
async fn active_targets(prometheus: SocketAddr) -> Vec<(String, String, Value)> {
    // Prometheus refuses connections until it listens: nothing yet.
    let Some(response) = try_get(prometheus, "/api/v1/targets?state=active").await else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_str::<Value>(&body(&response)) else {
        return Vec::new();
    };
    answer["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["labels"]["instance"].as_str().unwrap_or_default().to_owned(),
                t["health"].as_str().unwrap_or_default().to_owned(),
                t["labels"].clone(),
            )
        })
        .collect()
}

/// Checks the HTTP SD answer at `sd_addr`: JSON, `count` groups, and `governor`'s group
/// labelled with its App (`app`, zone `zone`, the greeter's service, version and region).
async fn check_sd_answer(sd_addr: SocketAddr, count: usize, governor: &str, app: &str, zone: &str) {
    let raw = try_get(sd_addr, "/sd").await.expect("the SD endpoint answers");
    assert!(
        raw.to_ascii_lowercase().contains("content-type: application/json"),
        "{raw}"
    );
    let (status, body) = http_get(sd_addr, "/sd").await;
    assert_eq!(status, 200, "{body}");
    let groups: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), count, "{body}");
    let group = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["targets"] == serde_json::json!([governor]))
        .unwrap_or_else(|| panic!("{governor} in {body}"));
    let region = format!("r-{zone}");
    for (label, value) in [
        ("jovian_app", app),
        ("jovian_service", "sd-greeter"),
        ("jovian_zone", zone),
        ("jovian_version", "v3"),
        ("jovian_region", region.as_str()),
    ] {
        assert_eq!(group["labels"][label], value, "{label} in {body}");
    }
    assert!(group["labels"]["jovian_hostname"].is_string(), "{body}");
}

/// Waits until Prometheus scrapes every one of `governors` and finds it `up`; their labels.
async fn wait_all_up(prometheus: &Prometheus, governors: &[&str]) -> Vec<Value> {
    eventually(
        Duration::from_secs(30),
        "Prometheus to scrape every governor",
        || async {
            let targets = active_targets(prometheus.addr).await;
            governors
                .iter()
                .map(|governor| {
                    targets
                        .iter()
                        .find(|(i, health, _)| i == governor && health == "up")
                        .map(|(_, _, labels)| labels.clone())
                })
                .collect::<Option<Vec<Value>>>()
        },
    )
    .await
}

/// Waits until Prometheus has dropped `gone` and still has every one of `kept`.
async fn wait_dropped(prometheus: &Prometheus, gone: &str, kept: &[&str]) {
    eventually(
        Duration::from_secs(30),
        "Prometheus to drop the stopped governor",
        || async {
            let targets = active_targets(prometheus.addr).await;
            let has = |governor: &str| targets.iter().any(|(i, _, _)| i == governor);
            (!has(gone) && kept.iter().all(|k| has(k))).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_every_governor_through_jovianctl_sd() {
    init_logging();
    prometheus_binary(); // fail before starting anything when there is none
    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints();
    let app_a = app(&endpoints, "sd-a", "z1").await;
    let app_b = app(&endpoints, "sd-b", "z2").await;
    let governor_a = app_a.governor_addr().unwrap().to_string();
    let governor_b = app_b.governor_addr().unwrap().to_string();

    // jovianctl sd on a free port; it prints where it listens
    let mut sd = Command::new(env!("CARGO_BIN_EXE_jovianctl"));
    sd.current_dir(std::env::temp_dir())
        .args(["--endpoints", &endpoints.join(","), "sd", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut sd = Killed::new(sd.spawn().expect("start jovianctl sd"));
    let stdout = sd.child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let first = jovian_tests::within(Duration::from_secs(10), "jovianctl sd to listen", first)
        .await
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    let sd_addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/sd"))
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    check_sd_answer(sd_addr, 2, &governor_a, "sd-a", "z1").await;

    // Prometheus, configured only with http_sd_configs
    let prometheus = Prometheus::start(&format!("http://{sd_addr}/sd")).await;
    let labels = wait_all_up(&prometheus, &[&governor_a, &governor_b]).await;
    assert_eq!(labels[1]["jovian_app"], "sd-b", "{}", labels[1]);
    assert_eq!(labels[1]["jovian_zone"], "z2", "{}", labels[1]);
    assert_eq!(labels[1]["job"], "jovian", "{}", labels[1]);

    // one App stops: its governor unregisters, and Prometheus drops it
    app_a.stop().await.unwrap();
    wait_dropped(&prometheus, &governor_a, &[&governor_b]).await;
    assert!(sd.child.try_wait().unwrap().is_none(), "jovianctl sd is still serving");
    app_b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_every_governor_through_one_apps_governor() {
    init_logging();
    prometheus_binary(); // fail before starting anything when there is none
    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints();
    let app_a = app(&endpoints, "gsd-a", "z1").await;
    let app_b = app(&endpoints, "gsd-b", "z2").await;
    let app_c = app(&endpoints, "gsd-c", "z3").await;
    let [governor_a, governor_b, governor_c] =
        [&app_a, &app_b, &app_c].map(|app| app.governor_addr().unwrap().to_string());
    // the governor's answer is the same document jovianctl sd serves, from the App's registry
    let sd_addr = app_a.governor_addr().unwrap();
    check_sd_answer(sd_addr, 3, &governor_b, "gsd-b", "z2").await;

    // Prometheus, configured only with http_sd_configs at app a's governor
    let prometheus = Prometheus::start(&format!("http://{sd_addr}/sd")).await;
    let labels = wait_all_up(&prometheus, &[&governor_a, &governor_b, &governor_c]).await;
    assert_eq!(labels[2]["jovian_app"], "gsd-c", "{}", labels[2]);
    assert_eq!(labels[2]["jovian_zone"], "z3", "{}", labels[2]);

    // app b stops: its governor unregisters, and Prometheus drops it
    app_b.stop().await.unwrap();
    wait_dropped(&prometheus, &governor_b, &[&governor_a, &governor_c]).await;
    app_c.stop().await.unwrap();
    app_a.stop().await.unwrap();
}

/// The body of a raw HTTP/1.1 response, de-chunked when it came in chunks (Prometheus
/// chunks answers of more than about 2 KiB).
fn body(response: &str) -> String {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The raw response (head and body) to a GET; `None` if the connection fails.
async fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}
