//! Greeter servers and load for the scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use jovian::{App, Registry, Running};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};
use tokio::sync::Mutex;

/// Starts a greeter registered as `service` in `registry` (or unregistered with `None`).
pub(crate) async fn greeter(service: &str, registry: Option<Arc<dyn Registry>>) -> anyhow::Result<Running> {
    let mut app = App::new()
        .governor(None)
        .drain_delay(std::time::Duration::from_millis(300));
    if let Some(registry) = registry {
        app = app.registry(registry);
    }
    Ok(app.serve(greeter_server(service)).start().await?)
}

/// One finished call: when it started, when it ended, which instance answered (empty if it
/// failed).
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    pub(crate) instance: String,
}

/// Callers calling in a loop until stopped, keeping every call.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(channel: &jovian::ServiceChannel, callers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..callers)
            .map(|_| {
                let (stop, calls) = (stop.clone(), calls.clone());
                let mut client = GreeterClient::new(channel.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let instance = match client.say_hello(HelloRequest { name: "bench".into() }).await {
                            Ok(reply) => replying_address(&reply.into_inner().message).to_owned(),
                            Err(_) => String::new(),
                        };
                        calls.lock().await.push(Call {
                            started,
                            finished: Instant::now(),
                            instance,
                        });
                    }
                })
            })
            .collect();
        Self { stop, calls, tasks }
    }

    /// The calls so far.
    pub(crate) async fn calls(&self) -> Vec<Call> {
        self.calls.lock().await.clone()
    }

    /// Stops the callers and returns every call.
    pub(crate) async fn finish(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.calls.lock().await.clone()
    }
}
