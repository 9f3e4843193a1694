//! The server under each HTTP/2 flood class, with legitimate callers beside the attacker: every
//! legitimate call is answered, the server's per-stream state stays bounded while the flood
//! goes on (at most 200 streams per connection), the connections of floods that only cost the
//! server work are cut (rapid and made-you-reset, CONTINUATION, HPACK bombs by h2's limits;
//! PING, SETTINGS and WINDOW_UPDATE by jovian's control-frame budget), and nothing is left
//! behind once it stops. The attackers are
//! `jovian_tests::floods` (each on a thread of its own); the bench's scenario 10 runs the same
//! floods against a plain tonic server beside this one and compares the callers' latency.

use super::{start, still_serving};
use std::time::Duration;

use jovian_registry_memory::MemoryStore;
use jovian_tests::floods::{Flood, hand_made_call, legit_calls};
use jovian_tests::greeters::{Sleepy, server};
use jovian_tests::{eventually, init_logging, within};

/// How long the callers call while the flood goes on.
const UNDER_FIRE: Duration = Duration::from_secs(2);
/// Each legitimate call's deadline: generous, because the machine may be busy with more than
/// this test; a call starved by the flood still fails it.
const DEADLINE: Duration = Duration::from_secs(10);

fn tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Runs `flood` against a jovian server while four callers call it; returns what the attacker
/// did, once the server has nothing of the attack left.
async fn withstands(flood: Flood) -> std::sync::Arc<jovian_tests::floods::Tally> {
    init_logging();
    let store = MemoryStore::new();
    let name = format!("flood-{}", flood.name().replace(' ', "-"));
    let running = start(&store, server(&name, Sleepy)).await;
    let addr = running.local_addr(&name).unwrap();
    let baseline = tasks();

    let attack = flood.start(addr);
    eventually(DEADLINE, "the flood under way", || async {
        (attack.tally().bytes_sent.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    let legit = legit_calls(addr, 4, UNDER_FIRE, Duration::from_millis(5), DEADLINE).await;
    let during = tasks();
    let tally = attack.stop().await;

    assert!(
        legit.failures.is_empty(),
        "{}: {} of {} legitimate calls failed, first: {:?}",
        flood.name(),
        legit.failures.len(),
        legit.failures.len() + legit.latencies.len(),
        legit.failures.first()
    );
    assert!(
        legit.latencies.len() >= 8,
        "{}: only {} legitimate calls were answered in {UNDER_FIRE:?}",
        flood.name(),
        legit.latencies.len()
    );
    // At most 200 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS), each at most a
    // task, on the attacker's connections (four at most hold streams open), plus the
    // connections' own tasks and the callers'.
    assert!(
        during <= baseline + 4 * 200 + 80,
        "{}: the server held {} tasks during the flood (from {baseline})",
        flood.name(),
        during
    );
    eventually(
        Duration::from_secs(20),
        "the server's tasks back to a handful",
        || async { (tasks() <= baseline + 10).then_some(()) },
    )
    .await;
    still_serving(&store, &name).await;
    running.stop().await.unwrap();
    tracing::info!(flood = flood.name(), ?tally, p50 = ?legit.quantile(0.5), p99 = ?legit.quantile(0.99), "withstood");
    tally
}

fn closed(tally: &jovian_tests::floods::Tally) -> u64 {
    tally.closed_by_server.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attackers_requests_are_served_requests() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("by-hand", Sleepy)).await;
    let answer = within(
        DEADLINE,
        "an answer to a hand-made call",
        hand_made_call(running.local_addr("by-hand").unwrap(), "by hand"),
    )
    .await
    .expect("the server answers the attackers' kind of request");
    assert!(
        String::from_utf8_lossy(&answer).contains("Hello by hand"),
        "the reply: {answer:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset() {
    let tally = withstands(Flood::RapidReset).await;
    assert!(closed(&tally) > 0, "the server never closed a rapid-reset connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset() {
    let tally = withstands(Flood::MadeYouReset).await;
    assert!(
        closed(&tally) > 0,
        "the server never closed a made-you-reset connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation() {
    let tally = withstands(Flood::Continuation).await;
    assert!(closed(&tally) > 0, "the server read an endless header block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb() {
    let tally = withstands(Flood::Hpack).await;
    // Each bomb is refused as too large a header list; h2 ends a connection after 1,024 such.
    assert!(
        closed(&tally) > 0,
        "the server decoded HPACK bombs for as long as they came"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings() {
    let tally = withstands(Flood::Settings).await;
    assert!(
        closed(&tally) > 0,
        "the server acknowledged a SETTINGS flood for as long as it went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping() {
    let tally = withstands(Flood::Ping).await;
    assert!(
        closed(&tally) > 0,
        "the server answered a PING flood for as long as it went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update() {
    let tally = withstands(Flood::WindowUpdate).await;
    assert!(
        closed(&tally) > 0,
        "the server took a WINDOW_UPDATE flood for as long as it went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_exhaustion() {
    withstands(Flood::StreamExhaustion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_read() {
    withstands(Flood::SlowRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris() {
    withstands(Flood::Slowloris).await;
}
