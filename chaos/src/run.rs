//! One run from start to verdict: draw the schedule, start the cluster, play the faults, let
//! it settle, stop everything, merge and save the history, check it.

use std::path::PathBuf;
use std::time::Duration;

use crate::check::Report;
use crate::clock::Clock;
use crate::history::Event;
use crate::orchestrator::{Cluster, ClusterSpec};
use crate::procs::Sink;
use crate::schedule::{self, FaultKind, Shape};

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The schedule's seed.
    pub seed: u64,
    /// The whole run, faults and settling.
    pub duration: Duration,
    /// etcd members: 3, or 1 for the variant whose etcd can be wiped.
    pub members: usize,
    /// Server processes.
    pub servers: usize,
    /// Client processes.
    pub clients: usize,
    /// The lease TTL.
    pub ttl: Duration,
    /// Fault kinds to draw from (all when empty).
    pub kinds: Vec<FaultKind>,
    /// Make client `c0` empty its set on registry trouble (to show the checker catches it).
    pub broken_client: bool,
    /// Where the history, report and process logs go.
    pub out: PathBuf,
    /// The chaos binary, for server and client processes.
    pub binary: PathBuf,
}

/// No fault starts in the first 3 s: servers register and clients take their first snapshot.
pub const WARMUP: Duration = Duration::from_secs(3);
/// Every fault is healed this long before the end: the convergence bound and 3 s to check it.
pub const SETTLE: Duration = Duration::from_secs(18);

impl RunOptions {
    /// The run's shape, which with the seed fixes the schedule.
    pub fn shape(&self) -> Shape {
        Shape {
            members: self.members,
            servers: self.servers,
            clients: self.clients,
            duration_ms: self.duration.as_millis() as u64,
            warmup_ms: WARMUP.as_millis() as u64,
            settle_ms: SETTLE.as_millis() as u64,
            ttl_ms: self.ttl.as_millis() as u64,
            kinds: match self.kinds.is_empty() {
                true => FaultKind::for_members(self.members),
                false => self.kinds.clone(),
            },
        }
    }

    /// The command that runs this again.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "cargo run --release -p jovian-chaos -- --seed {} --duration {}s --servers {} --clients {} --ttl {}ms",
            self.seed,
            self.duration.as_secs(),
            self.servers,
            self.clients,
            self.ttl.as_millis()
        );
        if self.members != 3 {
            command.push_str(&format!(" --members {}", self.members));
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<String> = self.kinds.iter().map(|k| k.name()).collect();
            command.push_str(&format!(" --kinds {}", kinds.join(",")));
        }
        if self.broken_client {
            command.push_str(" --broken-client");
        }
        command
    }
}

/// Runs the whole program and returns the checker's report; the history is in
/// `out/history.jsonl`, the report in `out/report.txt`.
pub async fn run(options: &RunOptions) -> anyhow::Result<Report> {
    let shape = options.shape();
    if shape.duration_ms < shape.warmup_ms + shape.settle_ms + 5_000 {
        anyhow::bail!(
            "a run of {:?} leaves no time for faults: it needs {:?} of warm-up and {:?} to settle; use at least {}s",
            options.duration,
            WARMUP,
            SETTLE,
            (shape.warmup_ms + shape.settle_ms) / 1000 + 5
        );
    }
    let faults = schedule::generate(options.seed, &shape);
    std::fs::create_dir_all(options.out.join("logs"))?;
    // The etcd is named first, so a failing run's output says which release it was on
    // (`JOVIAN_ETCD`, see jovian_tests::etcd).
    println!(
        "seed {}: {} faults over {:?} on etcd {}",
        options.seed,
        faults.len(),
        options.duration,
        jovian_tests::etcd::server().version
    );
    for fault in &faults {
        println!(
            "  #{:<3} {:>6.1}s +{:>4.1}s {:<24} {} {}",
            fault.id,
            fault.at_ms as f64 / 1000.0,
            fault.duration_ms as f64 / 1000.0,
            fault.kind.name(),
            fault.target,
            fault.detail
        );
    }
    let clock = Clock::start();
    let raw = options.out.join("history.raw.jsonl");
    let sink = Sink::create(&raw)?;
    sink.event(
        0,
        "orchestrator",
        0,
        Event::Run {
            seed: options.seed,
            duration_ms: shape.duration_ms,
            ttl_ms: shape.ttl_ms,
            members: options.members,
            servers: options.servers,
            clients: options.clients,
            replay: options.replay_command(),
        },
    );
    let spec = ClusterSpec {
        members: options.members,
        servers: options.servers,
        clients: options.clients,
        ttl_ms: shape.ttl_ms,
        broken_client: options.broken_client,
        binary: options.binary.clone(),
        logs: options.out.join("logs"),
    };
    let mut cluster = Cluster::start(&spec, clock, sink.clone()).await?;
    // Schedule times count from the moment the cluster is up.
    let t0 = clock.now();
    sink.event(
        t0,
        "orchestrator",
        0,
        Event::Note {
            text: "cluster up".into(),
        },
    );
    let mut steps: Vec<(u64, bool, usize)> = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        steps.push((t0 + fault.at_ms, false, i));
        steps.push((t0 + fault.end_ms(), true, i));
    }
    steps.sort();
    for (at, heal, i) in steps {
        cluster.wait_until(at).await;
        let fault = &faults[i];
        let done = match heal {
            false => cluster.begin(fault).await,
            true => cluster.end(fault).await,
        };
        done.map_err(|e| anyhow::anyhow!("fault #{} ({}): {e:#}", fault.id, fault.kind))?;
    }
    cluster.wait_until(t0 + shape.duration_ms).await;
    sink.event(
        clock.now(),
        "orchestrator",
        0,
        Event::Note {
            text: crate::timeline::RUN_OVER.into(),
        },
    );
    cluster.shutdown().await;
    let mut records = crate::history::read(&raw)?;
    records.sort_by_key(|r| r.t);
    let history = options.out.join("history.jsonl");
    crate::history::write(&history, &records)?;
    let _ = std::fs::remove_file(&raw);
    let report = crate::check::check(&records);
    std::fs::write(options.out.join("report.txt"), report.render())?;
    println!("history: {}", history.display());
    Ok(report)
}
