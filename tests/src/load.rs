//! Closed-loop load through a [`ServiceChannel`], every call recorded: when it started, how
//! long it took, which instance answered or what it failed with. Tests then ask what the
//! callers saw during a fault.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jovian::ServiceChannel;
use jovian_examples::{GreeterClient, HelloRequest, replying_address};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a call may take before the load gives up on it and records it as stuck.
const STUCK: Duration = Duration::from_secs(30);

/// One call as its caller saw it.
#[derive(Clone, Debug)]
pub struct Call {
    /// When it started, since the load started.
    pub at: Duration,
    /// How long it took.
    pub took: Duration,
    /// The address of the instance that answered, or the failure.
    pub outcome: Result<String, tonic::Status>,
}

/// Callers calling `SayHello` back to back until stopped.
pub struct Load {
    started: Instant,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: CancellationToken,
    callers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `callers` concurrent callers on `channel`.
    pub fn start(channel: &ServiceChannel, callers: usize) -> Self {
        let started = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let callers = (0..callers)
            .map(|_| {
                let (mut client, calls, stop) = (GreeterClient::new(channel.clone()), calls.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let at = started.elapsed();
                        let request = HelloRequest { name: "load".into() };
                        // A call the client itself never gives up on must not hang the test.
                        let outcome = match tokio::time::timeout(STUCK, client.say_hello(request)).await {
                            Ok(reply) => reply.map(|r| replying_address(&r.into_inner().message).to_owned()),
                            Err(_) => Err(tonic::Status::deadline_exceeded("stuck: no answer within 30 s")),
                        };
                        let took = started.elapsed() - at;
                        let failed = outcome.is_err();
                        calls.lock().unwrap().push(Call { at, took, outcome });
                        if failed {
                            // A caller that fails fast must not spin: back off as a real one would.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            started,
            calls,
            stop,
            callers,
        }
    }

    /// Time since the load started: the clock of [`Call::at`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// How many calls have ended so far.
    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Every call ended so far, in the order they ended.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until `more` calls beyond those ended so far have ended.
    pub async fn wait_for(&self, more: usize) {
        let target = self.count() + more;
        crate::eventually(Duration::from_secs(20), "calls to flow", || async {
            (self.count() >= target).then_some(())
        })
        .await;
    }

    /// Stops the callers and returns every call, in the order they ended.
    pub async fn stop(self) -> Vec<Call> {
        self.stop.cancel();
        for caller in self.callers {
            let _ = caller.await;
        }
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// Successful calls per second among those started in `[from, to)`.
pub fn rate(calls: &[Call], from: Duration, to: Duration) -> f64 {
    let ok = calls
        .iter()
        .filter(|c| c.outcome.is_ok() && c.at >= from && c.at < to)
        .count();
    ok as f64 / (to - from).as_secs_f64()
}

/// The failed calls, for assertion messages.
pub fn failures(calls: &[Call]) -> Vec<&Call> {
    calls.iter().filter(|c| c.outcome.is_err()).collect()
}
