//! A child process a test starts, killed when the test lets go of it, panicking or not, and
//! by a watchdog should the test process itself die without unwinding. Its stdout and stderr
//! go to a log file in a temp dir of its own, for failure messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

/// A running (or exited) child process; see the module.
pub struct Process {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Process {
    /// Starts `command`, naming it `name` in messages, its output going to its log.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jovian-process-")
            .tempdir()
            .expect("temp dir for a process log");
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).expect("process log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("process log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", command.get_program()));
        let watchdog = Some(watchdog(child.id()));
        Self {
            name: name.to_owned(),
            child,
            watchdog,
            log,
            _dir: dir,
        }
    }

    /// The name given at [`spawn`](Self::spawn).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `deadline` for the process to exit; `None` if it still runs then.
    pub async fn exit_within(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills `pid` once this test process is gone, however it went.
pub(crate) fn watchdog(pid: u32) -> Child {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -CONT {pid} 2>/dev/null; kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh for a process watchdog")
}
