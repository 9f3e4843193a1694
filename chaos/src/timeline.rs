//! The history turned into what the invariants talk about: server and client incarnations with
//! their lives, link outages, etcd's truth and each client's snapshots over time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{Event, Record};

/// Half-open intervals `[start, end)` of milliseconds, kept sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(u64, u64)>);

impl Intervals {
    /// Adds `[start, end)`.
    pub fn add(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        self.0.push((start, end));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// Adds every interval of `other`.
    pub fn extend(&mut self, other: &Intervals) {
        for &(s, e) in &other.0 {
            self.add(s, e);
        }
    }

    /// Whether `[start, end]` touches any interval.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.0.iter().any(|&(s, e)| s <= end && start < e)
    }

    /// Whether `t` is inside one.
    pub fn contains(&self, t: u64) -> bool {
        self.0.iter().any(|&(s, e)| s <= t && t < e)
    }

    /// The intervals.
    pub fn spans(&self) -> &[(u64, u64)] {
        &self.0
    }
}

/// One incarnation of a server or client process.
#[derive(Clone, Debug, Default)]
pub struct Life {
    /// Its slot (`s0`, `c1`).
    pub slot: String,
    /// Its incarnation.
    pub r#gen: u32,
    /// When the orchestrator spawned it.
    pub spawned: u64,
    /// Servers: the address it registers.
    pub address: String,
    /// Servers: when `App::start` returned (serving and registered).
    pub registered: Option<u64>,
    /// Servers: whether its stop could not unregister (etcd unreachable).
    pub unregister_failed: bool,
    /// When the orchestrator sent SIGTERM.
    pub sigterm: Option<u64>,
    /// When the orchestrator sent SIGKILL.
    pub sigkill: Option<u64>,
    /// When it exited, and how.
    pub exited: Option<(u64, String)>,
    /// SIGSTOP..SIGCONT spans.
    pub frozen: Intervals,
    /// `(t, tasks, fds, rss_kb)` samples.
    pub stats: Vec<(u64, usize, usize, u64)>,
    /// Panic messages with their time.
    pub panics: Vec<(u64, String)>,
    /// Its instance sets over time (clients).
    pub snapshots: Vec<(u64, BTreeSet<String>)>,
}

impl Life {
    /// When it stopped running: killed or exited, whichever came first.
    pub fn death(&self) -> Option<u64> {
        match (self.sigkill, self.exited.as_ref().map(|e| e.0)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether it had been spawned and had not died at `t`.
    pub fn alive_at(&self, t: u64) -> bool {
        self.spawned <= t && self.death().is_none_or(|d| t < d)
    }

    /// Its snapshot at `t` (empty before the first).
    pub fn snapshot_at(&self, t: u64) -> Option<&BTreeSet<String>> {
        let i = self.snapshots.partition_point(|(at, _)| *at <= t);
        i.checked_sub(1).map(|i| &self.snapshots[i].1)
    }
}

/// What etcd held, as read directly by the orchestrator.
#[derive(Clone, Debug)]
pub struct TruthRead {
    /// When it was read.
    pub t: u64,
    /// Whether etcd answered.
    pub reachable: bool,
    /// Provider addresses.
    pub members: BTreeSet<String>,
    /// Addresses whose key has no lease.
    pub detached: BTreeSet<String>,
}

/// A fault as recorded.
#[derive(Clone, Debug)]
pub struct FaultSpan {
    /// Its id.
    pub id: u32,
    /// Its kind's name.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// Its detail.
    pub detail: String,
    /// When it began.
    pub start: u64,
    /// When it was healed (`None`: never).
    pub end: Option<u64>,
}

/// A call as recorded.
#[derive(Clone, Debug)]
pub struct CallSpan {
    /// The calling client's slot and incarnation.
    pub client: (String, u32),
    /// The call id.
    pub id: String,
    /// `read` or `write`.
    pub method: String,
    /// Started.
    pub start: u64,
    /// Ended.
    pub end: u64,
    /// Succeeded.
    pub ok: bool,
    /// Failure code and message.
    pub error: String,
}

/// The whole history, indexed.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The seed.
    pub seed: u64,
    /// The lease TTL, ms.
    pub ttl_ms: u64,
    /// The command that replays the run.
    pub replay: String,
    /// When the run was declared over (the final shutdown follows).
    pub end: u64,
    /// Server incarnations.
    pub servers: Vec<Life>,
    /// Client incarnations.
    pub clients: Vec<Life>,
    /// Link outages (any mode but forward) by link name.
    pub link_down: HashMap<String, Intervals>,
    /// Link outages caused by a fault on that process alone (not a partition of everyone).
    pub own_link_down: HashMap<String, Intervals>,
    /// etcd's truth, in time order.
    pub truth: Vec<TruthRead>,
    /// Faults in start order.
    pub faults: Vec<FaultSpan>,
    /// Faults the orchestrator could not apply (etcd did not answer): they changed nothing.
    pub not_applied: std::collections::BTreeSet<u32>,
    /// Calls in end order.
    pub calls: Vec<CallSpan>,
    /// Attempts received per call id: `(server slot, gen, t)`.
    pub received: HashMap<String, Vec<(String, u32, u64)>>,
}

impl Timeline {
    /// Indexes `records` (sorted by time).
    pub fn build(records: &[Record]) -> Self {
        let mut timeline = Timeline::default();
        let mut lives: BTreeMap<(String, u32), Life> = BTreeMap::new();
        let mut links: HashMap<(String, bool), u64> = HashMap::new();
        let mut frozen_since: HashMap<(String, u32), u64> = HashMap::new();
        let mut last_t = 0;
        for record in records {
            last_t = last_t.max(record.t);
            let key = (record.proc.clone(), record.r#gen);
            let t = record.t;
            match &record.event {
                Event::Run {
                    seed, ttl_ms, replay, ..
                } => {
                    timeline.seed = *seed;
                    timeline.ttl_ms = *ttl_ms;
                    timeline.replay = replay.clone();
                }
                Event::FaultStart {
                    id,
                    kind,
                    target,
                    detail,
                } => timeline.faults.push(FaultSpan {
                    id: *id,
                    kind: kind.clone(),
                    target: target.clone(),
                    detail: detail.clone(),
                    start: t,
                    end: None,
                }),
                Event::FaultEnd { id } => {
                    if let Some(fault) = timeline.faults.iter_mut().find(|f| f.id == *id) {
                        fault.end = Some(t);
                    }
                }
                Event::Link { link, mode, causes, .. } => {
                    let down = mode != "forward";
                    // A partition of everyone from etcd is etcd's trouble, not the process's own.
                    let own = down && causes.iter().any(|c| !c.starts_with("partition_all"));
                    track(&mut links, &mut timeline.link_down, link, false, down, t);
                    track(&mut links, &mut timeline.own_link_down, link, true, own, t);
                }
                Event::Note { text } if record.proc == "orchestrator" && text == RUN_OVER => timeline.end = t,
                Event::Note { text } => {
                    // "fault {id} ({kind}) not applied: ..." marks a fault that did nothing.
                    let id = text
                        .strip_prefix("fault ")
                        .filter(|_| text.contains(" not applied"))
                        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
                    if let Some(id) = id {
                        timeline.not_applied.insert(id);
                    }
                }
                Event::Truth {
                    reachable,
                    members,
                    detached,
                    ..
                } => timeline.truth.push(TruthRead {
                    t,
                    reachable: *reachable,
                    members: members.iter().cloned().collect(),
                    detached: detached.iter().cloned().collect(),
                }),
                Event::Call {
                    id,
                    method,
                    start,
                    ok,
                    code,
                    message,
                    ..
                } => timeline.calls.push(CallSpan {
                    client: key.clone(),
                    id: id.clone(),
                    method: method.clone(),
                    start: *start,
                    end: t,
                    ok: *ok,
                    error: format!("{code}: {message}"),
                }),
                Event::Recv { id, .. } => {
                    timeline
                        .received
                        .entry(id.clone())
                        .or_default()
                        .push((key.0.clone(), key.1, t))
                }
                other => {
                    let life = lives.entry(key.clone()).or_insert_with(|| Life {
                        slot: key.0.clone(),
                        r#gen: key.1,
                        spawned: t,
                        ..Life::default()
                    });
                    apply(life, other, t, &mut frozen_since);
                }
            }
        }
        for ((link, own), start) in links {
            let map = if own {
                &mut timeline.own_link_down
            } else {
                &mut timeline.link_down
            };
            map.entry(link).or_default().add(start, u64::MAX);
        }
        if timeline.end == 0 {
            timeline.end = last_t;
        }
        for (key, start) in frozen_since {
            if let Some(life) = lives.get_mut(&key) {
                life.frozen.add(start, u64::MAX);
            }
        }
        for ((slot, _), life) in lives {
            if slot.starts_with('s') {
                timeline.servers.push(life);
            } else if slot.starts_with('c') {
                timeline.clients.push(life);
            }
        }
        timeline
    }
}

/// The note the orchestrator writes when the run is over and the final shutdown begins.
pub const RUN_OVER: &str = "run over";

/// Opens or closes an outage of `link` in `map` as its state becomes `down` at `t`.
fn track(
    open: &mut HashMap<(String, bool), u64>,
    map: &mut HashMap<String, Intervals>,
    link: &str,
    own: bool,
    down: bool,
    t: u64,
) {
    let key = (link.to_owned(), own);
    match (down, open.get(&key).copied()) {
        (false, Some(start)) => {
            map.entry(link.to_owned()).or_default().add(start, t);
            open.remove(&key);
        }
        (true, None) => {
            open.insert(key, t);
        }
        _ => {}
    }
}

/// Applies a line about one process to its life.
fn apply(life: &mut Life, event: &Event, t: u64, frozen_since: &mut HashMap<(String, u32), u64>) {
    let key = (life.slot.clone(), life.r#gen);
    match event {
        Event::Proc { action, status, .. } => match action.as_str() {
            "spawned" => life.spawned = t,
            "sigterm" => life.sigterm = life.sigterm.or(Some(t)),
            "sigkill" => life.sigkill = life.sigkill.or(Some(t)),
            "sigstop" => {
                frozen_since.entry(key).or_insert(t);
            }
            "sigcont" => {
                if let Some(start) = frozen_since.remove(&key) {
                    life.frozen.add(start, t);
                }
            }
            "exited" => life.exited = Some((t, status.clone())),
            _ => {}
        },
        Event::Lifecycle { phase, address, error } => {
            if !address.is_empty() {
                life.address = address.clone();
            }
            if phase == "registered" {
                life.registered = life.registered.or(Some(t));
            }
            if phase == "stopped" && error.contains("unregister") {
                life.unregister_failed = true;
            }
        }
        Event::Snapshot { members } => life.snapshots.push((t, members.iter().cloned().collect())),
        Event::Stats { tasks, fds, rss_kb } => life.stats.push((t, *tasks, *fds, *rss_kb)),
        Event::Panic { message } => life.panics.push((t, message.clone())),
        _ => {}
    }
}
