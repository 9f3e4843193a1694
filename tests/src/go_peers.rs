//! Real Go services as peers of jovian on one etcd: small programs in `tests/go/` built on Go
//! jupiter (v0.2.7, the release jovian's default layout follows, and its current v0.11.21) and
//! on etcd's gRPC naming package with a stock grpc-go. Each serves or calls the example
//! Greeter, registering and resolving through its own stack's registry code.
//!
//! The programs are built once per test process through [`jovian_interop::go::Module`] into the
//! Go cache outside the clone (a later run builds nothing); without Go, the test panics saying
//! what to install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use jovian_interop::go::{BuildError, Module};
use jovian_registry_etcd::Layout;

use crate::etcd::EtcdCluster;
use crate::process::Process;

/// A Go stack with a peer program in `tests/go/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// Go jupiter v0.2.7: `/{prefix}/{name}/providers/grpc://{addr}` → its ServiceInfo JSON.
    JupiterV027,
    /// Go jupiter's current release, v0.11.21: `grpc:{name}:v1:{mode}/{addr}` →
    /// `{"Op":0,"Addr":..,"MetadataX":{ServiceInfo}}`, no prefix.
    Jupiter,
    /// etcd's `client/v3/naming` (v3.7.4) and grpc-go 1.85: `{target}/{addr}` → `{"Op":0,
    /// "Addr":..,"Metadata":null}`, resolved with `etcd:///{target}`.
    EtcdNaming,
}

/// jupiter's run mode when `JUPITER_MODE` is unset, part of its keys since v0.6.
pub const JUPITER_MODE: &str = "unknown-mode";

impl Stack {
    /// What the stack is, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Stack::JupiterV027 => "jupiter v0.2.7",
            Stack::Jupiter => "jupiter v0.11.21",
            Stack::EtcdNaming => "grpc-go with etcd's naming package",
        }
    }

    /// The layout (and prefix) a jovian registry shares this stack's keys with.
    pub fn layout(self) -> (Layout, &'static str) {
        match self {
            // The Go peer registers under jovian's default prefix.
            Stack::JupiterV027 => (Layout::Jupiter, "jovian"),
            // The prefix stands for jupiter's mode.
            Stack::Jupiter => (
                Layout::etcd_naming().key_template("grpc:{name}:v1:{prefix}/{addr}"),
                JUPITER_MODE,
            ),
            Stack::EtcdNaming => (Layout::etcd_naming(), "jovian"),
        }
    }

    /// The key this stack writes for an instance of `name` at `addr`.
    pub fn key(self, name: &str, addr: &str) -> String {
        match self {
            Stack::JupiterV027 => format!("/jovian/{name}/providers/grpc://{addr}"),
            Stack::Jupiter => format!("grpc:{name}:v1:{JUPITER_MODE}/{addr}"),
            Stack::EtcdNaming => format!("{name}/{addr}"),
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Stack::JupiterV027 => "jupiter-v0.2.7",
            Stack::Jupiter => "jupiter",
            Stack::EtcdNaming => "etcd-naming",
        }
    }

    fn program_name(self) -> &'static str {
        // `go build -o DIR/ .` names a program after the last element of the module's path.
        match self {
            Stack::JupiterV027 => "jupiter-v027",
            Stack::Jupiter => "jupiter",
            Stack::EtcdNaming => "etcd-naming",
        }
    }

    fn name_flag(self) -> &'static str {
        match self {
            Stack::EtcdNaming => "-target",
            _ => "-name",
        }
    }

    /// The peer program, built on first use in this process.
    ///
    /// # Panics
    ///
    /// Without Go, or when the build fails: the message says why and what to do.
    pub fn program(self) -> PathBuf {
        static BUILT: [OnceLock<PathBuf>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        BUILT[self as usize]
            .get_or_init(|| {
                let what = format!("the {} peer", self.what());
                let packages = [(".", self.program_name())];
                let module = Module {
                    what: &what,
                    dir: module_dir(self.dir()),
                    packages: &packages,
                };
                let bin = module.build().unwrap_or_else(|error| match error {
                    BuildError::NoGo(how) => panic!("the {} peer tests need Go: {how}", self.what()),
                    BuildError::Failed(why) => panic!("{why}"),
                });
                bin.join(self.program_name())
            })
            .clone()
    }

    fn command(self, role: &str, etcd: &EtcdCluster, name: &str) -> Command {
        let mut command = Command::new(self.program());
        command
            .arg(role)
            .arg("-etcd")
            .arg(etcd.endpoints().join(","))
            .arg(self.name_flag())
            .arg(name);
        command
    }
}

/// Where the Go peers' modules are.
pub fn module_dir(stack_dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(stack_dir)
}

/// Builds `stack`'s program off the runtime's threads (a cold build takes a minute or more).
async fn built(stack: Stack) {
    tokio::task::spawn_blocking(move || stack.program())
        .await
        .expect("the Go build panicked");
}

/// A Go server of one stack, registered in etcd through that stack's registry, killed when
/// dropped.
pub struct GoServer {
    process: Process,
    addr: String,
}

impl GoServer {
    /// Starts a server of `name` and waits until it says it serves (registered).
    pub async fn start(stack: Stack, etcd: &EtcdCluster, name: &str) -> Self {
        built(stack).await;
        let process = Process::spawn(
            &format!("{} server", stack.what()),
            &mut stack.command("server", etcd, name),
        );
        let addr = crate::eventually(Duration::from_secs(30), "the Go server to register", || {
            let output = process.output();
            let addr = output
                .lines()
                .find_map(|line| line.strip_prefix("serving "))
                .map(|addr| addr.trim().to_owned());
            async move { addr }
        })
        .await;
        Self { process, addr }
    }

    /// The `host:port` it serves and registered.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// SIGKILLs it: nothing unregisters, its key lives until its lease expires.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// What it printed.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// One call a Go client made: the answering server's address, or the error line.
pub type Reply = Result<String, String>;

/// A Go client of one stack calling SayHello through that stack's resolver, killed when
/// dropped.
pub struct GoClient {
    process: Process,
}

impl GoClient {
    /// Starts a client making `calls` calls (0: until killed), `interval` apart.
    ///
    /// A current jupiter client is given `grpc.WithAuthority(name)`: what it sends otherwise
    /// (`grpc:{name}:v1:{mode}/`) is no valid `:authority`, and servers on Rust's h2 refuse it
    /// (see [`GoClient::calls_with`]).
    pub async fn start(stack: Stack, etcd: &EtcdCluster, name: &str, calls: usize, interval: Duration) -> Self {
        let authority = ["-authority", name];
        let extra: &[&str] = match stack {
            Stack::Jupiter => &authority,
            _ => &[],
        };
        Self::start_with(stack, etcd, name, calls, interval, extra).await
    }

    /// [`start`](Self::start) with exactly these extra flags.
    pub async fn start_with(
        stack: Stack,
        etcd: &EtcdCluster,
        name: &str,
        calls: usize,
        interval: Duration,
        extra: &[&str],
    ) -> Self {
        built(stack).await;
        let mut command = stack.command("client", etcd, name);
        command
            .arg("-calls")
            .arg(calls.to_string())
            .arg("-interval")
            .arg(format!("{}ms", interval.as_millis()))
            .args(extra);
        Self {
            process: Process::spawn(&format!("{} client", stack.what()), &mut command),
        }
    }

    /// Makes `calls` calls one after the other and returns what they got.
    pub async fn calls(stack: Stack, etcd: &EtcdCluster, name: &str, calls: usize) -> Vec<Reply> {
        let client = Self::start(stack, etcd, name, calls, Duration::ZERO).await;
        client.finish(calls).await
    }

    /// [`calls`](Self::calls) with exactly these extra flags (none: a client as configured by
    /// default).
    pub async fn calls_with(stack: Stack, etcd: &EtcdCluster, name: &str, calls: usize, extra: &[&str]) -> Vec<Reply> {
        let client = Self::start_with(stack, etcd, name, calls, Duration::ZERO, extra).await;
        client.finish(calls).await
    }

    async fn finish(mut self, calls: usize) -> Vec<Reply> {
        let status = self.process.exit_within(Duration::from_secs(60)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "the {} did not finish its {calls} calls ({status:?}):\n{}",
            self.process.name(),
            self.process.output()
        );
        self.replies()
    }

    /// The calls made so far.
    pub fn replies(&self) -> Vec<Reply> {
        parse_replies(&self.process.output())
    }

    /// What it printed.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// The calls in a Go client's output: `ok ADDR ...` or `err CODE MESSAGE` lines (the rest is
/// the stack's own logging).
fn parse_replies(output: &str) -> Vec<Reply> {
    output
        .lines()
        .filter_map(|line| {
            if let Some(ok) = line.strip_prefix("ok ") {
                Some(Ok(ok.split_whitespace().next().unwrap_or_default().to_owned()))
            } else {
                line.strip_prefix("err ").map(|err| Err(err.to_owned()))
            }
        })
        .collect()
}

/// How many of `replies` each server answered; panics naming the failed calls if any failed.
pub fn answered_by(replies: &[Reply]) -> BTreeMap<String, usize> {
    let failed: Vec<_> = replies.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} calls failed: {failed:?}", failed.len());
    let mut counts = BTreeMap::new();
    for addr in replies.iter().flatten() {
        *counts.entry(addr.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_output_is_read_past_its_logging() {
        let output = "1796 INFO access {\"reply\":1}\nok 127.0.0.1:1 go\nerr Unavailable no children\nok 127.0.0.1:2 127.0.0.1:9\n";
        assert_eq!(
            parse_replies(output),
            [
                Ok("127.0.0.1:1".to_owned()),
                Err("Unavailable no children".to_owned()),
                Ok("127.0.0.1:2".to_owned())
            ]
        );
    }
}
