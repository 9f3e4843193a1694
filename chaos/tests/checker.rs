//! The checker is itself tested: small hand-made histories, each breaking one promise the way a
//! real defect would, must be caught — and the same histories without the defect must pass.

use jovian_chaos::check::{Report, check};
use jovian_chaos::history::{Event, Record};

const A: &str = "127.0.0.1:20001";
const B: &str = "127.0.0.1:20002";

/// A quiet run: two servers registered, one client that sees both, etcd answering, and one
/// long etcd freeze (10–16 s) that the framework promises clients ride out.
fn quiet_run() -> Vec<Record> {
    let mut h = vec![
        at(
            0,
            "orchestrator",
            0,
            Event::Run {
                seed: 1,
                duration_ms: 40_000,
                ttl_ms: 3_000,
                members: 3,
                servers: 2,
                clients: 1,
                replay: "replay".into(),
            },
        ),
        at(100, "s0", 1, proc("spawned")),
        at(100, "s1", 1, proc("spawned")),
        at(120, "s0", 1, lifecycle("registered", A)),
        at(120, "s1", 1, lifecycle("registered", B)),
        at(150, "orchestrator", 0, truth(true, &[A, B])),
        at(200, "c0", 1, proc("spawned")),
        at(250, "c0", 1, snapshot(&[A, B])),
        at(
            10_000,
            "orchestrator",
            0,
            Event::FaultStart {
                id: 0,
                kind: "cluster_freeze_long".into(),
                target: "etcd".into(),
                detail: String::new(),
            },
        ),
        at(10_300, "orchestrator", 0, truth(false, &[])),
        at(16_000, "orchestrator", 0, Event::FaultEnd { id: 0 }),
        at(16_100, "orchestrator", 0, truth(true, &[A, B])),
        at(
            40_000,
            "orchestrator",
            0,
            Event::Note {
                text: "run over".into(),
            },
        ),
    ];
    for i in 0..300 {
        let start = 300 + i * 120;
        h.push(call(start, "read", &format!("c0.1.{i}"), true));
    }
    h
}

fn at(t: u64, proc: &str, r#gen: u32, event: Event) -> Record {
    Record {
        t,
        proc: proc.into(),
        r#gen,
        event,
    }
}

fn proc(action: &str) -> Event {
    Event::Proc {
        action: action.into(),
        pid: 1,
        status: if action == "exited" {
            "signal 9".into()
        } else {
            String::new()
        },
    }
}

fn lifecycle(phase: &str, address: &str) -> Event {
    Event::Lifecycle {
        phase: phase.into(),
        address: address.into(),
        error: String::new(),
    }
}

fn truth(reachable: bool, members: &[&str]) -> Event {
    Event::Truth {
        reachable,
        revision: 1,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        detached: Vec::new(),
    }
}

fn snapshot(members: &[&str]) -> Event {
    Event::Snapshot {
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    }
}

fn call(start: u64, method: &str, id: &str, ok: bool) -> Record {
    at(
        start + 5,
        "c0",
        1,
        Event::Call {
            id: id.into(),
            method: method.into(),
            start,
            ok,
            code: if ok { String::new() } else { "Unavailable".into() },
            message: String::new(),
            instance: if ok { format!("s0/1@{A}") } else { String::new() },
        },
    )
}

fn verdict(mut history: Vec<Record>) -> Report {
    history.sort_by_key(|r| r.t);
    check(&history)
}

fn flagged(report: &Report, invariant: u8, needle: &str) -> bool {
    report
        .violations
        .iter()
        .any(|v| v.invariant == invariant && v.what.contains(needle))
}

#[test]
fn a_quiet_run_passes() {
    let report = verdict(quiet_run());
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.calls, 300);
}

#[test]
fn a_client_that_empties_its_set_on_registry_trouble_is_caught() {
    let mut history = quiet_run();
    history.push(at(10_500, "c0", 1, snapshot(&[])));
    history.push(at(16_200, "c0", 1, snapshot(&[A, B])));
    let report = verdict(history);
    assert!(
        flagged(&report, 2, "c0/1 emptied its set, empty for 5700 ms"),
        "{}",
        report.render()
    );
    assert!(
        flagged(&report, 2, &format!("c0/1 removed {A}: etcd never lacked it")),
        "{}",
        report.render()
    );
}

#[test]
fn a_client_that_lags_behind_etcd_is_caught() {
    let mut history = quiet_run();
    // s1 restarts on a new address; the client never hears of it.
    const C: &str = "127.0.0.1:20003";
    history.push(at(
        20_000,
        "s1",
        1,
        Event::Proc {
            action: "sigterm".into(),
            pid: 1,
            status: String::new(),
        },
    ));
    history.push(at(20_100, "orchestrator", 0, truth(true, &[A])));
    history.push(at(20_120, "c0", 1, snapshot(&[A])));
    history.push(at(
        20_600,
        "s1",
        1,
        Event::Proc {
            action: "exited".into(),
            pid: 1,
            status: "code 0".into(),
        },
    ));
    history.push(at(21_000, "s1", 2, proc("spawned")));
    history.push(at(21_100, "s1", 2, lifecycle("registered", C)));
    history.push(at(21_150, "orchestrator", 0, truth(true, &[A, C])));
    let report = verdict(history);
    assert!(flagged(&report, 2, &format!("c0/1 lacked {C}")), "{}", report.render());
    assert!(flagged(&report, 4, "c0/1 differed from etcd"), "{}", report.render());
    assert!(
        !flagged(&report, 5, ""),
        "an orderly stop is not a violation: {}",
        report.render()
    );
}

#[test]
fn an_idempotent_call_failing_beside_a_healthy_instance_is_caught() {
    let mut history = quiet_run();
    history.push(call(5_000, "read", "c0.1.bad", false));
    let report = verdict(history);
    assert!(
        flagged(&report, 1, "idempotent c0/1 call c0.1.bad"),
        "{}",
        report.render()
    );
}

#[test]
fn a_write_failing_on_a_frozen_instance_is_allowed_but_one_running_twice_is_not() {
    let mut history = quiet_run();
    history.push(at(5_000, "s1", 1, proc("sigstop")));
    history.push(at(7_000, "s1", 1, proc("sigcont")));
    history.push(call(5_500, "write", "c0.1.w1", false));
    history.push(call(8_000, "write", "c0.1.w2", true));
    history.push(at(
        8_001,
        "s0",
        1,
        Event::Recv {
            id: "c0.1.w2".into(),
            method: "write".into(),
        },
    ));
    history.push(at(
        8_002,
        "s1",
        1,
        Event::Recv {
            id: "c0.1.w2".into(),
            method: "write".into(),
        },
    ));
    let report = verdict(history);
    assert_eq!(report.failures_allowed, 1, "{}", report.render());
    assert!(flagged(&report, 1, "c0.1.w2 ran 2 times"), "{}", report.render());
    assert_eq!(
        report.violations.iter().filter(|v| v.invariant == 1).count(),
        1,
        "{}",
        report.render()
    );
}

#[test]
fn a_dead_instance_that_lingers_is_caught() {
    let mut history = quiet_run();
    history.push(at(20_000, "s1", 1, proc("sigkill")));
    history.push(at(20_001, "s1", 1, proc("exited")));
    // etcd drops it in time, the client never does.
    history.push(at(23_500, "orchestrator", 0, truth(true, &[A])));
    let report = verdict(history);
    assert!(
        flagged(&report, 3, &format!("c0/1 still had {B}")),
        "{}",
        report.render()
    );
    assert!(!flagged(&report, 3, "etcd still held"), "{}", report.render());
    assert!(
        !flagged(&report, 5, ""),
        "a SIGKILL is not a violation: {}",
        report.render()
    );
}

/// Found on a real run (seed 1): a server killed and restarted on the same port, whose new
/// incarnation was later cut off from etcd during a leader change (which refreshes leases),
/// was reported as the dead incarnation's ghost. The key was the new incarnation's own.
#[test]
fn a_restart_on_the_same_port_owns_the_key() {
    let mut history = quiet_run();
    history.push(at(18_000, "s1", 1, proc("sigkill")));
    history.push(at(18_001, "s1", 1, proc("exited")));
    history.push(at(19_000, "s1", 2, proc("spawned")));
    history.push(at(19_010, "s1", 2, lifecycle("registered", B)));
    history.push(at(26_000, "orchestrator", 0, link("s1:etcd", "reset")));
    history.push(at(26_500, "orchestrator", 0, fault(1, "leader_kill", "m0")));
    history.push(at(29_000, "orchestrator", 0, Event::FaultEnd { id: 1 }));
    history.push(at(30_000, "orchestrator", 0, link("s1:etcd", "forward")));
    let report = verdict(history);
    assert!(!flagged(&report, 3, ""), "{}", report.render());
}

/// Found on a real run (seed 3): a lease revoked and the key put back within 60 ms, between two
/// truth polls, read as etcd holding the instance while the client lacked it.
#[test]
fn a_key_deleted_and_put_back_between_two_polls_is_seen_through_its_fault() {
    let mut history = quiet_run();
    history.push(at(30_000, "orchestrator", 0, fault(1, "lease_revoke", "s1")));
    history.push(at(30_003, "orchestrator", 0, Event::FaultEnd { id: 1 }));
    history.push(at(30_010, "c0", 1, snapshot(&[A])));
    history.push(at(30_290, "c0", 1, snapshot(&[A, B])));
    let report = verdict(history);
    assert!(!flagged(&report, 2, ""), "{}", report.render());
}

/// Found on a real run (seed 15): a key fault the orchestrator could not apply (etcd frozen)
/// "ended" late and left no time to check convergence, though it changed nothing.
#[test]
fn a_fault_that_was_not_applied_does_not_delay_convergence() {
    let mut history = quiet_run();
    history.push(at(38_000, "orchestrator", 0, fault(9, "garbage", "etcd")));
    history.push(at(
        38_001,
        "orchestrator",
        0,
        Event::Note {
            text: "fault 9 (garbage) not applied: etcd did not answer in 3 s".into(),
        },
    ));
    history.push(at(38_001, "orchestrator", 0, Event::FaultEnd { id: 9 }));
    let report = verdict(history);
    assert!(!flagged(&report, 4, ""), "{}", report.render());
}

fn link(link: &str, mode: &str) -> Event {
    Event::Link {
        link: link.into(),
        mode: mode.into(),
        latency_ms: 0,
        causes: vec![],
    }
}

fn fault(id: u32, kind: &str, target: &str) -> Event {
    Event::FaultStart {
        id,
        kind: kind.into(),
        target: target.into(),
        detail: String::new(),
    }
}

#[test]
fn a_panic_or_an_unexplained_exit_is_caught() {
    let mut history = quiet_run();
    history.push(at(5_000, "s0", 1, Event::Panic { message: "boom".into() }));
    history.push(at(
        5_001,
        "s0",
        1,
        Event::Proc {
            action: "exited".into(),
            pid: 1,
            status: "code 101".into(),
        },
    ));
    let report = verdict(history);
    assert!(flagged(&report, 5, "s0/1 panicked: boom"), "{}", report.render());
    assert!(
        flagged(&report, 5, "s0/1 exited on its own (code 101)"),
        "{}",
        report.render()
    );
}

#[test]
fn a_leak_is_caught() {
    let mut history = quiet_run();
    for (i, t) in (4_000..38_000).step_by(1_000).enumerate() {
        history.push(at(
            t,
            "c0",
            1,
            Event::Stats {
                tasks: 20 + i * 5,
                fds: 20,
                rss_kb: 20_000,
            },
        ));
    }
    let report = verdict(history);
    assert!(flagged(&report, 5, "c0/1 grew"), "{}", report.render());
}

fn write_call(start: u64, end: u64, id: &str, ok: bool) -> Record {
    let mut record = call(start, "write", id, ok);
    record.t = end;
    record
}

fn truth_detached(members: &[&str], detached: &[&str]) -> Event {
    Event::Truth {
        reachable: true,
        revision: 1,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        detached: detached.iter().map(|m| (*m).to_owned()).collect(),
    }
}

/// s1 stops in order (SIGTERM at 18 s, unregistered at once, exits at 19 s) and c0 sends it a
/// write at 18.4 s that fails as the process goes; `c0_cut_off` partitions c0 from etcd over
/// 17–21 s, so it cannot see the withdrawal.
fn write_to_a_stopping_server(c0_cut_off: bool) -> Vec<Record> {
    let mut history = quiet_run();
    if c0_cut_off {
        history.push(at(17_000, "orchestrator", 0, fault(1, "partition_blackhole", "c0")));
        history.push(at(17_000, "orchestrator", 0, link("c0:etcd", "blackhole")));
        history.push(at(21_000, "orchestrator", 0, link("c0:etcd", "forward")));
        history.push(at(21_000, "orchestrator", 0, Event::FaultEnd { id: 1 }));
    }
    history.push(at(17_500, "orchestrator", 0, fault(2, "server_term", "s1")));
    history.push(at(18_000, "s1", 1, proc("sigterm")));
    history.push(at(18_010, "s1", 1, lifecycle("stopping", B)));
    history.push(at(18_100, "orchestrator", 0, truth(true, &[A])));
    // A client that can hear etcd drops the withdrawn instance at once; a cut-off one only
    // once its link is back.
    let heard = if c0_cut_off { 21_100 } else { 18_120 };
    history.push(at(heard, "c0", 1, snapshot(&[A])));
    history.push(write_call(18_400, 18_900, "c0.1.late", false));
    history.push(at(18_950, "s1", 1, lifecycle("stopped", B)));
    history.push(at(
        19_000,
        "s1",
        1,
        Event::Proc {
            action: "exited".into(),
            pid: 1,
            status: "code 0".into(),
        },
    ));
    history.push(at(20_000, "orchestrator", 0, Event::FaultEnd { id: 2 }));
    history
}

/// Found on a real run (seed 17): a client cut off from etcd cannot see a server withdraw, so
/// a write it sends to that stopping server may race the process's exit.
#[test]
fn a_write_to_a_server_whose_withdrawal_the_client_could_not_see_may_fail() {
    let report = verdict(write_to_a_stopping_server(true));
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.failures_allowed, 1, "{}", report.render());
}

/// The same write from a client that could hear etcd: it had seen the server withdraw, and
/// had no business sending it anything.
#[test]
fn a_write_to_a_withdrawn_server_the_client_could_see_leave_is_caught() {
    let report = verdict(write_to_a_stopping_server(false));
    assert!(
        flagged(&report, 1, "non-idempotent c0/1 call c0.1.late"),
        "{}",
        report.render()
    );
    assert_eq!(report.violations.len(), 1, "{}", report.render());
}

/// s1 frozen over 23.5–33 s (past the TTL: its lease cannot be renewed), late enough that c0's
/// path to etcd has been whole for the recovery bound when s1's deadline comes; its key is
/// overwritten without a lease at `overwrite_at`, and stays so until s1 is back and puts it on
/// its lease.
fn a_detached_key_while_its_owner_is_frozen(overwrite_at: u64) -> Vec<Record> {
    let mut history = quiet_run();
    history.push(at(23_500, "s1", 1, proc("sigstop")));
    history.push(at(overwrite_at, "orchestrator", 0, fault(1, "key_overwrite", "s1")));
    history.push(at(overwrite_at, "orchestrator", 0, Event::FaultEnd { id: 1 }));
    history.push(at(overwrite_at + 10, "orchestrator", 0, truth_detached(&[A, B], &[B])));
    history.push(at(33_000, "s1", 1, proc("sigcont")));
    history.push(at(33_100, "orchestrator", 0, truth(true, &[A, B])));
    history
}

/// Found on a real run (seed 20): a key overwritten without a lease after its owner went quiet
/// cannot expire, so etcd — and every client, following it — rightly keeps it until the owner
/// is back.
#[test]
fn a_key_overwritten_without_a_lease_after_its_owner_went_quiet_may_outlive_the_ttl() {
    let report = verdict(a_detached_key_while_its_owner_is_frozen(24_900));
    assert!(report.passed(), "{}", report.render());
}

/// The same key overwritten while its owner could still see it: the owner should have put it
/// back on its lease at once, so a detached key outliving the owner's lease is a defect.
#[test]
fn a_key_left_detached_by_an_owner_that_could_repair_it_is_caught() {
    let report = verdict(a_detached_key_while_its_owner_is_frozen(23_000));
    assert!(
        flagged(&report, 3, &format!("etcd still held {B} (s1/1)")),
        "{}",
        report.render()
    );
    assert!(flagged(&report, 3, "its key had no lease"), "{}", report.render());
    assert!(
        flagged(&report, 3, &format!("c0/1 still had {B}")),
        "{}",
        report.render()
    );
}

/// etcd wiped at 20 s (down until 21 s, then empty until both owners have registered again at
/// 21.3 s); `c0_drops_b` makes the client drop s1 on the way.
fn a_wipe(c0_drops_b: bool) -> Vec<Record> {
    let mut history = quiet_run();
    history.push(at(20_000, "orchestrator", 0, fault(1, "etcd_wipe", "m0")));
    history.push(at(20_050, "orchestrator", 0, truth(false, &[])));
    history.push(at(21_000, "orchestrator", 0, Event::FaultEnd { id: 1 }));
    history.push(at(21_050, "orchestrator", 0, truth(true, &[])));
    history.push(at(21_200, "orchestrator", 0, truth(true, &[A])));
    history.push(at(21_300, "orchestrator", 0, truth(true, &[A, B])));
    if c0_drops_b {
        history.push(at(21_100, "c0", 1, snapshot(&[A])));
        history.push(at(21_320, "c0", 1, snapshot(&[A, B])));
    }
    history
}

/// A wipe deletes every key and lease; owners register again and clients that kept their
/// instances through it have done right.
#[test]
fn a_client_that_keeps_its_instances_through_a_wipe_passes() {
    let report = verdict(a_wipe(false));
    assert!(report.passed(), "{}", report.render());
}

/// etcd lacked s1 for a moment after the wipe, but s1 was alive and nothing had happened to it
/// alone: only registry trouble made the client drop it.
#[test]
fn a_client_that_drops_a_live_instance_in_a_wipe_is_caught() {
    let report = verdict(a_wipe(true));
    assert!(
        flagged(
            &report,
            2,
            &format!("c0/1 removed {B}: s1/1 was alive and nothing had happened to it alone")
        ),
        "{}",
        report.render()
    );
}

/// A client restarted at `restart_at` starts with an empty set and fails a write at once;
/// etcd is frozen over 10–16 s (it has lost every lease by the time it answers), so whether
/// the client could know of an instance depends on when it started.
fn a_write_from_a_client_that_knows_no_instance(restart_at: u64) -> Vec<Record> {
    let mut h = quiet_run();
    h.push(at(restart_at, "c0", 2, proc("spawned")));
    h.push(at(restart_at + 50, "c0", 2, snapshot(&[])));
    h.push(at(
        restart_at + 205,
        "c0",
        2,
        Event::Call {
            id: "c0.2.0".into(),
            method: "write".into(),
            start: restart_at + 200,
            ok: false,
            code: "Unavailable".into(),
            message: "no available instance".into(),
            instance: String::new(),
        },
    ));
    // Then it hears of both, once etcd has them (again).
    h.push(at((restart_at + 300).max(16_200), "c0", 2, snapshot(&[A, B])));
    h
}

#[test]
fn a_write_from_a_client_started_while_etcd_holds_nothing_may_fail() {
    let report = verdict(a_write_from_a_client_that_knows_no_instance(12_000));
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

#[test]
fn a_write_failing_while_etcd_holds_a_healthy_instance_is_caught() {
    let report = verdict(a_write_from_a_client_that_knows_no_instance(30_000));
    assert!(flagged(&report, 1, "non-idempotent c0/2"), "{:#?}", report.violations);
}

/// A client restarted at `restart_at` fails a read at `read_at`, before its first snapshot: etcd
/// holds both servers throughout, but whether the client could know them depends on whether its
/// path to etcd (here: the 10–16 s freeze) was disturbed within the recovery bound.
fn a_read_before_the_first_snapshot(restart_at: u64, read_at: u64) -> Vec<Record> {
    let mut h = quiet_run();
    h.push(at(restart_at, "c0", 2, proc("spawned")));
    h.push(at(
        read_at + 5,
        "c0",
        2,
        Event::Call {
            id: "c0.2.0".into(),
            method: "read".into(),
            start: read_at,
            ok: false,
            code: "Unavailable".into(),
            message: "no available instance".into(),
            instance: String::new(),
        },
    ));
    // Its first set arrives in the millisecond the read started, after the pick.
    h.push(at(read_at, "c0", 2, snapshot(&[A, B])));
    h
}

#[test]
fn a_read_from_a_client_whose_watch_is_still_recovering_from_etcd_trouble_may_fail() {
    // Started during the freeze; 2.4 s after etcd answers again it still has no snapshot.
    let report = verdict(a_read_before_the_first_snapshot(12_000, 18_500));
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

#[test]
fn a_read_failing_while_the_client_could_have_listed_etcd_is_caught() {
    let report = verdict(a_read_before_the_first_snapshot(30_000, 32_500));
    assert!(flagged(&report, 1, "idempotent c0/2"), "{:#?}", report.violations);
}

/// s1 is killed; its key expires and the client applies the delete 80 ms before the next truth
/// poll sees it gone (or, in the near variant, 1.5 s before: beyond the lag a removal may lead).
fn an_expiry_seen_before_truth_polls_it(truth_sees_it_after: u64) -> Vec<Record> {
    let mut history = quiet_run();
    history.push(at(30_000, "s1", 1, proc("sigkill")));
    history.push(at(30_001, "s1", 1, proc("exited")));
    history.push(at(33_050, "c0", 1, snapshot(&[A])));
    history.push(at(33_050 + truth_sees_it_after, "orchestrator", 0, truth(true, &[A])));
    history
}

/// Found on a real run (seed 36, after an etcd freeze): the delete reached both clients 80 ms
/// before the truth poll, and the join check read that as a client lacking a held instance.
#[test]
fn an_expiry_a_client_applies_just_before_truth_polls_it_passes() {
    let report = verdict(an_expiry_seen_before_truth_polls_it(80));
    assert!(!flagged(&report, 2, ""), "{}", report.render());
}

#[test]
fn a_client_that_drops_an_instance_long_before_etcd_does_is_caught() {
    let report = verdict(an_expiry_seen_before_truth_polls_it(1_500));
    assert!(flagged(&report, 2, &format!("c0/1 removed {B}")), "{}", report.render());
}
