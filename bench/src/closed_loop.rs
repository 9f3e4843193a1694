//! Closed-loop SayHello load, shared by the scenarios that compare call rates: callers that
//! call back to back for a fixed time, and variants measured interleaved over repetitions.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jovian::ServiceChannel;
use jovian_examples::{GreeterClient, HelloRequest, replying_address};
use tonic::transport::Channel;

use crate::report::{median_f64, quantile};

/// A Greeter client over a plain tonic channel or a jovian one.
#[derive(Clone)]
pub(crate) enum Client {
    /// A tonic channel: one instance, or tonic's own balancing.
    Tonic(GreeterClient<Channel>),
    /// A jovian service channel.
    Jovian(GreeterClient<ServiceChannel>),
}

impl Client {
    /// One SayHello: the reply's message, or `None` when the call failed.
    pub(crate) async fn hello(&mut self) -> Option<String> {
        let request = HelloRequest { name: "bench".into() };
        let reply = match self {
            Client::Tonic(client) => client.say_hello(request).await,
            Client::Jovian(client) => client.say_hello(request).await,
        };
        reply.ok().map(|reply| reply.into_inner().message)
    }

    /// Calls until `servers` distinct instances have answered (at most 10 s), so no
    /// measurement pays for resolving and connecting.
    pub(crate) async fn warm_up(&self, servers: usize) -> anyhow::Result<()> {
        let mut client = self.clone();
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < servers {
            anyhow::ensure!(
                Instant::now() < deadline,
                "saw {} of {servers} servers in 10 s",
                seen.len()
            );
            match client.hello().await {
                Some(message) => {
                    seen.insert(replying_address(&message).to_owned());
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        Ok(())
    }
}

/// What one closed-loop run measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// Successful calls that finished (started before the deadline).
    pub(crate) calls: usize,
    /// Failed calls.
    pub(crate) failed: usize,
    /// Median latency of the successful calls.
    pub(crate) p50: Option<Duration>,
    /// 99th percentile latency of the successful calls.
    pub(crate) p99: Option<Duration>,
    /// CPU time the client used meanwhile, where the scenario measures it.
    pub(crate) cpu: Option<Duration>,
    /// CPU time the servers called used meanwhile, where they are processes of their own.
    pub(crate) server_cpu: Option<Duration>,
}

impl Sample {
    fn new(latencies: &[Duration], failed: usize) -> Self {
        Self {
            calls: latencies.len(),
            failed,
            p50: quantile(latencies, 0.5),
            p99: quantile(latencies, 0.99),
            cpu: None,
            server_cpu: None,
        }
    }
}

/// One variant's samples, one per repetition, and what a report cell shows of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Samples(pub(crate) Vec<Sample>);

impl Samples {
    /// The median rate in calls/s, each sample having run for `duration`.
    pub(crate) fn rate(&self, duration: Duration) -> f64 {
        let rates: Vec<f64> = self.0.iter().map(|s| s.calls as f64 / duration.as_secs_f64()).collect();
        median_f64(&rates)
    }

    /// The median over repetitions of each repetition's median latency.
    pub(crate) fn p50(&self) -> Option<Duration> {
        quantile(&self.0.iter().filter_map(|s| s.p50).collect::<Vec<_>>(), 0.5)
    }

    /// The median over repetitions of each repetition's p99 latency.
    pub(crate) fn p99(&self) -> Option<Duration> {
        quantile(&self.0.iter().filter_map(|s| s.p99).collect::<Vec<_>>(), 0.5)
    }

    /// The median over repetitions of the client's CPU time per call, where measured.
    pub(crate) fn cpu_per_call(&self) -> Option<Duration> {
        self.per_call(|s| s.cpu)
    }

    /// The median over repetitions of the servers' CPU time per call, where measured.
    pub(crate) fn server_cpu_per_call(&self) -> Option<Duration> {
        self.per_call(|s| s.server_cpu)
    }

    fn per_call(&self, cpu: impl Fn(&Sample) -> Option<Duration>) -> Option<Duration> {
        let per_call: Vec<Duration> = self
            .0
            .iter()
            .filter_map(|s| Some(cpu(s)? / u32::try_from(s.calls + s.failed).ok().filter(|&n| n > 0)?))
            .collect();
        quantile(&per_call, 0.5)
    }

    /// Failed calls over all repetitions.
    pub(crate) fn failed(&self) -> usize {
        self.0.iter().map(|s| s.failed).sum()
    }
}

/// Measures `variants` variants `reps` times each, rotating the order every repetition so no
/// variant always runs first (the machine is shared and noisy: side by side beats one after
/// another). `measure(variant)` runs one sample.
pub(crate) async fn interleaved(
    reps: usize,
    variants: usize,
    mut measure: impl AsyncFnMut(usize) -> anyhow::Result<Sample>,
) -> anyhow::Result<Vec<Samples>> {
    let mut samples = vec![Samples::default(); variants];
    for rep in 0..reps {
        for offset in 0..variants {
            let variant = (rep + offset) % variants;
            samples[variant].0.push(measure(variant).await?);
        }
    }
    Ok(samples)
}

/// `in_flight` callers calling back to back for `duration`; a call started before the
/// deadline counts when it finishes.
pub(crate) async fn drive(client: &Client, in_flight: usize, duration: Duration) -> Sample {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if client.hello().await.is_some() {
                        latencies.push(started.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((mut latencies, f)) = task.await {
            all.append(&mut latencies);
            failed += f;
        }
    }
    Sample::new(&all, failed)
}

/// Calls started at a steady `per_second` for `duration`, each in a task of its own, whether
/// or not the ones before have finished (open loop); each call's latency counts from when it
/// was due, so a stall shows in the tail instead of delaying the calls behind it unseen. A
/// thread of its own paces the calls with the OS's sleep, as precise as Go's timer: tokio's
/// millisecond timer would start each call up to a millisecond after it was due and charge
/// the stack for it.
pub(crate) async fn at_rate(client: &Client, per_second: u32, duration: Duration) -> Sample {
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel();
    let total = (f64::from(per_second) * duration.as_secs_f64()) as u32;
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            let due = start + Duration::from_secs(1) * i / per_second;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if due_tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut started = Vec::with_capacity(total as usize);
    while let Some(due) = due_rx.recv().await {
        let mut client = client.clone();
        started.push(tokio::spawn(async move { client.hello().await.map(|_| due.elapsed()) }));
    }
    let _ = pacer.join();
    let (mut all, mut failed) = (Vec::new(), 0);
    for call in started {
        match call.await {
            Ok(Some(latency)) => all.push(latency),
            _ => failed += 1,
        }
    }
    Sample::new(&all, failed)
}
