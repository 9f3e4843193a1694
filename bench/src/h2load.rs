//! Scenario 9: servers under a load generator neither side wrote. nghttp2's `h2load` sends
//! the same Greeter call (a POST of one 5-byte-prefixed protobuf with `content-type:
//! application/grpc` and `te: trailers`) over 1 and 4 connections with 16 streams each, to a
//! jovian server (calls in tasks of their own, the default, and with `inline_calls`) and to a
//! tonic server beside it, serving the same Greeter in this process. Each server's CPU per
//! call comes from this process's CPU time (the load generator is another process; nothing
//! else runs here meanwhile). Skipped, with a note, where `h2load` is absent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jovian::App;
use jovian_examples::{Greeter, GreeterServer, greeter_server};
use tokio::process::Command;

use crate::Sizes;
use crate::cpu::process_cpu;
use crate::report::{Section, median_f64, ratio};

const CONNECTIONS: [usize; 2] = [1, 4];
const STREAMS: usize = 16;
const PATH: &str = "/helloworld.Greeter/SayHello";

/// The servers measured, in report order.
const SERVERS: [&str; 3] = [
    "jovian (calls in tasks)",
    "jovian (inline_calls)",
    "tonic 0.14 (`transport::Server`)",
];

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "9. Servers under h2load",
        "the jovian server at least 1.2x the current grpc-go server at 1 and 4 connections \
         (the grpc-go server is not in this run yet: see the note)",
        &[
            "connections × streams",
            "server",
            "calls/s (median)",
            "vs tonic",
            "server CPU / call",
            "failed",
        ],
    );
    if Command::new("h2load").arg("--version").output().await.is_err() {
        section.note("Skipped: `h2load` is not installed (Debian's nghttp2-client).");
        return Ok(section);
    }
    let request = request_file()?;
    let jovian = start_jovian(false).await?;
    let inline = start_jovian(true).await?;
    let tonic = start_tonic().await?;
    let addresses = [jovian.1, inline.1, tonic.0];
    let duration = sizes.call_duration.max(Duration::from_secs(1));
    for connections in CONNECTIONS {
        let mut rates = vec![Vec::new(); SERVERS.len()];
        let mut cpu = vec![Vec::new(); SERVERS.len()];
        let mut failed = vec![0; SERVERS.len()];
        for rep in 0..sizes.reps {
            for offset in 0..SERVERS.len() {
                let server = (rep + offset) % SERVERS.len();
                let before = process_cpu();
                let run = h2load(addresses[server], &request, connections, duration).await?;
                let used = process_cpu().saturating_sub(before);
                rates[server].push(run.succeeded as f64 / run.seconds);
                cpu[server].push(used.as_secs_f64() * 1e6 / run.succeeded.max(1) as f64);
                failed[server] += run.failed;
            }
        }
        let tonic_rate = median_f64(&rates[2]);
        for (server, name) in SERVERS.iter().enumerate() {
            let rate = median_f64(&rates[server]);
            section.row(vec![
                format!("{connections} × {STREAMS}"),
                (*name).to_owned(),
                format!("{rate:.0}"),
                ratio(rate, tonic_rate),
                format!("{:.1} µs", median_f64(&cpu[server])),
                failed[server].to_string(),
            ]);
        }
    }
    section.note(format!(
        "`h2load -c N -m {STREAMS} -D {}s` per sample, the servers interleaved, {} samples each; \
         one thread of load, the servers in this process on the other core. CPU per call is this \
         process's CPU time over the calls h2load saw succeed.",
        duration.as_secs(),
        sizes.reps
    ));
    tonic.1.abort();
    drop((jovian, inline));
    Ok(section)
}

/// What one h2load run reported.
struct Run {
    succeeded: u64,
    failed: u64,
    seconds: f64,
}

async fn h2load(addr: SocketAddr, request: &PathBuf, connections: usize, duration: Duration) -> anyhow::Result<Run> {
    let output = Command::new("h2load")
        .args(["-t", "1", "-c", &connections.to_string(), "-m", &STREAMS.to_string()])
        .args(["-D", &duration.as_secs().to_string(), "--warm-up-time", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(request)
        .arg(format!("http://{addr}{PATH}"))
        .kill_on_drop(true)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "h2load failed: {text}");
    parse(&text).ok_or_else(|| anyhow::anyhow!("h2load's report was not understood: {text}"))
}

/// Reads `finished in 3.00s, ...` and `requests: N total, N started, N done, N succeeded,
/// N failed, ...` from h2load's report.
fn parse(report: &str) -> Option<Run> {
    let finished = report.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let seconds = finished.split('s').next()?.parse().ok()?;
    let requests = report.lines().find_map(|l| l.strip_prefix("requests: "))?;
    let count = |what: &str| -> Option<u64> {
        requests
            .split(", ")
            .find_map(|part| part.strip_suffix(what))?
            .trim()
            .parse()
            .ok()
    };
    Some(Run {
        succeeded: count(" succeeded")?,
        failed: count(" failed")? + count(" errored")?,
        seconds,
    })
}

/// The request body: one HelloRequest { name: "bench" }, gRPC-framed.
fn request_file() -> anyhow::Result<PathBuf> {
    let message = [0x0a, 5, b'b', b'e', b'n', b'c', b'h'];
    let mut body = vec![0, 0, 0, 0, message.len() as u8];
    body.extend_from_slice(&message);
    let path = std::env::temp_dir().join(format!("jovian-bench-h2load-{}.bin", std::process::id()));
    std::fs::write(&path, body)?;
    Ok(path)
}

async fn start_jovian(inline_calls: bool) -> anyhow::Result<(jovian::Running, SocketAddr)> {
    let store = jovian_registry_memory::MemoryStore::new();
    let server = greeter_server("h2load").configure(|s| s.inline_calls = Some(inline_calls));
    let running = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await?;
    let addr = running.local_addrs()[0];
    Ok((running, addr))
}

async fn start_tonic() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(GreeterServer::new(Greeter))
            .serve_with_incoming(incoming)
            .await;
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2loads_report_is_read() {
        let report = "finished in 3.00s, 35713.33 req/s, 2.01MB/s\n\
                      requests: 107140 total, 107156 started, 107140 done, 107100 succeeded, 40 failed, 0 errored, 0 timeout\n";
        let run = parse(report).unwrap();
        assert_eq!((run.succeeded, run.failed), (107_100, 40));
        assert!((run.seconds - 3.0).abs() < 1e-9);
    }
}
