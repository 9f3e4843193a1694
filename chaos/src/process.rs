//! What every chaos server and client process does besides its job: report panics and
//! resource use as history lines, exit when the orchestrator is gone, and stop on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::history::{Emitter, Event};

/// Makes a panic anywhere in the process a `panic` line before the default report.
pub fn report_panics(out: Arc<Emitter>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        out.emit(Event::Panic {
            message: info.to_string(),
        });
        default(info);
    }));
}

/// Writes a `stats` line every second: live tokio tasks, open descriptors, resident memory.
pub fn sample_resources(out: Arc<Emitter>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
            out.emit(Event::Stats {
                tasks,
                fds: open_fds(),
                rss_kb: rss_kb(),
            });
        }
    });
}

/// Exits the process once stdin reaches its end: the orchestrator holds the other end, so this
/// happens when it dies, however it died, and no chaos process outlives its run.
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(3);
    });
}

/// Resolves on SIGTERM (or SIGINT).
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Installs a quiet log subscriber (warnings to stderr, `RUST_LOG` to change), so the
/// framework does not install its chattier default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
