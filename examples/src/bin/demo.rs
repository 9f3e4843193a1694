//! Three Greeter servers and a client in one process, on the in-memory registry.
//!
//! Shows the round-robin spread, then stops one server gracefully while calls keep flowing and
//! counts the failures (there should be none). Exits non-zero if the spread is uneven or any
//! call failed, so it doubles as a smoke test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use jovian::{App, ClientBuilder, Running, ServiceChannel};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server, replying_address};
use jovian_registry_memory::MemoryStore;

const SERVERS: usize = 3;
const CALLS_PER_SERVER: usize = 10;
const CALLERS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let store = MemoryStore::new();

    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        let running = App::new()
            .name("demo")
            .registry(store.registry())
            .serve(greeter_server("greeter"))
            .start()
            .await?;
        println!("started greeter on {}", running.local_addrs()[0]);
        servers.push(running);
    }

    let channel = ClientBuilder::new(store.registry()).build("greeter").await?;
    let spread = round_robin_spread(&channel).await?;
    println!("\n{} calls, round robin:", SERVERS * CALLS_PER_SERVER);
    for (instance, calls) in &spread {
        println!("  {instance}: {calls} calls");
    }
    let even = spread.len() == SERVERS && spread.values().all(|&n| n == CALLS_PER_SERVER);

    let stopping = servers.remove(1);
    let stopped_address = stopping.local_addrs()[0].to_string();
    let (ok, failed) = calls_while_stopping(&channel, stopping).await;
    println!("\nstopped {stopped_address} gracefully while {CALLERS} callers kept calling:");
    println!("  {ok} ok, {failed} failed");

    let after = round_robin_spread(&channel).await?;
    let rerouted = !after.contains_key(&stopped_address) && after.len() == SERVERS - 1;
    println!(
        "  afterwards calls go to: {}",
        after.keys().cloned().collect::<Vec<_>>().join(", ")
    );

    for running in servers {
        running.stop().await?;
    }
    if !even || failed > 0 || ok == 0 || !rerouted {
        anyhow::bail!("demo failed: even spread {even}, {failed} failed calls, rerouted {rerouted}");
    }
    println!("\ndemo ok: even spread, zero failed calls across a graceful stop");
    Ok(())
}

/// Makes `CALLS_PER_SERVER` calls per server and counts which instance answered each.
async fn round_robin_spread(channel: &ServiceChannel) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut client = GreeterClient::new(channel.clone());
    let mut spread = BTreeMap::new();
    for _ in 0..SERVERS * CALLS_PER_SERVER {
        let reply = client.say_hello(HelloRequest { name: "demo".into() }).await?;
        *spread
            .entry(replying_address(&reply.into_inner().message).to_owned())
            .or_default() += 1;
    }
    Ok(spread)
}

/// Keeps `CALLERS` callers busy while `server` stops in order, then a moment longer.
async fn calls_while_stopping(channel: &ServiceChannel, server: Running) -> (usize, usize) {
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match client.say_hello(HelloRequest { name: "demo".into() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            eprintln!("call failed: {status}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Err(error) = server.stop().await {
        eprintln!("stopping the server: {error}");
        failed.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}
