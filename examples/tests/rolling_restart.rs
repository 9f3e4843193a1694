//! A rolling restart under load, as separate processes on real etcd: three greeter servers,
//! 16 calls always in flight, each server restarted in turn (SIGTERM, start again). Not one
//! call may fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use jovian::{ClientBuilder, Registry};
use jovian_examples::{GreeterClient, HelloRequest};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{eventually, within};

const IN_FLIGHT: usize = 16;

struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(etcd: &EtcdCluster) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter-server"))
        .args(["--registry", "etcd", "--etcd-endpoints", &etcd.endpoints().join(",")])
        .args(["--drain-ms", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("greeter-server starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line.trim().rsplit(' ').next().unwrap().to_owned();
    Server {
        child,
        _stdout: stdout,
        address,
    }
}

async fn terminate(mut server: Server) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let waited = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    });
    let (_server, status) = within(Duration::from_secs(15), "the server to stop", waited)
        .await
        .unwrap();
    assert!(status.unwrap().success(), "SIGTERM did not end the server cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call() {
    let etcd = EtcdCluster::single().await;
    let mut servers: Vec<Server> = (0..3).map(|_| start_server(&etcd)).collect();
    let registry = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let channel = ClientBuilder::new(registry).build("greeter").await.unwrap();
    assert_eq!(channel.instances().len(), 3);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.say_hello(HelloRequest { name: "rolling".into() }).await {
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
    let calls_flow = |at_least: usize| {
        let ok = ok.clone();
        eventually(Duration::from_secs(10), "calls to flow", move || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= at_least).then_some(()) }
        })
    };
    calls_flow(200).await;

    for round in 0..3 {
        let old = servers.remove(0);
        let old_address = old.address.clone();
        terminate(old).await;
        let new = start_server(&etcd);
        let new_address = new.address.clone();
        servers.push(new);
        eventually(
            Duration::from_secs(10),
            "the restarted server to be registered and the old one gone",
            || async {
                let listed = observer.list("greeter").await.ok()?;
                let addresses = listed.addresses();
                (addresses.len() == 3
                    && addresses.contains(&new_address.as_str())
                    && !addresses.contains(&old_address.as_str()))
                .then_some(())
            },
        )
        .await;
        let before = ok.load(Ordering::Relaxed);
        calls_flow(before + 200).await;
        println!("restart {}: {old_address} -> {new_address}", round + 1);
    }

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "rolling restart of 3 servers with {IN_FLIGHT} calls in flight: {} calls, {ok} ok, {failed} failed",
        ok + failed
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} calls failed during the rolling restart",
        ok + failed
    );
}
