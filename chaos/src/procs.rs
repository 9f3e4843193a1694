//! Child processes of a run: spawning a server or client incarnation, piping its history lines
//! into the run's sink, signalling it, and noticing when it exits.
//!
//! No child outlives the orchestrator: each is killed when its handle is dropped (a panicking
//! run included), exits by itself when its stdin (held here) closes, and has a watchdog shell
//! that SIGKILLs it should the orchestrator die without unwinding.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::history::{Event, Record};

/// Where every history line of a run goes: one file, one whole line per write.
#[derive(Clone)]
pub struct Sink(Arc<Mutex<File>>);

impl Sink {
    /// A sink writing to `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    /// Writes one record.
    pub fn record(&self, record: &Record) {
        let mut line = serde_json::to_string(record).expect("records always serialize");
        line.push('\n');
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(line.as_bytes());
    }

    /// Writes `event` as process `proc`/`gen` at `t`.
    pub fn event(&self, t: u64, proc: &str, r#gen: u32, event: Event) {
        self.record(&Record {
            t,
            proc: proc.to_owned(),
            r#gen,
            event,
        });
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// A running child.
pub struct Child {
    /// Its OS process id.
    pub pid: u32,
    // Held so the child's stdin stays open; dropping it tells the child to exit.
    _stdin: tokio::process::ChildStdin,
    watchdog: std::process::Child,
    waiter: tokio::task::JoinHandle<()>,
}

/// What a child's exit notification says: its slot index and incarnation.
pub type Exit = (usize, u32);

impl Child {
    /// Spawns `binary args`, as incarnation `gen` of slot `slot` (index `index`): stdout lines
    /// go to `sink`, stderr to `logs/{slot}.{gen}.stderr`; `exits` hears when it exits.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        binary: &Path,
        args: &[String],
        slot: &str,
        index: usize,
        r#gen: u32,
        logs: &Path,
        sink: Sink,
        clock: Clock,
        exits: mpsc::UnboundedSender<Exit>,
    ) -> anyhow::Result<Self> {
        let stderr = File::create(logs.join(format!("{slot}.{gen}.stderr")))?;
        let mut child = tokio::process::Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().unwrap_or(0);
        sink.event(
            clock.now(),
            slot,
            r#gen,
            Event::Proc {
                action: "spawned".into(),
                pid,
                status: String::new(),
            },
        );
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines_sink = sink.clone();
        let lines_slot = slot.to_owned();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) => lines_sink.record(&record),
                    Err(_) => lines_sink.event(
                        clock.now(),
                        &lines_slot,
                        r#gen,
                        Event::Note {
                            text: format!("unparsable output: {line}"),
                        },
                    ),
                }
            }
        });
        let slot_name = slot.to_owned();
        let waiter = tokio::spawn(async move {
            let status = child.wait().await;
            // Lines written just before the exit are still in the pipe: read them first, so the
            // exit is the incarnation's last line.
            let _ = reader.await;
            let status = match status {
                Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                    (Some(code), _) => format!("code {code}"),
                    (None, Some(signal)) => format!("signal {signal}"),
                    _ => "unknown".to_owned(),
                },
                Err(error) => format!("unknown ({error})"),
            };
            sink.event(
                clock.now(),
                &slot_name,
                r#gen,
                Event::Proc {
                    action: "exited".into(),
                    pid,
                    status,
                },
            );
            let _ = exits.send((index, r#gen));
        });
        Ok(Self {
            pid,
            _stdin: stdin,
            watchdog: watchdog(pid),
            waiter,
        })
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Whether the process has exited (its exit line is written).
    pub fn has_exited(&self) -> bool {
        self.waiter.is_finished()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.waiter.is_finished() {
            self.signal("CONT");
            self.signal("KILL");
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// Kills `pid` once the orchestrator is gone, however it went.
fn watchdog(pid: u32) -> std::process::Child {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -CONT {pid} 2>/dev/null; kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh for the chaos watchdog")
}
