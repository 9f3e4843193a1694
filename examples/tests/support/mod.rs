//! `greeter-server` processes for the examples' tests, killed when dropped however a test ends.

// Each test binary uses part of this support module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use jovian_tests::etcd::EtcdCluster;
use jovian_tests::within;

/// Arguments pointing an example binary at `etcd`.
pub fn registry_args(etcd: &EtcdCluster) -> Vec<String> {
    vec![
        "--registry".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        etcd.endpoints().join(","),
    ]
}

/// A running `greeter-server` and the address it registered.
pub struct GreeterProcess {
    child: Child,
    // Kept open: a server printing to a closed pipe would die of it.
    stdout: BufReader<ChildStdout>,
    pub address: String,
}

impl GreeterProcess {
    /// Starts one on `etcd`; returns once it has registered (it prints its address then).
    pub fn start(etcd: &EtcdCluster, drain_ms: u64) -> Self {
        Self::start_with(etcd, drain_ms, &[])
    }

    /// [`start`](Self::start) with more arguments.
    pub fn start_with(etcd: &EtcdCluster, drain_ms: u64, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_greeter-server"))
            .args(registry_args(etcd))
            .args(["--drain-ms", &drain_ms.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("greeter-server starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("serving greeter on "),
            "unexpected first line: {line:?}"
        );
        let address = line.trim().rsplit(' ').next().unwrap().to_owned();
        Self { child, stdout, address }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Waits up to `limit` for the process to exit; returns its status and how long it took.
    pub async fn wait_exit(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = std::time::Instant::now();
        let exited = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().expect("wait for greeter-server");
            (status, started.elapsed())
        });
        within(limit, "the server to exit", exited).await.unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status and the last line printed.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let exited = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().expect("wait for greeter-server");
            let mut last = String::new();
            self.stdout.read_line(&mut last).unwrap();
            (status, last.trim().to_owned())
        });
        within(Duration::from_secs(15), "the server to exit after SIGTERM", exited)
            .await
            .unwrap()
    }
}

impl Drop for GreeterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
