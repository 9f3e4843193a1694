//! `jovian-chaos`: the seeded fault-run program.
//!
//! ```text
//! jovian-chaos --seed 7 --duration 60s        # run, check, print the verdict
//! jovian-chaos check target/chaos/seed-7/history.jsonl   # check a saved history again
//! jovian-chaos schedule --seed 7 --duration 60s          # print the schedule only
//! ```
//! `server` and `client` are the processes a run starts; they are not meant to be run by hand.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jovian_chaos::client::ClientArgs;
use jovian_chaos::run::{RunOptions, run};
use jovian_chaos::schedule::FaultKind;
use jovian_chaos::server::ServerArgs;

#[derive(Parser)]
#[command(about = "Throw seeded random faults at real jovian processes, then check the history")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The schedule's seed: the same seed plays the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The whole run (`60s`, `2m`, `45000ms`): 3 s warm-up, faults, 18 s to settle.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// etcd members: 3, or 1 for the variant that also wipes etcd (`etcd_wipe`) and has no
    /// leader to kill.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Server processes (3 to 5).
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Client processes.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// The lease TTL every registry uses.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    ttl: Duration,
    /// Only these fault kinds, comma separated (default: every kind).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<FaultKind>,
    /// Make client c0 empty its set on registry trouble, to see the checker catch it.
    #[arg(long)]
    broken_client: bool,
    /// Where the history, report and logs go (default `target/chaos/seed-N`).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a saved history.
    Check {
        /// The `history.jsonl` of a run.
        history: PathBuf,
    },
    /// Print the schedule a seed gives, without running it.
    Schedule(RunArgs),
    /// A chaos server process (started by a run).
    #[command(hide = true)]
    Server(ServerArgs),
    /// A chaos client process (started by a run).
    #[command(hide = true)]
    Client(ClientArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => run_and_check(cli.run).await,
            Some(Command::Check { history }) => {
                let records = jovian_chaos::history::read(&history)?;
                let report = jovian_chaos::check::check(&records);
                print!("{}", report.render());
                Ok(report.passed())
            }
            Some(Command::Schedule(args)) => {
                let options = options(args)?;
                for fault in jovian_chaos::schedule::generate(options.seed, &options.shape()) {
                    println!("{}", serde_json::to_string(&fault)?);
                }
                Ok(true)
            }
            Some(Command::Server(args)) => {
                jovian_chaos::process::init_logging();
                jovian_chaos::server::run(args).await.map(|()| true)
            }
            Some(Command::Client(args)) => {
                jovian_chaos::process::init_logging();
                jovian_chaos::client::run(args).await.map(|()| true)
            }
        }
    });
    // Child-process tasks may still hold blocking reads; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("jovian-chaos: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn options(args: RunArgs) -> anyhow::Result<RunOptions> {
    if !(1..=8).contains(&args.servers) || args.clients == 0 {
        anyhow::bail!("use 3 to 5 servers (at most 8) and at least one client");
    }
    if args.members != 1 && args.members != 3 {
        anyhow::bail!("use --members 3 (the default) or --members 1 (the variant with etcd wipes)");
    }
    if let Some(kind) = args.kinds.iter().find(|k| !k.fits_members(args.members)) {
        let shape = if kind.fits_members(1) {
            "--members 1"
        } else {
            "--members 3"
        };
        anyhow::bail!(
            "{kind} does not fit a cluster of {} etcd member(s); use {shape}",
            args.members
        );
    }
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("target/chaos/seed-{}", args.seed)));
    Ok(RunOptions {
        seed: args.seed,
        duration: args.duration,
        members: args.members,
        servers: args.servers,
        clients: args.clients,
        ttl: args.ttl,
        kinds: args.kinds,
        broken_client: args.broken_client,
        out,
        binary: std::env::current_exe()?,
    })
}

async fn run_and_check(args: RunArgs) -> anyhow::Result<bool> {
    let options = options(args)?;
    let report = run(&options).await?;
    print!("{}", report.render());
    Ok(report.passed())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 60s, 2m or 45000ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("`{text}` has an unknown unit; write e.g. 60s, 2m or 45000ms")),
    }
}
