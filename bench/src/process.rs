//! Server and client processes the bench starts (this program's `--serve-greeter`, the Go
//! peer): they talk in lines, the first of which says they are ready, and they die with the
//! handle, so a failing or panicking scenario leaves none behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long a process may take to say it is ready.
const STARTUP: Duration = Duration::from_secs(30);

/// A child process, SIGKILLed when dropped.
pub(crate) struct Process {
    child: Child,
    // Kept open: a child writing to a closed pipe would die of it, and the Go peer exits when
    // its stdin closes (so it goes even if this program is SIGKILLed).
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The first line the process printed.
    pub(crate) first_line: String,
}

impl Process {
    /// Starts `command` and waits for its first line, which must start with `ready`.
    pub(crate) async fn start(mut command: Command, ready: &str) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut process = Self {
            child,
            stdin,
            stdout,
            first_line: String::new(),
        };
        let line = tokio::time::timeout(STARTUP, process.read_line())
            .await
            .map_err(|_| anyhow::anyhow!("{command:?} did not start in {STARTUP:?}"))??;
        anyhow::ensure!(line.starts_with(ready), "{command:?} said {line:?}");
        process.first_line = line;
        Ok(process)
    }

    /// Sends one line and reads the one-line answer.
    pub(crate) async fn ask(&mut self, line: &str) -> anyhow::Result<String> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.read_line().await
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        anyhow::ensure!(
            self.stdout.read_line(&mut line).await? > 0,
            "the process closed its output"
        );
        Ok(line.trim_end().to_owned())
    }

    /// The CPU time the process has used so far.
    pub(crate) fn cpu(&self) -> std::time::Duration {
        self.child
            .id()
            .map_or(std::time::Duration::ZERO, |pid| crate::cpu::cpu_of(&pid.to_string()))
    }

    /// Sends `signal` (`-TERM`, `-KILL`, ...).
    pub(crate) fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().ok_or_else(|| anyhow::anyhow!("the process is gone"))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Waits for the process to exit.
    pub(crate) async fn wait(mut self) -> anyhow::Result<()> {
        self.child.wait().await?;
        Ok(())
    }
}
