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
