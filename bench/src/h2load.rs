//! Scenario 9: servers under a load generator neither side wrote. nghttp2's `h2load` sends
//! the same Greeter call (a POST of one 5-byte-prefixed protobuf with `content-type:
//! application/grpc` and `te: trailers`) over 1 and 4 connections with 16 streams each, to a
//! jovian server (calls in tasks of their own, the default, and with `inline_calls`), a tonic
//! server and today's grpc-go server (the bench's Go peer, grpc-go's default settings), side
//! by side. The jovian and tonic servers run in this process, the grpc-go one in its own; each
//! server's CPU per call is its process's CPU time over h2load's measured phase (h2load is
//! another process, and the servers not under load idle meanwhile). h2load reports no
//! percentiles: p50 and p99 come from its per-request log. Skipped, with a note, where
//! `h2load` is absent; without Go the grpc-go server is left out, with a note.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jovian::App;
use jovian_examples::{Greeter, GreeterServer, greeter_server};
use tokio::process::Command;

use crate::Sizes;
use crate::cpu::process_cpu;
use crate::gopeer::{self, Missing};
use crate::process::Process;
use crate::report::{Section, median_f64, ms, ratio};

const CONNECTIONS: [usize; 2] = [1, 4];
const STREAMS: usize = 16;
const PATH: &str = "/helloworld.Greeter/SayHello";
/// Where the tonic server is in the report (the "vs tonic" column's baseline).
const TONIC: usize = 2;
/// h2load's warm-up: connections made and both sides' first-call costs paid before it counts.
const WARM_UP: Duration = Duration::from_secs(1);

/// A server under load: its address, and whose CPU time is its cost.
struct Target {
    name: String,
    addr: SocketAddr,
    /// The server's own process; `None` for a server in this one.
    process: Option<Process>,
}

impl Target {
    fn cpu(&self) -> Duration {
        self.process.as_ref().map_or_else(process_cpu, Process::cpu)
    }
}

/// Each server's samples at one connection count.
#[derive(Default, Clone)]
struct Samples {
    rates: Vec<f64>,
    cpu_per_call: Vec<f64>,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    failed: u64,
}

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "9. Servers under h2load",
        "the jovian server at least 1.2x the current grpc-go server at 1 and 4 connections",
        &[
            "connections × streams",
            "server",
            "calls/s (median)",
            "vs grpc-go",
            "vs tonic",
            "p50",
            "p99",
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
    let mut targets = vec![
        Target {
            name: "jovian (calls in tasks)".into(),
            addr: jovian.1,
            process: None,
        },
        Target {
            name: "jovian (inline_calls)".into(),
            addr: inline.1,
            process: None,
        },
        Target {
            name: "tonic 0.14 (`transport::Server`)".into(),
            addr: tonic.0,
            process: None,
        },
    ];
    let grpc_go = match gopeer::build().await? {
        Ok(peer) => {
            let server = gopeer::unregistered_server(&peer.binary).await?;
            let addr = server
                .first_line
                .trim_start_matches("serving ")
                .parse()
                .map_err(|e| anyhow::anyhow!("the grpc-go server said {:?}: {e}", server.first_line))?;
            targets.push(Target {
                name: format!("grpc-go {} (`grpc.NewServer()`)", peer.grpc_go),
                addr,
                process: Some(server),
            });
            Some(targets.len() - 1)
        }
        Err(Missing(how)) => {
            section.note(format!(
                "The grpc-go server is left out: the bench's grpc-go peer (bench/go) is built with Go. {how}"
            ));
            None
        }
    };

    let duration = sizes.call_duration.max(Duration::from_secs(1));
    let mut goals = Vec::new();
    for connections in CONNECTIONS {
        let mut samples = vec![Samples::default(); targets.len()];
        for rep in 0..sizes.reps {
            for offset in 0..targets.len() {
                let server = (rep + offset) % targets.len();
                let target = &targets[server];
                let run = h2load(target, &request, connections, duration).await?;
                let samples = &mut samples[server];
                samples.rates.push(run.rate);
                samples
                    .cpu_per_call
                    .push(run.cpu.as_secs_f64() * 1e6 / run.succeeded.max(1) as f64);
                samples.p50.extend(run.p50);
                samples.p99.extend(run.p99);
                samples.failed += run.failed;
            }
        }
        let rates: Vec<f64> = samples.iter().map(|s| median_f64(&s.rates)).collect();
        let grpc_go_rate = grpc_go.map_or(f64::NAN, |i| rates[i]);
        for ((target, samples), rate) in targets.iter().zip(&samples).zip(&rates) {
            section.row(vec![
                format!("{connections} × {STREAMS}"),
                target.name.clone(),
                format!("{rate:.0}"),
                ratio(*rate, grpc_go_rate),
                ratio(*rate, rates[TONIC]),
                ms(median(&samples.p50)),
                ms(median(&samples.p99)),
                format!("{:.1} µs", median_f64(&samples.cpu_per_call)),
                samples.failed.to_string(),
            ]);
        }
        if grpc_go.is_some() {
            goals.push(format!(
                "{connections} connection{}: jovian {} (inline_calls {})",
                if connections == 1 { "" } else { "s" },
                ratio(rates[0], grpc_go_rate),
                ratio(rates[1], grpc_go_rate),
            ));
        }
    }
    if !goals.is_empty() {
        section.note(format!("Against the goal (1.2x grpc-go): {}.", goals.join("; ")));
    }
    section.note(format!(
        "`h2load -t 1 -c N -m {STREAMS} -D {}s --warm-up-time {}s` per sample, the servers interleaved, {} samples \
         each. One thread of load, which is not the limit (h2load used about a third of a core at 80k calls/s on \
         the 2-core machine this was written on): the server has the rest. Calls/s is h2load's, over the \
         measured phase; p50 and p99 are of h2load's per-request times (`--log-file`: request start to the \
         response's end), medians over samples. CPU per call is the server's process's CPU time over the measured \
         phase per call h2load saw succeed (h2load counts an HTTP 200 as a success; every call here is an OK one). \
         The grpc-go server is its own process with grpc-go's defaults (GOMAXPROCS defaults to the cores); the \
         others run in this one, on its tokio runtime.",
        duration.as_secs(),
        WARM_UP.as_secs(),
        sizes.reps
    ));
    tonic.1.abort();
    drop((jovian, inline, targets));
    Ok(section)
}

/// What one h2load run measured, over its measured phase (after the warm-up).
struct Run {
    succeeded: u64,
    failed: u64,
    /// Successful calls per second, as h2load reports it.
    rate: f64,
    /// The server's CPU time.
    cpu: Duration,
    p50: Option<Duration>,
    p99: Option<Duration>,
}

async fn h2load(target: &Target, request: &Path, connections: usize, duration: Duration) -> anyhow::Result<Run> {
    let log = std::env::temp_dir().join(format!("jovian-bench-h2load-{}.log", std::process::id()));
    let child = Command::new("h2load")
        .args(["-t", "1", "-c", &connections.to_string(), "-m", &STREAMS.to_string()])
        .args(["-D", &duration.as_secs().to_string()])
        .args(["--warm-up-time", &WARM_UP.as_secs().to_string()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(request)
        .arg("--log-file")
        .arg(&log)
        .arg(format!("http://{}{PATH}", target.addr))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // h2load counts nothing during its warm-up, so neither does the CPU time: read after it
    // (h2load connects in well under a millisecond here, so the phases line up to that).
    tokio::time::sleep(WARM_UP).await;
    let before = target.cpu();
    let output = child.wait_with_output().await?;
    let cpu = target.cpu().saturating_sub(before);
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "h2load failed: {text}");
    let report = parse(&text).ok_or_else(|| anyhow::anyhow!("h2load's report was not understood: {text}"))?;
    let mut times = read_log(&std::fs::read_to_string(&log).unwrap_or_default());
    let _ = std::fs::remove_file(&log);
    times.sort_unstable();
    Ok(Run {
        succeeded: report.succeeded,
        failed: report.failed,
        rate: report.rate,
        cpu,
        p50: quantile_of_sorted(&times, 0.5),
        p99: quantile_of_sorted(&times, 0.99),
    })
}

/// The numbers read from h2load's report.
struct Report {
    succeeded: u64,
    failed: u64,
    rate: f64,
}

/// Reads `finished in 3.00s, 36818.00 req/s, ...` and `requests: N total, N started, N done,
/// N succeeded, N failed, N errored, ...` from h2load's report. The time in "finished in"
/// includes the warm-up, the counts and the rate do not: the rate is the one to use.
fn parse(report: &str) -> Option<Report> {
    let finished = report.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let rate = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let requests = report.lines().find_map(|l| l.strip_prefix("requests: "))?;
    let count = |what: &str| -> Option<u64> {
        requests
            .split(", ")
            .find_map(|part| part.strip_suffix(what))?
            .trim()
            .parse()
            .ok()
    };
    Some(Report {
        succeeded: count(" succeeded")?,
        failed: count(" failed")? + count(" errored")?,
        rate,
    })
}

/// Each request's time in h2load's `--log-file` (tab-separated: start in µs since the epoch,
/// HTTP status, µs to the response's end), for the requests answered 200.
fn read_log(log: &str) -> Vec<Duration> {
    log.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (_start, status, micros) = (fields.next()?, fields.next()?, fields.next()?);
            if status != "200" {
                return None;
            }
            Some(Duration::from_micros(micros.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of sorted samples, nearest rank (as `report::quantile`, without a copy
/// of a hundred thousand samples).
fn quantile_of_sorted(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// The median of per-sample latencies.
fn median(samples: &[Duration]) -> Option<Duration> {
    let seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    (!samples.is_empty()).then(|| Duration::from_secs_f64(median_f64(&seconds)))
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

pub(crate) async fn start_jovian(inline_calls: bool) -> anyhow::Result<(jovian::Running, SocketAddr)> {
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

pub(crate) async fn start_tonic() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
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
        let report = parse(report).unwrap();
        assert_eq!((report.succeeded, report.failed), (107_100, 40));
        assert!((report.rate - 35_713.33).abs() < 1e-6);
    }

    #[test]
    fn h2loads_log_gives_the_percentiles() {
        let log: String = (1..=100)
            .map(|micros| format!("1796657392635824\t200\t{micros}\n"))
            .chain(["1796657392635824\t503\t1\n".to_owned(), "garbage\n".to_owned()])
            .collect();
        let mut times = read_log(&log);
        assert_eq!(times.len(), 100);
        times.sort_unstable();
        assert_eq!(quantile_of_sorted(&times, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(quantile_of_sorted(&times, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(quantile_of_sorted(&[], 0.5), None);
    }
}
