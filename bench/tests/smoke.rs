//! The benchmark program keeps working: a smoke run (tiny sizes, seconds) covers every scenario.

use std::process::Command;

#[test]
fn a_smoke_run_reports_every_scenario() {
    let output = Command::new(env!("CARGO_BIN_EXE_jovian-bench"))
        .arg("--smoke")
        .output()
        .expect("jovian-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the smoke run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for heading in [
        "1. Propagation",
        "2. Client overhead",
        "3. Pick cost",
        "4. Large service",
        "5. Registration load",
        "6. Failover",
        "7. grpc-go peer",
        "9. Servers under h2load",
        "10. Legitimate calls beside HTTP/2 floods",
        "watchers through etcd's gRPC proxy",
    ] {
        assert!(stdout.contains(heading), "no {heading} section in:\n{stdout}");
    }
}
