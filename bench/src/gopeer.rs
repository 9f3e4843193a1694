//! The grpc-go peer (`bench/go/`): a Greeter server and a closed-loop load client on today's
//! grpc-go and etcd client (pinned by `bench/go/go.mod` and `go.sum`), built at run time and run
//! as processes of their own.
//!
//! It is built the way the interop tests build their Go programs (`jovian_interop::go`): from
//! the Go module proxy into a cache outside the clone, keyed by the Go version and the module's
//! files, so only the first run (or one after a change) pays for a build. Without Go the
//! scenarios that need the peer are skipped with a note saying how to install it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jovian_interop::go::{BuildError, Module};
use tokio::process::Command;

use crate::closed_loop::Sample;
use crate::process::Process;

/// The peer's program, built, and the versions it was built with.
#[derive(Clone, Debug)]
pub(crate) struct GoPeer {
    pub(crate) binary: PathBuf,
    /// What the binary says it was built from, for the report: `grpc-go v1.85.0, etcd
    /// client v3.7.4, go1.26.8`.
    pub(crate) versions: String,
    /// grpc-go's version alone: `v1.85.0`.
    pub(crate) grpc_go: String,
}

/// Why the peer cannot be built here (no Go): the scenario is skipped with this note.
#[derive(Debug)]
pub(crate) struct Missing(pub(crate) String);

/// The modules whose versions the report names, and the names it gives them.
const REPORTED_MODULES: [(&str, &str); 2] = [
    ("google.golang.org/grpc", "grpc-go"),
    ("go.etcd.io/etcd/client/v3", "etcd client"),
];

/// Builds the peer, or finds it built. `Err(Missing)` when there is no Go; an error when Go
/// is there but the build fails (a broken peer should not pass for an absent one).
pub(crate) async fn build() -> anyhow::Result<Result<GoPeer, Missing>> {
    tokio::task::spawn_blocking(|| {
        let module = Module {
            what: "the bench's grpc-go peer",
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("go"),
            packages: &[(".", "gopeer")],
        };
        let binary = match module.build() {
            Ok(bin) => bin.join("gopeer"),
            Err(BuildError::NoGo(how)) => return Ok(Err(Missing(how))),
            Err(error @ BuildError::Failed(_)) => return Err(error.into()),
        };
        let build_info = build_info(&binary)?;
        Ok(Ok(GoPeer {
            binary,
            versions: describe_versions(&build_info),
            grpc_go: dependency_version(&build_info, REPORTED_MODULES[0].0).to_owned(),
        }))
    })
    .await?
}

/// What `go version -m` reads from the binary's build information: the versions measured,
/// whatever go.mod says now.
fn build_info(binary: &Path) -> anyhow::Result<String> {
    let go = jovian_interop::go::go_binary().map_err(anyhow::Error::msg)?;
    let output = std::process::Command::new(go)
        .arg("version")
        .arg("-m")
        .arg(binary)
        .output()?;
    anyhow::ensure!(output.status.success(), "go version -m {} failed", binary.display());
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The version of `module` in `go version -m`'s `\tdep\tMODULE\tVERSION\tSUM` lines.
fn dependency_version<'a>(build_info: &'a str, module: &str) -> &'a str {
    build_info
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some("dep") && fields.next() == Some(module)).then(|| fields.next())?
        })
        .unwrap_or("(unknown version)")
}

/// The reported modules' versions and Go's (the first line is `PATH: goX.Y.Z`).
fn describe_versions(build_info: &str) -> String {
    let go = build_info
        .lines()
        .next()
        .and_then(|first| first.rsplit_once(": "))
        .map(|(_, version)| version.trim().to_owned());
    REPORTED_MODULES
        .iter()
        .map(|(module, name)| format!("{name} {}", dependency_version(build_info, module)))
        .chain(go)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A grpc-go Greeter server registered in etcd as jovian service `service` and as etcd naming
/// target `target`.
pub(crate) async fn server(binary: &Path, etcd: &str, service: &str, target: &str) -> anyhow::Result<Process> {
    let mut command = Command::new(binary);
    command.args(["serve", "-etcd", etcd, "-service", service, "-target", target]);
    Process::start(command, "serving ").await
}

/// A grpc-go Greeter server in no registry, for load sent straight to its address (the
/// process's first line is `serving ADDRESS`).
pub(crate) async fn unregistered_server(binary: &Path) -> anyhow::Result<Process> {
    let mut command = Command::new(binary);
    command.args(["serve", "-unregistered"]);
    Process::start(command, "serving ").await
}

/// A grpc-go load client: round_robin over etcd's resolver for `target`, warmed up on
/// `servers` servers.
pub(crate) struct LoadClient(Process);

impl LoadClient {
    /// Starts the client; returns once every server has answered it.
    pub(crate) async fn start(binary: &Path, etcd: &str, target: &str, servers: usize) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        command.args([
            "load",
            "-etcd",
            etcd,
            "-target",
            target,
            "-servers",
            &servers.to_string(),
        ]);
        Ok(Self(Process::start(command, "ready").await?))
    }

    /// `in_flight` callers calling back to back for `duration`, in the Go process, with the CPU
    /// time the Go process used meanwhile.
    pub(crate) async fn drive(&mut self, in_flight: usize, duration: Duration) -> anyhow::Result<Sample> {
        let before = self.0.cpu();
        let answer = self.0.ask(&format!("run {in_flight} {}", duration.as_millis())).await?;
        let cpu = self.0.cpu().saturating_sub(before);
        let mut sample = parse_result(&answer).ok_or_else(|| anyhow::anyhow!("the Go client answered {answer:?}"))?;
        sample.cpu = Some(cpu);
        Ok(sample)
    }
}

impl LoadClient {
    /// Calls started at a steady `per_second` for `duration` (open loop), in the Go process.
    pub(crate) async fn at_rate(&mut self, per_second: u32, duration: Duration) -> anyhow::Result<Sample> {
        let answer = self
            .0
            .ask(&format!("rate {per_second} {}", duration.as_millis()))
            .await?;
        parse_result(&answer).ok_or_else(|| anyhow::anyhow!("the Go client answered {answer:?}"))
    }
}

/// Reads `result calls=N failed=N p50_ns=N p99_ns=N`.
fn parse_result(line: &str) -> Option<Sample> {
    let mut fields = line.strip_prefix("result ")?.split(' ').map(|field| {
        let (_, value) = field.split_once('=')?;
        value.parse::<u64>().ok()
    });
    let mut next = || fields.next().flatten();
    let (calls, failed, p50, p99) = (next()?, next()?, next()?, next()?);
    let latency = |ns: u64| (calls > 0).then(|| Duration::from_nanos(ns));
    Some(Sample {
        calls: usize::try_from(calls).ok()?,
        failed: usize::try_from(failed).ok()?,
        p50: latency(p50),
        p99: latency(p99),
        cpu: None,
        server_cpu: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_go_clients_result_line() {
        let sample = parse_result("result calls=10 failed=2 p50_ns=1500 p99_ns=90000").unwrap();
        assert_eq!((sample.calls, sample.failed), (10, 2));
        assert_eq!(sample.p50, Some(Duration::from_micros(1) + Duration::from_nanos(500)));
        assert_eq!(sample.p99, Some(Duration::from_micros(90)));
        assert!(parse_result("error: no").is_none());
        assert!(parse_result("result calls=x").is_none());
    }

    #[test]
    fn reads_the_versions_the_peer_was_built_with() {
        let build_info = "/cache/bin/0123/gopeer: go1.26.8\n\
                          \tpath\tjovian.invalid/bench\n\
                          \tdep\tgo.etcd.io/etcd/client/v3\tv3.7.4\th1:abc=\n\
                          \tdep\tgoogle.golang.org/grpc\tv1.85.0\th1:def=\n";
        assert_eq!(
            describe_versions(build_info),
            "grpc-go v1.85.0, etcd client v3.7.4, go1.26.8"
        );
        assert_eq!(dependency_version(build_info, "google.golang.org/grpc"), "v1.85.0");
        assert_eq!(
            describe_versions("x: go1.26.8\n"),
            "grpc-go (unknown version), etcd client (unknown version), go1.26.8"
        );
    }
}
