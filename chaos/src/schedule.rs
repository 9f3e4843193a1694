//! The fault schedule: which faults hit what, when, and for how long — a pure function of the
//! seed and the run's shape, so a seed names a schedule and replays it.
//!
//! Faults start at random gaps after a warm-up and must all be healed before the settle
//! period, during which the checker expects every client to converge. Faults may overlap, with
//! three limits that keep a run meaningful rather than merely destructive:
//! - one etcd-cluster fault (member kill, leader kill, cluster freeze, wipe) at a time, so a
//!   quorum always comes back and restarting a member never waits on a frozen cluster;
//! - one process fault per slot at a time (a server is not killed while frozen);
//! - at least one server untouched by a process fault at any time, so "idempotent calls never
//!   fail while an instance is healthy" has a healthy instance to be tested against.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Every kind of fault the orchestrator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL an etcd member, restart it (with its data) when the fault ends.
    MemberKill,
    /// SIGKILL the etcd leader, restart it when the fault ends.
    LeaderKill,
    /// SIGSTOP every etcd member for less than the lease TTL.
    ClusterFreezeShort,
    /// SIGSTOP every etcd member for longer than the lease TTL.
    ClusterFreezeLong,
    /// Reset one process's links to etcd (peers notice at once).
    PartitionReset,
    /// Blackhole one process's links to etcd (peers notice only by timeouts).
    PartitionBlackhole,
    /// Reset every process's links to etcd.
    PartitionAllReset,
    /// Blackhole every process's links to etcd.
    PartitionAllBlackhole,
    /// Add latency to one process's links to etcd.
    SlowEtcd,
    /// Add latency to every client's link to one server.
    SlowServer,
    /// Compact etcd's history up to the current revision.
    Compaction,
    /// Delete a server's provider key.
    KeyDelete,
    /// Overwrite a server's provider key with another value, without a lease.
    KeyOverwrite,
    /// Revoke the lease a server's provider key is attached to.
    LeaseRevoke,
    /// Write malformed entries under the service's provider prefix.
    Garbage,
    /// SIGKILL a server; start it again (same or new port) when the fault ends.
    ServerKill,
    /// SIGTERM a server (orderly stop); start it again when the fault ends.
    ServerTerm,
    /// SIGSTOP a server; SIGCONT when the fault ends.
    ServerFreeze,
    /// Cut every client's link to one server (reset or blackhole).
    ServerCut,
    /// Stop a client (SIGTERM or SIGKILL) and start it again.
    ClientRestart,
    /// SIGKILL the only etcd member and start it again with its data directory wiped: every
    /// key and lease is gone (single-member clusters only).
    EtcdWipe,
}

impl FaultKind {
    /// Every kind, in a fixed order (the schedule draws from the kinds a cluster shape offers,
    /// in this order, so the order is part of what a seed means; new kinds go last).
    pub const ALL: [FaultKind; 21] = [
        FaultKind::MemberKill,
        FaultKind::LeaderKill,
        FaultKind::ClusterFreezeShort,
        FaultKind::ClusterFreezeLong,
        FaultKind::PartitionReset,
        FaultKind::PartitionBlackhole,
        FaultKind::PartitionAllReset,
        FaultKind::PartitionAllBlackhole,
        FaultKind::SlowEtcd,
        FaultKind::SlowServer,
        FaultKind::Compaction,
        FaultKind::KeyDelete,
        FaultKind::KeyOverwrite,
        FaultKind::LeaseRevoke,
        FaultKind::Garbage,
        FaultKind::ServerKill,
        FaultKind::ServerTerm,
        FaultKind::ServerFreeze,
        FaultKind::ServerCut,
        FaultKind::ClientRestart,
        FaultKind::EtcdWipe,
    ];

    /// The kind's name, as on the command line and in the history.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Faults on the etcd cluster itself; at most one at a time.
    pub fn is_cluster(self) -> bool {
        matches!(
            self,
            FaultKind::MemberKill
                | FaultKind::LeaderKill
                | FaultKind::ClusterFreezeShort
                | FaultKind::ClusterFreezeLong
                | FaultKind::EtcdWipe
        )
    }

    /// Whether a cluster of `members` etcd members can take this fault: a leader kill is a
    /// member kill unless other members elect a new leader, and a wipe of one member of three
    /// is a member joining again, which the harness does not do (and which loses no data).
    pub fn fits_members(self, members: usize) -> bool {
        match self {
            FaultKind::LeaderKill => members >= 3,
            FaultKind::EtcdWipe => members == 1,
            _ => true,
        }
    }

    /// The kinds a cluster of `members` members draws from by default, in [`Self::ALL`]'s
    /// order. Three members draw exactly the kinds they always did, so their seeds still name
    /// the same schedules.
    pub fn for_members(members: usize) -> Vec<FaultKind> {
        FaultKind::ALL.into_iter().filter(|k| k.fits_members(members)).collect()
    }

    /// Faults that take a server out of service.
    pub fn takes_server_down(self) -> bool {
        matches!(
            self,
            FaultKind::ServerKill | FaultKind::ServerTerm | FaultKind::ServerFreeze | FaultKind::ServerCut
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            let known: Vec<String> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind `{s}`; known kinds: {}", known.join(", "))
        })
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Unique within the schedule, in start order.
    pub id: u32,
    /// What it does.
    pub kind: FaultKind,
    /// When it starts, ms after the run's epoch.
    pub at_ms: u64,
    /// How long until it is healed (0 for one-off actions such as a compaction).
    pub duration_ms: u64,
    /// What it hits: a slot (`s1`, `c0`), a member (`m2`), `etcd` or `all`.
    pub target: String,
    /// Kind-specific choice: latency in ms, `reset`/`blackhole`, `same_port`/`new_port`,
    /// `sigterm`/`sigkill`.
    pub detail: String,
}

impl Fault {
    /// When it is healed.
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.duration_ms
    }
}

/// The run's shape, which together with the seed fixes the schedule.
#[derive(Clone, Debug)]
pub struct Shape {
    /// etcd members (1 or 3).
    pub members: usize,
    /// Server slots.
    pub servers: usize,
    /// Client slots.
    pub clients: usize,
    /// The whole run, ms.
    pub duration_ms: u64,
    /// No fault starts before this, ms (processes start and register first).
    pub warmup_ms: u64,
    /// Every fault is healed this long before the end, ms.
    pub settle_ms: u64,
    /// The lease TTL, ms (freeze lengths are drawn around it).
    pub ttl_ms: u64,
    /// The kinds to draw from.
    pub kinds: Vec<FaultKind>,
}

/// Draws the schedule for `seed`.
pub fn generate(seed: u64, shape: &Shape) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let last_end = shape.duration_ms.saturating_sub(shape.settle_ms);
    let mut at = shape.warmup_ms;
    while at < last_end && !shape.kinds.is_empty() {
        // A few tries per start time: a kind that does not fit here often has a cousin that does.
        for _ in 0..4 {
            let kind = shape.kinds[rng.random_range(0..shape.kinds.len())];
            let candidate = draw(&mut rng, kind, at, shape, faults.len() as u32);
            if candidate.end_ms() <= last_end && fits(&candidate, &faults, shape) {
                faults.push(candidate);
                break;
            }
        }
        at += rng.random_range(400..2500);
    }
    faults
}

fn draw(rng: &mut StdRng, kind: FaultKind, at_ms: u64, shape: &Shape, id: u32) -> Fault {
    let server = |rng: &mut StdRng| format!("s{}", rng.random_range(0..shape.servers));
    let ttl = shape.ttl_ms;
    let either = |rng: &mut StdRng, a: &str, b: &str| if rng.random_bool(0.5) { a } else { b }.to_owned();
    let (duration_ms, target, detail) = match kind {
        FaultKind::MemberKill => (
            rng.random_range(1500..6000),
            // An i32 range, as it always was: three members keep their schedules.
            format!("m{}", rng.random_range(0..shape.members as i32)),
            String::new(),
        ),
        FaultKind::LeaderKill => (rng.random_range(1500..6000), "leader".into(), String::new()),
        FaultKind::ClusterFreezeShort => (rng.random_range(ttl / 4..ttl * 2 / 3), "etcd".into(), String::new()),
        FaultKind::ClusterFreezeLong => (
            rng.random_range(ttl + 1000..ttl * 2 + 1000),
            "etcd".into(),
            String::new(),
        ),
        FaultKind::PartitionReset | FaultKind::PartitionBlackhole | FaultKind::SlowEtcd => {
            let slot = match rng.random_range(0..shape.servers + shape.clients) {
                n if n < shape.servers => format!("s{n}"),
                n => format!("c{}", n - shape.servers),
            };
            let detail = match kind {
                FaultKind::SlowEtcd => rng.random_range(50..400u64).to_string(),
                _ => String::new(),
            };
            (rng.random_range(1000..ttl * 2 + 2000), slot, detail)
        }
        FaultKind::PartitionAllReset | FaultKind::PartitionAllBlackhole => {
            (rng.random_range(1000..ttl * 2), "all".into(), String::new())
        }
        FaultKind::SlowServer => (
            rng.random_range(2000..8000),
            server(rng),
            rng.random_range(20..300u64).to_string(),
        ),
        FaultKind::Compaction | FaultKind::Garbage => (0, "etcd".into(), String::new()),
        FaultKind::KeyDelete | FaultKind::KeyOverwrite | FaultKind::LeaseRevoke => (0, server(rng), String::new()),
        FaultKind::ServerKill => (
            rng.random_range(1000..6000),
            server(rng),
            either(rng, "same_port", "new_port"),
        ),
        FaultKind::ServerTerm => (
            rng.random_range(2000..5000),
            server(rng),
            either(rng, "same_port", "new_port"),
        ),
        FaultKind::ServerFreeze => (rng.random_range(1000..ttl * 2), server(rng), String::new()),
        FaultKind::ServerCut => (
            rng.random_range(1000..5000),
            server(rng),
            either(rng, "reset", "blackhole"),
        ),
        FaultKind::ClientRestart => (
            rng.random_range(500..2000),
            format!("c{}", rng.random_range(0..shape.clients)),
            either(rng, "sigterm", "sigkill"),
        ),
        // Down from a moment to past the TTL: owners find their leases gone either when etcd
        // answers a renewal with "no such lease" or after failing to renew at all.
        FaultKind::EtcdWipe => (rng.random_range(500..ttl * 2), "m0".into(), String::new()),
    };
    Fault {
        id,
        kind,
        at_ms,
        duration_ms,
        target,
        detail,
    }
}

fn fits(candidate: &Fault, placed: &[Fault], shape: &Shape) -> bool {
    // Instant faults still get a moment of their own, so two never land on the same instant.
    let span = |f: &Fault| (f.at_ms, f.end_ms().max(f.at_ms + 1));
    let (start, end) = span(candidate);
    let overlapping: Vec<&Fault> = placed
        .iter()
        .filter(|f| {
            let (s, e) = span(f);
            s < end && start < e
        })
        .collect();
    let is_slot_fault = |f: &Fault| f.target.starts_with('s') || f.target.starts_with('c');
    if candidate.kind.is_cluster() && overlapping.iter().any(|f| f.kind.is_cluster()) {
        return false;
    }
    if is_slot_fault(candidate) && overlapping.iter().any(|f| f.target == candidate.target) {
        return false;
    }
    if candidate.kind.takes_server_down() {
        let down = overlapping.iter().filter(|f| f.kind.takes_server_down()).count();
        if down + 1 >= shape.servers {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            members: 3,
            servers: 4,
            clients: 2,
            duration_ms: 60_000,
            warmup_ms: 3_000,
            settle_ms: 17_000,
            ttl_ms: 3_000,
            kinds: FaultKind::for_members(3),
        }
    }

    fn single() -> Shape {
        Shape {
            members: 1,
            kinds: FaultKind::for_members(1),
            ..shape()
        }
    }

    #[test]
    fn a_seed_names_one_schedule() {
        assert_eq!(generate(7, &shape()), generate(7, &shape()));
        assert_ne!(generate(7, &shape()), generate(8, &shape()));
    }

    #[test]
    fn schedules_keep_their_limits() {
        let shape = shape();
        for seed in 0..200 {
            let faults = generate(seed, &shape);
            assert!(!faults.is_empty(), "seed {seed} drew no fault");
            for (i, fault) in faults.iter().enumerate() {
                assert!(fault.at_ms >= shape.warmup_ms);
                assert!(fault.end_ms() <= shape.duration_ms - shape.settle_ms, "{fault:?}");
                assert!(
                    fits(fault, &faults[..i], &shape),
                    "seed {seed}: {fault:?} breaks a limit"
                );
            }
        }
    }

    #[test]
    fn a_single_member_draws_wipes_and_no_leader_kill() {
        let single = single();
        let faults: Vec<Fault> = (0..50).flat_map(|seed| generate(seed, &single)).collect();
        assert!(faults.iter().any(|f| f.kind == FaultKind::EtcdWipe));
        assert!(faults.iter().all(|f| f.kind != FaultKind::LeaderKill));
        assert!(
            faults
                .iter()
                .filter(|f| f.kind == FaultKind::MemberKill || f.kind == FaultKind::EtcdWipe)
                .all(|f| f.target == "m0")
        );
        let three: Vec<Fault> = (0..50).flat_map(|seed| generate(seed, &shape())).collect();
        assert!(three.iter().all(|f| f.kind != FaultKind::EtcdWipe));
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert!("meteor".parse::<FaultKind>().unwrap_err().contains("member_kill"));
    }
}
