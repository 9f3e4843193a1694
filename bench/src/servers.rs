//! Greeter servers and load for the scenarios.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jovian::{App, Registry, Running};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};

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

/// What the callers saw of one instance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// When the first call it answered finished.
    pub(crate) first_finished: Instant,
    /// When the last call it answered started.
    pub(crate) last_started: Instant,
}

#[derive(Default)]
struct Record {
    calls: usize,
    failed: usize,
    instances: HashMap<String, Seen>,
}

/// Callers calling in a loop until stopped. Each call updates a small record in O(1), so
/// reading it while the load runs disturbs the callers as little as possible.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(channel: &jovian::ServiceChannel, callers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let tasks = (0..callers)
            .map(|_| {
                let (stop, record) = (stop.clone(), record.clone());
                let mut client = GreeterClient::new(channel.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let reply = client.say_hello(HelloRequest { name: "bench".into() }).await;
                        let finished = Instant::now();
                        let mut record = record.lock().expect("load record lock");
                        record.calls += 1;
                        match reply {
                            Ok(reply) => {
                                let instance = replying_address(&reply.get_ref().message).to_owned();
                                record
                                    .instances
                                    .entry(instance)
                                    .and_modify(|seen| seen.last_started = seen.last_started.max(started))
                                    .or_insert(Seen {
                                        first_finished: finished,
                                        last_started: started,
                                    });
                            }
                            Err(_) => record.failed += 1,
                        }
                    }
                })
            })
            .collect();
        Self { stop, record, tasks }
    }

    /// Forgets what was seen of `instance` (its port may have served an earlier sample).
    pub(crate) fn forget(&self, instance: &str) {
        self.record.lock().expect("load record lock").instances.remove(instance);
    }

    /// What the callers saw of `instance` so far.
    pub(crate) fn seen(&self, instance: &str) -> Option<Seen> {
        self.record
            .lock()
            .expect("load record lock")
            .instances
            .get(instance)
            .copied()
    }

    /// Stops the callers; returns the calls made and how many failed.
    pub(crate) async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let record = self.record.lock().expect("load record lock");
        (record.calls, record.failed)
    }
}
