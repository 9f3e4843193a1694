//! The grpc-go peer (`bench/go/`): built here at run time, offline, against Debian's Go
//! packages, and run as Greeter servers and a closed-loop load client.
//!
//! Debian installs Go library sources in a GOPATH tree under `/usr/share/gocode` (dh-golang's
//! layout, no module cache), so the peer builds in GOPATH mode (`GO111MODULE=off`) with the
//! module proxy off: nothing is downloaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::closed_loop::Sample;
use crate::process::Process;

/// Where Debian's `golang-*-dev` packages put Go sources.
const GOPATH: &str = "/usr/share/gocode";

/// Packages the peer imports, as a check that their Debian packages are installed.
const NEEDED: [(&str, &str); 2] = [
    ("google.golang.org/grpc", "golang-google-grpc-dev"),
    ("go.etcd.io/etcd/clientv3/naming/resolver", "golang-etcd-server-dev"),
];

/// The command that installs what the peer needs.
pub(crate) const APT: &str = "apt-get install -y golang-go golang-google-grpc-dev golang-etcd-server-dev";

/// Why the peer cannot be built here: the scenario is skipped with this note.
#[derive(Debug)]
pub(crate) struct Missing(pub(crate) String);

/// Builds the peer next to this program (`target/<profile>/gopeer/gopeer`); Go's build cache
/// makes a rebuild of unchanged sources take about a second. `Err(Missing)` when Go or the
/// Debian packages are absent; an error when they are present but the build fails.
pub(crate) async fn build() -> anyhow::Result<Result<PathBuf, Missing>> {
    let go_version = Command::new("go").arg("version").output().await;
    if !go_version.is_ok_and(|out| out.status.success()) {
        return Ok(Err(Missing("`go` is not installed".into())));
    }
    for (package, debian) in NEEDED {
        if !Path::new(GOPATH).join("src").join(package).is_dir() {
            return Ok(Err(Missing(format!(
                "{package} is not under {GOPATH} (Debian's {debian})"
            ))));
        }
    }
    let dir = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("this program has no directory"))?
        .join("gopeer");
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("gopeer");
    let mut command = Command::new("go");
    command
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0");
    // Go needs a build cache; without a home it has none, so give it one beside the binary.
    if std::env::var_os("HOME").is_none() && std::env::var_os("XDG_CACHE_HOME").is_none() {
        command.env("GOCACHE", dir.join("cache"));
    }
    let output = command.output().await?;
    anyhow::ensure!(
        output.status.success(),
        "building the Go peer failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Ok(binary))
}

/// A grpc-go Greeter server registered in etcd as jovian service `service` and as etcd naming
/// target `target`.
pub(crate) async fn server(binary: &Path, etcd: &str, service: &str, target: &str) -> anyhow::Result<Process> {
    let mut command = Command::new(binary);
    command.args(["serve", "-etcd", etcd, "-service", service, "-target", target]);
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
}
