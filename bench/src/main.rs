//! `jovian-bench`: where jovian stands against the physical floor and the alternatives.
//!
//! Starts its own etcd and servers, runs each scenario with the compared variants interleaved
//! (the machine is shared and noisy, so side by side beats one after another), and prints a
//! markdown report of medians and ratios. `--smoke` runs tiny sizes in seconds, for CI.
//!
//! ```text
//! cargo run --release -p jovian-bench              # the full run behind BENCHMARKS.md
//! cargo run --release -p jovian-bench -- --smoke   # seconds; proves the program works
//! ```

#![forbid(unsafe_code)]

mod alloc;
mod burst;
mod closed_loop;
mod cpu;
mod failover;
mod floods;
mod gopeer;
mod grpcgo;
mod h2load;
mod large;
mod overhead;
mod picks;
mod process;
mod propagation;
mod registration_load;
mod report;
mod servers;
mod watch_proxy;

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Benchmarks jovian; prints a markdown report")]
struct Args {
    /// Tiny sizes and short runs: checks that every scenario works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of each comparison (at least 5 for a real run).
    #[arg(long)]
    reps: Option<usize>,
    /// Run only these scenarios (comma-separated): propagation, overhead, picks, large,
    /// burst, registration, failover, grpc-go, proxy, servers, floods.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Internal: serve a greeter registered in etcd at these endpoints (scenarios 6 and 7), or
    /// in no registry with `-` (scenario 2's allocation count).
    #[arg(long, hide = true)]
    serve_greeter: Option<String>,
    /// Internal: serve a plain tonic greeter, registered nowhere (scenario 7's tonic stack).
    #[arg(long, hide = true)]
    serve_tonic: bool,
    /// Internal: drive one scenario-2 variant (`direct`, `balance`, `jovian`) alone against the
    /// greeters at `--addresses`, for profiling.
    #[arg(long, hide = true)]
    drive_client: Option<String>,
    /// Internal: the greeters `--drive-client` calls (comma-separated host:port).
    #[arg(long, hide = true, value_delimiter = ',')]
    addresses: Vec<String>,
    /// Internal: calls in flight for `--drive-client`.
    #[arg(long, hide = true, default_value_t = 16)]
    in_flight: usize,
    /// Internal: calls `--drive-client` makes.
    #[arg(long, hide = true, default_value_t = 100_000)]
    calls: usize,
    /// Internal: the service name `--serve-greeter` registers.
    #[arg(long, hide = true, default_value = "greeter")]
    service: String,
}

/// How big and how long each scenario runs.
#[derive(Clone, Debug)]
pub(crate) struct Sizes {
    pub(crate) reps: usize,
    pub(crate) propagation_samples: usize,
    pub(crate) call_duration: Duration,
    pub(crate) counted_calls: usize,
    pub(crate) pick_iterations: u64,
    pub(crate) pick_sizes: [usize; 3],
    pub(crate) large_sizes: Vec<usize>,
    pub(crate) large_changes: usize,
    pub(crate) burst: usize,
    pub(crate) registrations: usize,
    pub(crate) registration_duration: Duration,
    pub(crate) failover_duration: Duration,
    pub(crate) proxy_watchers: usize,
    pub(crate) proxy_changes: usize,
    pub(crate) proxy_idle: Duration,
}

impl Sizes {
    fn new(smoke: bool, reps: Option<usize>) -> Self {
        if smoke {
            Self {
                reps: reps.unwrap_or(1),
                propagation_samples: 3,
                call_duration: Duration::from_millis(200),
                counted_calls: 200,
                pick_iterations: 10_000,
                pick_sizes: [10, 100, 1_000],
                large_sizes: vec![50, 200],
                large_changes: 5,
                burst: 200,
                registrations: 20,
                registration_duration: Duration::from_secs(3),
                failover_duration: Duration::from_millis(500),
                proxy_watchers: 20,
                proxy_changes: 2,
                proxy_idle: Duration::from_secs(1),
            }
        } else {
            Self {
                reps: reps.unwrap_or(5).max(1),
                propagation_samples: 20,
                call_duration: Duration::from_secs(2),
                counted_calls: 20_000,
                pick_iterations: 1_000_000,
                pick_sizes: [10, 1_000, 10_000],
                large_sizes: vec![100, 1_000, 10_000, 50_000],
                large_changes: 500,
                burst: 10_000,
                registrations: 1_000,
                registration_duration: Duration::from_secs(60),
                failover_duration: Duration::from_secs(2),
                proxy_watchers: 1_000,
                proxy_changes: 20,
                proxy_idle: Duration::from_secs(10),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_tonic {
        return failover::serve_tonic().await;
    }
    if let Some(endpoints) = &args.serve_greeter {
        return failover::serve_greeter(endpoints, &args.service).await;
    }
    if let Some(variant) = &args.drive_client {
        return overhead::drive_client(variant, &args.addresses, args.in_flight, args.calls).await;
    }
    let sizes = Sizes::new(args.smoke, args.reps);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let started = Instant::now();
    println!(
        "## jovian benchmarks{}\n",
        if args.smoke {
            " (smoke run: sizes too small to mean anything)"
        } else {
            ""
        }
    );
    println!("{} repetitions per comparison, variants interleaved.\n", sizes.reps);
    let mut sections = Vec::new();
    if wanted("propagation") {
        sections.push(propagation::run(sizes.clone()).await?);
    }
    if wanted("overhead") {
        sections.extend(overhead::run(sizes.clone()).await?);
    }
    if wanted("picks") {
        sections.push(picks::run(sizes.clone()).await?);
    }
    if wanted("large") {
        sections.push(large::run(sizes.clone()).await?);
    }
    if wanted("burst") {
        sections.push(burst::run(sizes.clone()).await?);
    }
    if wanted("registration") {
        sections.push(registration_load::run(sizes.clone()).await?);
    }
    if wanted("failover") {
        sections.push(failover::run(sizes.clone()).await?);
    }
    if wanted("grpc-go") {
        sections.push(grpcgo::run(sizes.clone()).await?);
    }
    if wanted("servers") {
        sections.push(h2load::run(sizes.clone()).await?);
    }
    if wanted("floods") {
        sections.push(floods::run(sizes.clone()).await?);
    }
    if wanted("proxy") {
        sections.push(watch_proxy::run(sizes.clone()).await?);
    }
    for section in &sections {
        println!("{}", section.markdown());
    }
    println!("Total run time: {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}
