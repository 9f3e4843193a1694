//! The example server and client as separate processes on a real etcd: the client balances
//! over the servers, and a SIGTERMed server unregisters and exits cleanly.

mod support;

use jovian::Discovery;
use std::process::Command;

use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use support::{GreeterProcess, registry_args};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_processes_find_each_other_through_etcd() {
    let etcd = EtcdCluster::single().await;
    let first = GreeterProcess::start(&etcd, 200);
    let second = GreeterProcess::start(&etcd, 200);
    let observer = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    assert_eq!(
        observer.list("greeter").await.unwrap().len(),
        2,
        "both servers registered before printing"
    );

    let client = Command::new(env!("CARGO_BIN_EXE_greeter-client"))
        .args(registry_args(&etcd))
        .args(["--calls", "6"])
        .output()
        .expect("greeter-client runs");
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "client failed:\n{stdout}");
    assert!(stdout.contains(&format!("{}: 3 calls", first.address)), "{stdout}");
    assert!(stdout.contains(&format!("{}: 3 calls", second.address)), "{stdout}");
    assert!(stdout.contains("6 ok, 0 failed"), "{stdout}");

    // The client takes its options from `[clients.greeter]`: a filter no instance passes, and
    // a policy that does not exist.
    let filtered = Command::new(env!("CARGO_BIN_EXE_greeter-client"))
        .args(registry_args(&etcd))
        .args(["--calls", "2"])
        .env("JOVIAN_CLIENTS__GREETER__VERSION", "v9")
        .output()
        .expect("greeter-client runs");
    let stdout = String::from_utf8_lossy(&filtered.stdout);
    assert!(!filtered.status.success(), "{stdout}");
    assert!(
        stdout.contains("0 ok, 2 failed") && stdout.contains("version v9"),
        "{stdout}"
    );
    let misconfigured = Command::new(env!("CARGO_BIN_EXE_greeter-client"))
        .args(registry_args(&etcd))
        .env("JOVIAN_CLIENTS__GREETER__POLICY", "fastest")
        .output()
        .expect("greeter-client runs");
    let stderr = String::from_utf8_lossy(&misconfigured.stderr);
    assert!(!misconfigured.status.success());
    assert!(stderr.contains("clients.greeter.policy"), "{stderr}");

    let (status, last_line) = first.terminate().await;
    assert!(status.success(), "SIGTERM ended the server with {status}");
    assert_eq!(last_line, "stopped");
    let remaining = observer.list("greeter").await.unwrap();
    assert_eq!(
        remaining.addresses(),
        vec![second.address.as_str()],
        "the stopped server unregistered"
    );
}
