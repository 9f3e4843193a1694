//! The example server and client as separate processes on a real etcd: the client balances
//! over the servers, and a SIGTERMed server unregisters and exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jovian::Registry;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::within;

/// A child process killed when the test ends, however it ends, and its standard output.
struct Process(Child, BufReader<std::process::ChildStdout>);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry_args(etcd: &EtcdCluster) -> Vec<String> {
    vec![
        "--registry".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        etcd.endpoints().join(","),
    ]
}

/// Starts a greeter-server and returns it with the address it printed.
fn start_server(etcd: &EtcdCluster) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter-server"))
        .args(registry_args(etcd))
        .args(["--drain-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("greeter-server starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        line.starts_with("serving greeter on "),
        "unexpected first line: {line:?}"
    );
    (Process(child, stdout), address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_processes_find_each_other_through_etcd() {
    let etcd = EtcdCluster::single().await;
    let (first, first_addr) = start_server(&etcd);
    let (_second, second_addr) = start_server(&etcd);
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
    assert!(stdout.contains(&format!("{first_addr}: 3 calls")), "{stdout}");
    assert!(stdout.contains(&format!("{second_addr}: 3 calls")), "{stdout}");
    assert!(stdout.contains("6 ok, 0 failed"), "{stdout}");

    let mut first = first;
    let pid = first.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = first.0.wait();
        (first, status)
    });
    let (mut first, status) = within(Duration::from_secs(10), "the server to exit", exited)
        .await
        .unwrap();
    let status = status.unwrap();
    let mut last_line = String::new();
    first.1.read_line(&mut last_line).unwrap();
    assert_eq!(last_line.trim(), "stopped");
    assert!(status.success(), "SIGTERM ended the server with {status}");
    let remaining = observer.list("greeter").await.unwrap();
    assert_eq!(
        remaining.addresses(),
        vec![second_addr.as_str()],
        "the stopped server unregistered"
    );
}
