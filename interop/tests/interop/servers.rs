//! Starting interop servers as child processes on free ports, and running client processes
//! to their end with a deadline: what every test here does.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jovian_tests::etcd::free_port;
use jovian_tests::process::Process;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a server may take to listen, with room for a loaded two-core machine.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long one client case may run: the cases take a second or so, and the jovian client
/// gives up on its own after 60 s.
const CASE_LIMIT: Duration = Duration::from_secs(90);

/// A server process listening on `127.0.0.1:port`; killed on drop.
pub struct Server {
    pub process: Process,
    pub port: u16,
}

impl Server {
    /// Starts `program` with the arguments `args(port)` for a free `port`, and waits until it
    /// accepts connections there. Should the port be taken before the server binds it, starts
    /// again on another.
    pub async fn start(name: &str, program: &Path, args: impl Fn(u16) -> Vec<String>) -> Self {
        Self::start_with_env(name, program, &[], args).await
    }

    /// [`start`](Self::start), with `env` added to the server's environment.
    pub async fn start_with_env(
        name: &str,
        program: &Path,
        env: &[(&str, &str)],
        args: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let mut command = Command::new(program);
            command.args(args(port)).envs(env.iter().copied());
            let mut process = Process::spawn(name, &mut command);
            match listening(&mut process, port).await {
                Ok(()) => return Self { process, port },
                Err(_) if attempt < ATTEMPTS && process.output().contains("address already in use") => continue,
                Err(why) => panic!("{name} did not start: {why}; its output:\n{}", process.output()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// Waits until something accepts connections on `port`, failing if `process` exits first.
async fn listening(process: &mut Process, port: u16) -> Result<(), String> {
    let until = Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = process.exited() {
            return Err(format!("it exited ({status})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("it did not listen on port {port} within {START_LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a client process to its end: `Err` with the end of its output unless it exits 0
/// within [`CASE_LIMIT`].
pub async fn run_client(name: &str, program: &Path, args: &[String]) -> Result<(), String> {
    let mut process = Process::spawn(name, Command::new(program).args(args));
    let status = process.exit_within(CASE_LIMIT).await;
    let output = process.output();
    let tail: Vec<&str> = output.lines().rev().take(12).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n      ");
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("exited ({status}):\n      {tail}")),
        None => Err(format!("still running after {CASE_LIMIT:?}, killed:\n      {tail}")),
    }
}

/// Runs `case` for every name in `cases`, prints how each went, and fails the test naming
/// every case that failed and why.
pub async fn run_cases<F, Fut>(what: &str, cases: &[&str], mut case: F)
where
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut failed = Vec::new();
    for name in cases {
        let started = Instant::now();
        let result = case(name).await;
        let took = started.elapsed();
        match result {
            Ok(()) => eprintln!("{what}: {name}: passed ({took:.1?})"),
            Err(why) => {
                eprintln!("{what}: {name}: FAILED ({took:.1?}): {why}");
                failed.push(format!("  {name}: {why}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{what}: {} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
