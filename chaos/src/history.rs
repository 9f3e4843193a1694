//! The recorded history of a run: one JSON object per line, every one stamped with `t`, the
//! milliseconds since the run's epoch (a wall-clock instant the orchestrator picks and passes to
//! every process, so lines from different processes share one clock).
//!
//! Every process writes lines about itself (`proc` names it: `orchestrator`, `s0`..`s4`,
//! `c0`..); the orchestrator merges them, sorted by `t`, into `history.jsonl`. The checker reads
//! nothing else, so a saved history can be checked again later.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the run's epoch.
    pub t: u64,
    /// Which process wrote it: `orchestrator`, a server slot (`s0`) or a client slot (`c0`).
    pub proc: String,
    /// The incarnation of that process (1 for the first start of a slot; 0 for the orchestrator).
    #[serde(default)]
    pub r#gen: u32,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// What a line records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The run's settings, first line of every history.
    Run {
        /// The schedule's seed.
        seed: u64,
        /// How long faults were scheduled over, in ms.
        duration_ms: u64,
        /// The lease TTL every registry uses, in ms.
        ttl_ms: u64,
        /// etcd members (histories from before the single-member variant had three).
        #[serde(default = "three")]
        members: usize,
        /// Server slots.
        servers: usize,
        /// Client slots.
        clients: usize,
        /// The command that replays this run.
        replay: String,
    },
    /// A fault began. `target` names a slot (`s2`, `c0`), a member (`m1`) or `etcd` / `all`.
    FaultStart {
        /// Unique within the run; `fault_end` refers to it.
        id: u32,
        /// The fault's kind (see [`FaultKind`](crate::schedule::FaultKind)).
        kind: String,
        /// What it hit.
        target: String,
        /// Anything else worth knowing (latency, the key touched).
        detail: String,
    },
    /// A fault was healed.
    FaultEnd {
        /// The `fault_start` it ends.
        id: u32,
    },
    /// A proxy changed how it treats a link: `link` is `{slot}:etcd` (the slot's path to every
    /// etcd member) or `{server slot}:clients` (every client's path to that server).
    Link {
        /// Which link.
        link: String,
        /// `forward`, `reset`, `blackhole` or `refuse`.
        mode: String,
        /// Added latency in ms.
        latency_ms: u64,
        /// The kinds of the faults that make it fail (empty when forwarding).
        #[serde(default)]
        causes: Vec<String>,
    },
    /// The orchestrator did something to a process, or saw it exit (written for the process's
    /// slot and incarnation).
    Proc {
        /// `spawned`, `sigkill`, `sigterm`, `sigstop`, `sigcont`, or `exited`.
        action: String,
        /// The OS process id.
        pid: u32,
        /// For `exited`: how (`code 0`, `signal 9`).
        #[serde(default)]
        status: String,
    },
    /// A server's own account of its life: `starting`, `registered` (serving and registered:
    /// `App::start` returned), `start_failed`, `stopping` (SIGTERM received), `stopped`.
    Lifecycle {
        /// The phase.
        phase: String,
        /// The address it registers (clients dial it).
        #[serde(default)]
        address: String,
        /// An error, if the phase failed.
        #[serde(default)]
        error: String,
    },
    /// One call a client made, written when it ended.
    Call {
        /// Unique call id (`{slot}.{gen}.{n}`).
        id: String,
        /// `read` (idempotent) or `write` (must run at most once).
        method: String,
        /// When the call started (ms since epoch); `t` is when it ended.
        start: u64,
        /// Whether it succeeded.
        ok: bool,
        /// The gRPC code name on failure.
        #[serde(default)]
        code: String,
        /// The failure's message.
        #[serde(default)]
        message: String,
        /// The answering instance's address, on success.
        #[serde(default)]
        instance: String,
    },
    /// A server received an attempt of a call.
    Recv {
        /// The call id.
        id: String,
        /// `read` or `write`.
        method: String,
    },
    /// A client's instance set changed (`ServiceChannel::instances`, polled every 20 ms).
    Snapshot {
        /// The addresses calls may go to, sorted.
        members: Vec<String>,
    },
    /// What etcd itself held under the service's providers, as the orchestrator read it directly
    /// (not through any proxy), written when it changed or etcd stopped or started answering.
    Truth {
        /// Whether etcd answered; when false, `members` is empty and means nothing.
        reachable: bool,
        /// The revision of the read.
        #[serde(default)]
        revision: i64,
        /// Addresses of well-formed, available provider entries, sorted.
        #[serde(default)]
        members: Vec<String>,
        /// Addresses whose key is not attached to a lease (it would outlive its owner).
        #[serde(default)]
        detached: Vec<String>,
    },
    /// A process's resource use, sampled every second by the process itself.
    Stats {
        /// Live tokio tasks.
        tasks: usize,
        /// Open file descriptors.
        fds: usize,
        /// Resident memory, KiB.
        rss_kb: u64,
    },
    /// A process panicked.
    Panic {
        /// The panic message and location.
        message: String,
    },
    /// Something the orchestrator wants on record (a fault it could not apply, say).
    Note {
        /// The text.
        text: String,
    },
}

fn three() -> usize {
    3
}

/// Writes records as JSON lines to a sink, one `write` per line so lines from a process that
/// is killed mid-run are whole or absent.
pub struct Emitter {
    proc: String,
    r#gen: u32,
    clock: crate::clock::Clock,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Emitter {
    /// An emitter for process `proc`, incarnation `gen`, writing to `sink`.
    pub fn new(proc: impl Into<String>, r#gen: u32, clock: crate::clock::Clock, sink: Box<dyn Write + Send>) -> Self {
        Self {
            proc: proc.into(),
            r#gen,
            clock,
            sink: Mutex::new(sink),
        }
    }

    /// An emitter writing to this process's stdout.
    pub fn stdout(proc: impl Into<String>, r#gen: u32, clock: crate::clock::Clock) -> Self {
        Self::new(proc, r#gen, clock, Box::new(std::io::stdout()))
    }

    /// The clock the records are stamped with.
    pub fn clock(&self) -> crate::clock::Clock {
        self.clock
    }

    /// Records `event` now.
    pub fn emit(&self, event: Event) {
        self.emit_at(self.clock.now(), event);
    }

    /// Records `event` at `t`.
    pub fn emit_at(&self, t: u64, event: Event) {
        let record = Record {
            t,
            proc: self.proc.clone(),
            r#gen: self.r#gen,
            event,
        };
        let mut line = serde_json::to_string(&record).expect("records always serialize");
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe means the orchestrator is gone; the process is about to be killed.
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.flush();
    }
}

/// Reads a history file, failing with the line number of the first line that is not a record.
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open the history {}: {e}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not a history record ({e}): {line}", path.display(), n + 1))?;
        records.push(record);
    }
    records.sort_by_key(|r| r.t);
    Ok(records)
}

/// Writes `records` (sorted by time) as JSON lines.
pub fn write(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
