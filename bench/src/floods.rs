//! Scenario 10: legitimate calls beside each HTTP/2 flood class, on a jovian server and on a
//! plain tonic server (`tonic::transport::Server` with its defaults) side by side. The
//! attackers are `jovian_tests::floods` (each on a thread and runtime of its own); four callers
//! on a connection of their own, on another thread and runtime, call at a steady pace (one call
//! per caller every 5 ms at most) while the flood goes on, and their p50 and p99 are what the
//! flood costs a server's real users. Both servers run in this process on its main runtime, one
//! at a time. "closed" counts the attacker's connections the server cut while the flood went
//! on: each cut one is replaced by a new one, as an attacker would.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jovian_tests::floods::{Flood, Legit, legit_calls};

use crate::Sizes;
use crate::h2load::{start_jovian, start_tonic};
use crate::report::{Section, ms, ratio};

const CALLERS: usize = 4;
const PACE: Duration = Duration::from_millis(5);
const DEADLINE: Duration = Duration::from_secs(10);

/// One server's results beside one flood (or none), over the repetitions.
#[derive(Default)]
struct Cell {
    answered: usize,
    failed: usize,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    closed: u64,
}

impl Cell {
    fn add(&mut self, legit: &Legit, closed: u64) {
        self.answered += legit.latencies.len();
        self.failed += legit.failures.len();
        self.p50.push(legit.quantile(0.5));
        self.p99.push(legit.quantile(0.99));
        self.closed += closed;
    }

    fn median(samples: &[Duration]) -> Option<Duration> {
        crate::report::quantile(samples, 0.5)
    }
}

pub(crate) async fn run(sizes: Sizes) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "10. Legitimate calls beside HTTP/2 floods",
        "under every flood class, legitimate calls' p99 no worse than on a plain tonic server",
        &[
            "flood",
            "server",
            "calls answered",
            "failed",
            "p50 (median)",
            "p99 (median)",
            "p99 vs tonic",
            "flood connections closed",
        ],
    );
    let under_fire = sizes.call_duration.max(Duration::from_millis(200));
    let reps = sizes.reps.min(3);
    let (jovian, jovian_addr) = start_jovian(false).await?;
    let (tonic_addr, tonic) = start_tonic().await?;
    let servers = [("jovian", jovian_addr), ("tonic 0.14", tonic_addr)];
    let floods: Vec<Option<Flood>> = std::iter::once(None).chain(Flood::ALL.map(Some)).collect();
    for flood in floods {
        let mut cells: Vec<Cell> = servers.iter().map(|_| Cell::default()).collect();
        for _ in 0..reps {
            // Interleaved, so that the machine's mood falls on both alike.
            for ((_, addr), cell) in servers.iter().zip(&mut cells) {
                let (legit, closed) = beside(flood, *addr, under_fire).await;
                cell.add(&legit, closed);
            }
        }
        let tonic_p99 = Cell::median(&cells[1].p99);
        for ((server, _), cell) in servers.iter().zip(&cells) {
            let p99 = Cell::median(&cell.p99);
            section.row(vec![
                flood.map_or("none", Flood::name).to_owned(),
                (*server).to_owned(),
                cell.answered.to_string(),
                cell.failed.to_string(),
                ms(Cell::median(&cell.p50)),
                ms(p99),
                match (p99, tonic_p99) {
                    (Some(p99), Some(tonic)) => ratio(p99.as_secs_f64(), tonic.as_secs_f64()),
                    _ => "n/a".to_owned(),
                },
                if flood.is_some() {
                    cell.closed.to_string()
                } else {
                    String::new()
                },
            ]);
        }
    }
    section.note(format!(
        "{reps} repetitions of {under_fire:?} under fire per cell, servers interleaved; {CALLERS} callers, \
         one call each per {PACE:?} at most, {DEADLINE:?} deadline. Lower p99 is better: \"p99 vs tonic\" \
         under 1.00x is jovian ahead."
    ));
    jovian.stop().await?;
    tonic.abort();
    Ok(section)
}

/// Legitimate calls to `addr` for `under_fire` beside `flood`, and how many of the attacker's
/// connections the server closed meanwhile.
async fn beside(flood: Option<Flood>, addr: SocketAddr, under_fire: Duration) -> (Legit, u64) {
    let attack = flood.map(|flood| flood.start(addr));
    if let Some(attack) = &attack {
        // Under way before the callers start.
        while attack.tally().bytes_sent.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let legit = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the callers' runtime")
            .block_on(legit_calls(addr, CALLERS, under_fire, PACE, DEADLINE))
    })
    .await
    .expect("the callers");
    let closed = match attack {
        Some(attack) => attack.stop().await.closed_by_server.load(Ordering::Relaxed),
        None => 0,
    };
    // The server's leftovers of this flood are cleared before the next measurement.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (legit, closed)
}
