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
