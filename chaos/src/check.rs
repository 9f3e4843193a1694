//! The checker: reads a history and proves, invariant by invariant, that nothing was lost and
//! no call failed that should not have — or says where and when it was.
//!
//! Every invariant has a bound, stated with its reason in [`Bounds::describe`] and printed with
//! the result. The bounds are about the framework's promises, not about this machine being
//! fast: each is a protocol time (TTL, keep-alive, back-off) plus a margin of at least a second
//! for a loaded two-core machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::history::Record;
use crate::timeline::{Intervals, Life, Timeline};

/// The bounds the invariants are checked with, in ms.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// The lease TTL.
    pub ttl: u64,
    /// Registration to presence in every undisturbed client's snapshot.
    pub join: u64,
    /// How long a client may take to catch up once its path to etcd is whole again.
    pub recover: u64,
    /// Beyond the TTL, how long etcd and clients may take to drop a dead instance.
    pub leave: u64,
    /// How far apart a client's removal and etcd's delete may be observed.
    pub lag: u64,
    /// SIGTERM to exit.
    pub stop: u64,
    /// Last fault healed to every client equal to etcd's truth.
    pub converge: u64,
    /// Extra live tokio tasks allowed at the end over the baseline.
    pub tasks: usize,
    /// Extra open descriptors allowed at the end over the baseline.
    pub fds: usize,
    /// Extra resident memory allowed over twice the baseline, KiB.
    pub rss_kb: u64,
    /// The checking grid's step.
    pub step: u64,
}

impl Bounds {
    /// The bounds for a lease TTL of `ttl` ms (watches notice a silent etcd within 5 s).
    pub fn for_ttl(ttl: u64) -> Self {
        Self {
            ttl,
            join: 2_000,
            recover: 12_000,
            leave: 2_000,
            lag: 1_000,
            stop: 10_000,
            converge: 15_000,
            tasks: 64,
            fds: 32,
            rss_kb: 32 * 1024,
            step: 100,
        }
    }

    /// Each bound with the reason it is what it is.
    pub fn describe(&self) -> Vec<(u8, String)> {
        vec![
            (
                1,
                format!(
                    "a failed `write` must overlap (from 500 ms before its start to its end) a fault on some \
                     instance: dead, frozen or cut off from clients; a `read` (idempotent) must not fail while \
                     an instance the client knew of (in its set, or held by etcd for the {} ms join bound) was \
                     registered that long before it started and stayed healthy (alive, not frozen, not cut off, \
                     not stopping) until it ended; a `write` must reach a server at most once",
                    self.join
                ),
            ),
            (
                2,
                format!(
                    "join: an instance etcd held throughout the last {} ms is in the snapshot of every client \
                     whose path to etcd was undisturbed for the last {} ms — a watch event takes milliseconds, \
                     {} ms is scheduling margin; {} ms is a silent etcd restarting the watch (within 5 s, by progress requests) plus back-off and a \
                     re-list, with margin. never empties: a client removes an instance only if etcd lacked it \
                     within {} ms of the removal (truth is read every 100 ms, snapshots every 20 ms), and its \
                     set never goes empty while etcd holds instances or cannot be read",
                    self.join, self.recover, self.join, self.recover, self.lag
                ),
            ),
            (
                3,
                format!(
                    "an instance that stopped renewing its lease (killed, exited, frozen, or cut off from \
                     etcd) at x is gone from etcd and from every undisturbed client by x + TTL {} ms + {} ms \
                     (etcd revokes expired leases every 500 ms; the delete reaches clients in milliseconds); \
                     an etcd freeze or leader change in that window restarts the TTL (etcd refreshes leases \
                     when a leader takes over), so the deadline moves to its end + TTL + {} ms",
                    self.ttl, self.leave, self.leave
                ),
            ),
            (
                4,
                format!(
                    "from the last fault's end + {} ms to the end of the run, every client's set equals etcd's \
                     and every live server's key is in etcd, attached to a lease — {} ms is the recovery bound \
                     plus 3 s for a restarted server to register",
                    self.converge, self.converge
                ),
            ),
            (
                5,
                format!(
                    "no panic; a process exits only when killed, or with code 0 within {} ms of SIGTERM (drain \
                     0.5 s + shutdown deadline 2 s + unregister and close, each bounded by the 3 s request \
                     timeout, + margin); at the end of a life of 10 s or more, live tasks ≤ baseline + {}, open \
                     descriptors ≤ baseline + {}, memory ≤ 2 × baseline + {} MiB, the baseline being the first \
                     sample 3 s after start (the steady state holds a fixed number of connections and tasks \
                     per instance, and every instance is back)",
                    self.stop,
                    self.tasks,
                    self.fds,
                    self.rss_kb / 1024
                ),
            ),
        ]
    }
}

/// One broken promise.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant (1–5).
    pub invariant: u8,
    /// When it was first seen, ms.
    pub t: u64,
    /// What, with the evidence.
    pub what: String,
}

/// The checker's verdict on one history.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The replay command.
    pub replay: String,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Calls recorded.
    pub calls: usize,
    /// Calls that failed.
    pub failed: usize,
    /// Failed calls the invariants allow.
    pub failures_allowed: usize,
    /// Every violation, in invariant then time order.
    pub violations: Vec<Violation>,
    /// The bounds used, described.
    pub bounds: Vec<(u8, String)>,
}

impl Report {
    /// Whether no invariant was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The report as text: bounds, counts, then each violation.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seed {}: {} calls, {} failed ({} allowed by invariant 1)",
            self.seed, self.calls, self.failed, self.failures_allowed
        );
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(out, "faults: {}", faults.join(", "));
        for (n, bound) in &self.bounds {
            let count = self.violations.iter().filter(|v| v.invariant == *n).count();
            let verdict = if count == 0 {
                "ok".to_owned()
            } else {
                format!("{count} VIOLATION(S)")
            };
            let _ = writeln!(out, "invariant {n}: {verdict}\n    bound: {bound}");
            for violation in self.violations.iter().filter(|v| v.invariant == *n).take(40) {
                let _ = writeln!(out, "    - t={:.1}s {}", violation.t as f64 / 1000.0, violation.what);
            }
            if count > 40 {
                let _ = writeln!(out, "    ... and {} more", count - 40);
            }
        }
        match self.passed() {
            true => {
                let _ = writeln!(out, "PASSED");
            }
            false => {
                let _ = writeln!(out, "FAILED — replay with: {}", self.replay);
            }
        }
        out
    }
}

/// Checks `records` against every invariant.
pub fn check(records: &[Record]) -> Report {
    let timeline = Timeline::build(records);
    let bounds = Bounds::for_ttl(timeline.ttl_ms.max(1));
    check_timeline(&timeline, &bounds)
}

/// Checks an indexed history with `bounds`.
pub fn check_timeline(timeline: &Timeline, bounds: &Bounds) -> Report {
    let world = World::new(timeline, bounds);
    let mut report = Report {
        seed: timeline.seed,
        replay: timeline.replay.clone(),
        calls: timeline.calls.len(),
        failed: timeline.calls.iter().filter(|c| !c.ok).count(),
        bounds: bounds.describe(),
        ..Report::default()
    };
    for fault in &timeline.faults {
        *report.faults.entry(fault.kind.clone()).or_default() += 1;
    }
    let (allowed, mut violations) = world.calls();
    report.failures_allowed = allowed;
    violations.extend(world.presence());
    violations.extend(world.departures());
    violations.extend(world.convergence());
    violations.extend(world.processes());
    violations.sort_by_key(|v| (v.invariant, v.t));
    report.violations = violations;
    report
}

/// The timeline with the derived facts the invariants share.
struct World<'a> {
    tl: &'a Timeline,
    b: &'a Bounds,
    /// Per client slot: when its path to etcd was disturbed (its own link, or etcd itself).
    disturbed: BTreeMap<String, Intervals>,
    /// Per server incarnation index: when it could not renew its lease.
    starved: Vec<Intervals>,
    /// Per server incarnation index: when calls could not reach it.
    trouble: Vec<Intervals>,
    /// Per server incarnation index: when something happened to it alone (dead, frozen,
    /// stopping, cut off from etcd by itself, its key deleted, overwritten or its lease
    /// revoked, for the recovery bound after), so that leaving clients' sets is its own doing.
    own_fault: Vec<Intervals>,
    /// The same without the recovery tail after a freeze or a partition: what was wrong with
    /// the instance at that very moment.
    own_now: Vec<Intervals>,
    /// When etcd as a whole could not serve or could restart leases (freeze, leader change).
    etcd_outage: Intervals,
}

impl<'a> World<'a> {
    fn new(tl: &'a Timeline, b: &'a Bounds) -> Self {
        let end_of = |f: &crate::timeline::FaultSpan| f.end.unwrap_or(u64::MAX);
        let mut etcd_wide = Intervals::default();
        let mut etcd_outage = Intervals::default();
        for fault in &tl.faults {
            match fault.kind.as_str() {
                "cluster_freeze_short" | "cluster_freeze_long" => {
                    etcd_wide.add(fault.start, end_of(fault));
                    etcd_outage.add(fault.start, end_of(fault));
                }
                // A leader change refreshes every lease; a member restart can take the lead.
                "leader_kill" | "member_kill" => {
                    etcd_wide.add(fault.start, end_of(fault));
                    etcd_outage.add(fault.start, end_of(fault).saturating_add(1_000));
                }
                // etcd is gone, then back empty: every watch breaks, and owners re-register. No
                // lease survives to be refreshed, so departures keep their deadlines.
                "etcd_wipe" => etcd_wide.add(fault.start, end_of(fault)),
                _ => {}
            }
        }
        let link = |name: String| tl.link_down.get(&name).cloned().unwrap_or_default();
        let mut disturbed = BTreeMap::new();
        for client in &tl.clients {
            disturbed.entry(client.slot.clone()).or_insert_with(|| {
                let mut spans = link(format!("{}:etcd", client.slot));
                spans.extend(&etcd_wide);
                spans
            });
        }
        let mut starved = Vec::new();
        let mut trouble = Vec::new();
        let mut own_fault = Vec::new();
        let mut own_now = Vec::new();
        for server in &tl.servers {
            let death = server.death().unwrap_or(u64::MAX);
            let mut s = server.frozen.clone();
            s.add(death, u64::MAX);
            for &(a, e) in link(format!("{}:etcd", server.slot)).spans() {
                s.add(a.max(server.spawned), e.min(death));
            }
            starved.push(s);
            let mut t = server.frozen.clone();
            t.add(death, u64::MAX);
            // A server that could not withdraw (etcd unreachable) is still picked while it stops,
            // and calls racing its exit may fail: it is dying from its SIGTERM on.
            if server.unregister_failed {
                t.add(server.sigterm.unwrap_or(death), death);
            }
            for &(a, e) in link(format!("{}:clients", server.slot)).spans() {
                t.add(a.max(server.spawned), e.min(death));
            }
            trouble.push(t);
            // Each fault counts for the recovery bound after it ends: the instance's lease may
            // have expired and its owner is putting it back.
            let mut own = Intervals::default();
            let mut now = Intervals::default();
            for &(a, e) in server.frozen.spans() {
                own.add(a, e.saturating_add(b.recover));
                now.add(a, e);
            }
            // A fresh incarnation is still arriving (on a reused address, the old one's key may
            // just be leaving); a stopping or dead one is leaving.
            for span in [
                (server.spawned, server.registered.map_or(u64::MAX, |r| r + b.join)),
                (death.min(server.sigterm.unwrap_or(u64::MAX)), u64::MAX),
            ] {
                own.add(span.0, span.1);
                now.add(span.0, span.1);
            }
            if let Some(spans) = tl.own_link_down.get(&format!("{}:etcd", server.slot)) {
                for &(a, e) in spans.spans() {
                    own.add(a, e.saturating_add(b.recover));
                    now.add(a, e);
                }
            }
            for fault in tl.faults.iter().filter(|f| f.target == server.slot) {
                if matches!(fault.kind.as_str(), "key_delete" | "key_overwrite" | "lease_revoke") {
                    own.add(fault.start, fault.start + b.recover);
                    now.add(fault.start, fault.start + b.recover);
                }
            }
            own_fault.push(own);
            own_now.push(now);
        }
        Self {
            tl,
            b,
            disturbed,
            starved,
            trouble,
            own_fault,
            own_now,
            etcd_outage,
        }
    }

    fn disturbed_within(&self, slot: &str, from: u64, to: u64) -> bool {
        self.disturbed.get(slot).is_some_and(|d| d.overlaps(from, to))
    }

    /// The truth read in force at `t`.
    fn truth_at(&self, t: u64) -> Option<&crate::timeline::TruthRead> {
        let i = self.tl.truth.partition_point(|r| r.t <= t);
        i.checked_sub(1).map(|i| &self.tl.truth[i])
    }

    /// Addresses etcd held at every read in force over `[from, to]`, if it answered throughout.
    fn truth_throughout(&self, from: u64, to: u64) -> Option<BTreeSet<String>> {
        let first = self.truth_at(from)?;
        let mut held = first.members.clone();
        if !first.reachable {
            return None;
        }
        for read in self.tl.truth.iter().filter(|r| r.t > from && r.t <= to) {
            if !read.reachable {
                return None;
            }
            held.retain(|a| read.members.contains(a));
        }
        Some(held)
    }

    /// The instances `client` knew of at `at`: its set then, and what etcd held throughout
    /// `[since, at]` if the client's path to etcd was undisturbed for the recovery bound (as
    /// invariant 2's join asks): a client whose watch is still recovering, or that started
    /// while etcd could not answer it, knows only its set (seed 6: a client restarted during an
    /// etcd freeze and a partition of everyone had its first snapshot 6 s after etcd answered).
    fn known_to(&self, client: &(String, u32), at: u64, since: u64) -> BTreeSet<String> {
        let mut known = match self.disturbed_within(&client.0, at.saturating_sub(self.b.recover), at) {
            true => BTreeSet::new(),
            false => self.truth_throughout(since, at).unwrap_or_default(),
        };
        let life = self
            .tl
            .clients
            .iter()
            .find(|life| life.slot == client.0 && life.r#gen == client.1);
        // Strictly before: times are whole milliseconds, and a set that arrived in the call's
        // starting millisecond may have come just after the pick (seed 6 again).
        if let Some((_, members)) = life.and_then(|l| l.snapshots.iter().rev().find(|(t, _)| *t < at)) {
            known.extend(members.iter().cloned());
        }
        known
    }

    fn healthy_throughout(&self, i: usize, from: u64, to: u64) -> bool {
        let server = &self.tl.servers[i];
        server.registered.is_some_and(|r| r <= from)
            && server.sigterm.is_none_or(|s| s > to)
            && !self.trouble[i].overlaps(from, to)
    }

    /// Invariant 1: which failed calls are allowed, and every one that is not.
    fn calls(&self) -> (usize, Vec<Violation>) {
        let mut allowed = 0;
        let mut violations = Vec::new();
        for call in self.tl.calls.iter().filter(|c| !c.ok && c.end <= self.tl.end) {
            let (client, r#gen) = &call.client;
            let who = format!(
                "{client}/{gen} call {} ({}, {}..{} ms)",
                call.id, call.method, call.start, call.end
            );
            if call.method == "read" {
                let from = call.start.saturating_sub(self.b.join);
                // The client must have known of the healthy instance: it was in its set when the
                // call started, or etcd held it long enough for any client to know. A client
                // that starts while etcd has lost every lease has nothing to call.
                let known = self.known_to(&call.client, call.start, from);
                let healthy = (0..self.tl.servers.len())
                    .filter(|&i| known.contains(&self.tl.servers[i].address))
                    .find(|&i| self.healthy_throughout(i, from, call.end));
                match healthy {
                    Some(i) => violations.push(Violation {
                        invariant: 1,
                        t: call.end,
                        what: format!(
                            "idempotent {who} failed [{}] while {} ({}/{}) was healthy throughout",
                            call.error, self.tl.servers[i].address, self.tl.servers[i].slot, self.tl.servers[i].r#gen
                        ),
                    }),
                    None => allowed += 1,
                }
            } else {
                let from = call.start.saturating_sub(500);
                // A client cut off from etcd cannot see a server withdraw: it may still send to
                // one that is stopping, and a call racing that process's exit may fail.
                let unseen_stop = |i: usize| {
                    self.tl.servers[i]
                        .sigterm
                        .is_some_and(|s| s <= call.start && self.disturbed_within(&call.client.0, s, call.start))
                };
                let excuse =
                    (0..self.tl.servers.len()).find(|&i| self.trouble[i].overlaps(from, call.end) || unseen_stop(i));
                // As for reads: a client that knew of no instance (it started while etcd had
                // lost every lease) had nowhere to send the write (seed 28).
                let knew_none = self
                    .known_to(&call.client, call.start, call.start.saturating_sub(self.b.join))
                    .is_empty();
                match excuse {
                    _ if knew_none => allowed += 1,
                    Some(_) => allowed += 1,
                    None => violations.push(Violation {
                        invariant: 1,
                        t: call.end,
                        what: format!(
                            "non-idempotent {who} failed [{}] with no instance dead, frozen or cut off",
                            call.error
                        ),
                    }),
                }
            }
        }
        for call in self.tl.calls.iter().filter(|c| c.method == "write") {
            if let Some(attempts) = self.tl.received.get(&call.id).filter(|a| a.len() > 1) {
                let servers: Vec<String> = attempts.iter().map(|(s, g, t)| format!("{s}/{g} at {t}")).collect();
                violations.push(Violation {
                    invariant: 1,
                    t: call.start,
                    what: format!(
                        "non-idempotent call {} ran {} times: {}",
                        call.id,
                        attempts.len(),
                        servers.join(", ")
                    ),
                });
            }
        }
        (allowed, violations)
    }

    /// Invariant 2: joins within the bound, removals only after real deletes, never empty.
    fn presence(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        for client in &self.tl.clients {
            let end = client.death().unwrap_or(self.tl.end).min(self.tl.end);
            let mut missing: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            let mut t = client.spawned + self.b.recover;
            while t < end {
                if !self.disturbed_within(&client.slot, t.saturating_sub(self.b.recover), t)
                    && let Some(held) = self.truth_throughout(t.saturating_sub(self.b.join), t)
                {
                    let empty = BTreeSet::new();
                    let snapshot = client.snapshot_at(t).unwrap_or(&empty);
                    // A key deleted and put back between two truth polls was not held throughout.
                    let since = t.saturating_sub(self.b.join);
                    for address in held.difference(snapshot) {
                        // Truth is polled: a client can see a delete before the next poll does,
                        // as a removal may be seen up to `lag` before etcd's delete is.
                        if !self.key_removed_by_fault(address, since, t)
                            && !self.truth_lacks(address, t, t + self.b.lag)
                        {
                            missing.entry(address.clone()).or_default().push(t);
                        }
                    }
                }
                t += self.b.step;
            }
            for (address, times) in missing {
                for (from, to) in runs(&times, self.b.step) {
                    violations.push(Violation {
                        invariant: 2,
                        t: from,
                        what: format!(
                            "{}/{} lacked {address} for {:.1}s ({from}..{to} ms) although etcd held it and the \
                             client's path to etcd was whole",
                            client.slot,
                            client.r#gen,
                            (to - from + self.b.step) as f64 / 1000.0
                        ),
                    });
                }
            }
            violations.extend(self.removals(client));
        }
        violations
    }

    fn removals(&self, client: &Life) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut added: BTreeMap<&str, u64> = BTreeMap::new();
        let mut previous: Option<&BTreeSet<String>> = None;
        for (t, members) in &client.snapshots {
            let t = *t;
            for address in members {
                added.entry(address).or_insert(t);
            }
            if let Some(previous) = previous {
                for gone in previous.difference(members) {
                    let since = added.remove(gone.as_str()).unwrap_or(0).saturating_sub(self.b.lag);
                    // Truth is polled; a key deleted and put back between two polls is seen
                    // through the fault that deleted it.
                    let deleted = self.truth_lacks(gone, since, t + self.b.lag)
                        || self.key_removed_by_fault(gone, since, t + self.b.lag);
                    let live = self.innocent(gone, t);
                    if !deleted || live.is_some() {
                        let why = match (deleted, live) {
                            (false, _) => "etcd never lacked it".to_owned(),
                            (true, Some(owner)) => format!(
                                "{owner} was alive and nothing had happened to it alone: only registry trouble removed it"
                            ),
                            (true, None) => unreachable!("not a violation"),
                        };
                        violations.push(Violation {
                            invariant: 2,
                            t,
                            what: format!(
                                "{}/{} removed {gone}: {why} ({})",
                                client.slot,
                                client.r#gen,
                                self.etcd_state(t)
                            ),
                        });
                    }
                }
                if !previous.is_empty() && members.is_empty() {
                    let innocent = self.tl.servers.iter().find_map(|s| self.healthy_now(&s.address, t));
                    if let Some(owner) = innocent {
                        let back = client
                            .snapshots
                            .iter()
                            .find(|(at, m)| *at > t && !m.is_empty())
                            .map_or("never refilled".to_owned(), |(at, _)| {
                                format!("empty for {} ms", at - t)
                            });
                        violations.push(Violation {
                            invariant: 2,
                            t,
                            what: format!(
                                "{}/{} emptied its set, {back}, while {owner} was registered, alive and nothing was wrong with it alone ({})",
                                client.slot,
                                client.r#gen,
                                self.etcd_state(t)
                            ),
                        });
                    }
                }
            }
            previous = Some(members);
        }
        violations
    }

    /// Whether a reachable read of etcd between `from` and `to` lacked `address`.
    fn truth_lacks(&self, address: &str, from: u64, to: u64) -> bool {
        self.tl
            .truth
            .iter()
            .any(|r| r.t >= from && r.t <= to && r.reachable && !r.members.contains(address))
    }

    /// Whether a fault deleted the provider key of `address` (a key delete, the revoke of its
    /// lease, or a wipe of etcd, which deletes every key) between `from` and `to`.
    fn key_removed_by_fault(&self, address: &str, from: u64, to: u64) -> bool {
        self.tl.faults.iter().any(|fault| {
            let hit = match fault.kind.as_str() {
                "key_delete" | "lease_revoke" => self
                    .tl
                    .servers
                    .iter()
                    .any(|s| s.slot == fault.target && s.address == address && s.alive_at(fault.start)),
                "etcd_wipe" => true,
                _ => false,
            };
            hit && (from..=to).contains(&fault.start)
        })
    }

    /// The server incarnation at `address` if, at `t`, it was registered, alive, and had had no
    /// fault of its own within the recovery bound: nothing but registry trouble could make a
    /// client drop it.
    fn innocent(&self, address: &str, t: u64) -> Option<String> {
        self.untouched(address, t, &self.own_fault)
    }

    /// The server incarnation at `address` if, at `t`, it was registered, alive, and nothing
    /// was wrong with it alone at that moment.
    fn healthy_now(&self, address: &str, t: u64) -> Option<String> {
        self.untouched(address, t, &self.own_now)
    }

    fn untouched(&self, address: &str, t: u64, faults: &[Intervals]) -> Option<String> {
        self.tl.servers.iter().enumerate().find_map(|(i, s)| {
            let fine =
                s.address == address && s.alive_at(t) && s.registered.is_some_and(|r| r <= t) && !faults[i].contains(t);
            fine.then(|| format!("{}/{}", s.slot, s.r#gen))
        })
    }

    fn etcd_state(&self, t: u64) -> String {
        match self.truth_at(t) {
            Some(r) if r.reachable => format!("etcd held {} instance(s)", r.members.len()),
            Some(_) => "etcd could not be read".to_owned(),
            None => "etcd not read yet".to_owned(),
        }
    }

    /// Invariant 3: instances that stop renewing leave etcd and every client in time.
    fn departures(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        for (i, server) in self.tl.servers.iter().enumerate() {
            for &(x, y) in self.starved[i].spans() {
                let mut deadline = x + self.b.ttl + self.b.leave;
                for &(s, e) in self.etcd_outage.spans() {
                    if s < deadline && e > x {
                        deadline = deadline.max(e.saturating_add(self.b.ttl + self.b.leave));
                    }
                }
                let until = y.min(self.tl.end);
                let mut in_etcd = Vec::new();
                let mut in_client: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                let mut t = deadline;
                while t < until {
                    // Once a newer incarnation has registered the same address, the key is its
                    // own, and its own departures are checked against its own deadlines.
                    let reused = self.tl.servers.iter().enumerate().any(|(j, other)| {
                        j != i
                            && other.address == server.address
                            && other.spawned > server.spawned
                            && other.registered.is_some_and(|r| r <= t)
                    });
                    // A key overwritten without a lease after its owner went quiet cannot expire:
                    // only its owner, back in touch, can put it back on a lease.
                    let overwritten =
                        self.tl.faults.iter().any(|f| {
                            f.kind == "key_overwrite" && f.target == server.slot && (x..=t).contains(&f.start)
                        });
                    // Clients rightly follow etcd in keeping such a key.
                    let stranded = overwritten
                        && self
                            .truth_at(t)
                            .is_some_and(|r| r.reachable && r.detached.contains(&server.address));
                    if !reused && !stranded {
                        if self
                            .truth_at(t)
                            .is_some_and(|r| r.reachable && r.members.contains(&server.address))
                        {
                            in_etcd.push(t);
                        }
                        for client in self.tl.clients.iter().filter(|c| c.alive_at(t)) {
                            if !self.disturbed_within(&client.slot, t.saturating_sub(self.b.recover), t)
                                && client.snapshot_at(t).is_some_and(|s| s.contains(&server.address))
                            {
                                in_client
                                    .entry(format!("{}/{}", client.slot, client.r#gen))
                                    .or_default()
                                    .push(t);
                            }
                        }
                    }
                    t += self.b.step;
                }
                let why = format!("stopped renewing at {x} ms, deadline {deadline} ms");
                for (from, to) in runs(&in_etcd, self.b.step) {
                    let detached = self
                        .truth_at(from)
                        .is_some_and(|r| r.detached.contains(&server.address));
                    violations.push(Violation {
                        invariant: 3,
                        t: from,
                        what: format!(
                            "etcd still held {} ({}/{}) {from}..{to} ms ({why}){}",
                            server.address,
                            server.slot,
                            server.r#gen,
                            if detached { "; its key had no lease" } else { "" }
                        ),
                    });
                }
                for (client, times) in in_client {
                    for (from, to) in runs(&times, self.b.step) {
                        violations.push(Violation {
                            invariant: 3,
                            t: from,
                            what: format!(
                                "{client} still had {} ({}/{}) {from}..{to} ms ({why})",
                                server.address, server.slot, server.r#gen
                            ),
                        });
                    }
                }
            }
        }
        violations
    }

    /// Invariant 4: after the last fault, clients equal etcd and every live server is in it.
    fn convergence(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        let healed = self
            .tl
            .faults
            .iter()
            .filter(|f| !self.tl.not_applied.contains(&f.id))
            .map(|f| f.end.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        if healed == u64::MAX {
            let open: Vec<String> = self
                .tl
                .faults
                .iter()
                .filter(|f| f.end.is_none())
                .map(|f| format!("{} ({})", f.id, f.kind))
                .collect();
            violations.push(Violation {
                invariant: 4,
                t: self.tl.end,
                what: format!("faults never healed: {}", open.join(", ")),
            });
            return violations;
        }
        let from = healed + self.b.converge;
        if from >= self.tl.end {
            violations.push(Violation {
                invariant: 4,
                t: self.tl.end,
                what: format!(
                    "cannot be checked: the last fault healed at {healed} ms and the run ended at {} ms, less than \
                     the {} ms convergence bound later; give the run a longer settle period",
                    self.tl.end, self.b.converge
                ),
            });
            return violations;
        }
        let mut t = from;
        let mut diverged: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut unreadable = Vec::new();
        while t <= self.tl.end {
            match self.truth_at(t) {
                Some(truth) if truth.reachable => {
                    for client in self.tl.clients.iter().filter(|c| c.alive_at(t)) {
                        if client.snapshot_at(t) != Some(&truth.members) {
                            diverged
                                .entry(format!("{}/{}", client.slot, client.r#gen))
                                .or_default()
                                .push(t);
                        }
                    }
                }
                _ => unreadable.push(t),
            }
            t += self.b.step;
        }
        for (from, to) in runs(&unreadable, self.b.step) {
            violations.push(Violation {
                invariant: 4,
                t: from,
                what: format!("etcd could not be read {from}..{to} ms, after every fault had healed"),
            });
        }
        for (client, times) in diverged {
            let life = self
                .tl
                .clients
                .iter()
                .find(|c| format!("{}/{}", c.slot, c.r#gen) == client);
            for (a, b) in runs(&times, self.b.step) {
                let saw = life
                    .and_then(|l| l.snapshot_at(a))
                    .map_or("nothing".to_owned(), |s| format!("{s:?}"));
                let truth = self.truth_at(a).map_or("?".to_owned(), |r| format!("{:?}", r.members));
                violations.push(Violation {
                    invariant: 4,
                    t: a,
                    what: format!("{client} differed from etcd {a}..{b} ms: it had {saw}, etcd {truth}"),
                });
            }
        }
        let end_truth = self.truth_at(self.tl.end);
        let mut latest: BTreeMap<&str, &Life> = BTreeMap::new();
        for server in &self.tl.servers {
            latest.insert(&server.slot, server);
        }
        for server in latest.values().filter(|s| s.alive_at(self.tl.end)) {
            let problem = match (server.registered, end_truth) {
                (None, _) => Some("never registered".to_owned()),
                (_, Some(r)) if r.reachable && !r.members.contains(&server.address) => {
                    Some("its key is not in etcd".to_owned())
                }
                (_, Some(r)) if r.reachable && r.detached.contains(&server.address) => {
                    Some("its key has no lease".to_owned())
                }
                _ => None,
            };
            if let Some(problem) = problem {
                violations.push(Violation {
                    invariant: 4,
                    t: self.tl.end,
                    what: format!(
                        "live server {}/{} ({}) at the end: {problem}",
                        server.slot, server.r#gen, server.address
                    ),
                });
            }
        }
        violations
    }

    /// Invariant 5: no panics, no unexplained exits, no leaks.
    fn processes(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        for life in self.tl.servers.iter().chain(&self.tl.clients) {
            let who = format!("{}/{}", life.slot, life.r#gen);
            for (t, message) in &life.panics {
                violations.push(Violation {
                    invariant: 5,
                    t: *t,
                    what: format!("{who} panicked: {message}"),
                });
            }
            if let Some((t, status)) = &life.exited {
                let killed = life.sigkill.is_some_and(|k| k <= *t);
                let termed = life.sigterm.filter(|s| s <= t);
                let problem = match (killed, termed) {
                    (true, Some(s)) if t.saturating_sub(s) > self.b.stop => Some(format!(
                        "did not stop within {} ms of SIGTERM and was killed",
                        self.b.stop
                    )),
                    (true, _) => None,
                    (false, Some(s)) if t - s > self.b.stop => Some(format!("took {} ms to stop after SIGTERM", t - s)),
                    (false, Some(_)) if status != "code 0" => Some(format!("exited with {status} after SIGTERM")),
                    (false, Some(_)) => None,
                    (false, None) => Some(format!("exited on its own ({status})")),
                };
                if let Some(problem) = problem {
                    violations.push(Violation {
                        invariant: 5,
                        t: *t,
                        what: format!("{who} {problem}"),
                    });
                }
            }
            let end = life.death().unwrap_or(u64::MAX).min(self.tl.end);
            let baseline = life.stats.iter().find(|s| s.0 >= life.spawned + 3_000);
            let last = life.stats.iter().rev().find(|s| s.0 <= end);
            if let (Some(&(b0, tasks0, fds0, rss0)), Some(&(b1, tasks1, fds1, rss1))) = (baseline, last)
                && b1 >= b0 + 10_000
            {
                let mut leaks = Vec::new();
                if tasks1 > tasks0 + self.b.tasks {
                    leaks.push(format!("tasks {tasks0} → {tasks1}"));
                }
                if fds1 > fds0 + self.b.fds {
                    leaks.push(format!("descriptors {fds0} → {fds1}"));
                }
                if rss1 > 2 * rss0 + self.b.rss_kb {
                    leaks.push(format!("memory {rss0} → {rss1} KiB"));
                }
                if !leaks.is_empty() {
                    violations.push(Violation {
                        invariant: 5,
                        t: b1,
                        what: format!("{who} grew between {b0} and {b1} ms: {}", leaks.join(", ")),
                    });
                }
            }
        }
        violations
    }
}

/// Groups sorted grid times into runs `(first, last)` of consecutive steps.
fn runs(times: &[u64], step: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &t in times {
        match runs.last_mut() {
            Some(run) if t <= run.1 + step => run.1 = t,
            _ => runs.push((t, t)),
        }
    }
    runs
}
