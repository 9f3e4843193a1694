//! `jovianctl` against a real etcd with authentication enabled: a read-only user reads, is
//! refused a write with an error that says so and names the key, and a wrong password is a
//! clear error.

use std::process::{Command, Output};
use std::sync::Arc;

use etcd_client::Permission;
use jovian::App;
use jovian::prelude::*;
use jovian_examples::greeter_server;
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::init_logging;

const SERVICE: &str = "authctl-greeter";

/// Runs `jovianctl` as `user`, in an empty directory and without `JOVIAN_*` variables.
async fn jovianctl(endpoints: &[String], user: &str, password: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jovianctl"));
    command
        .current_dir(std::env::temp_dir())
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--user",
            user,
            "--password",
            password,
        ])
        .args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JOVIAN_") {
            command.env_remove(key);
        }
    }
    tokio::task::spawn_blocking(move || command.output().expect("run jovianctl"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_lists_but_is_refused_writes_naming_the_key() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let endpoints = etcd.endpoints();
    let mut admin = etcd.client().await;
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("jovian-writer").await.unwrap();
    admin
        .role_grant_permission("jovian-writer", Permission::read_write("/jovian/").with_prefix())
        .await
        .unwrap();
    admin.user_add("svc", "svc-pw", None).await.unwrap();
    admin.user_grant_role("svc", "jovian-writer").await.unwrap();
    admin.role_add("jovian-reader").await.unwrap();
    admin
        .role_grant_permission("jovian-reader", Permission::read("/jovian/").with_prefix())
        .await
        .unwrap();
    admin.user_add("viewer", "viewer-pw", None).await.unwrap();
    admin.user_grant_role("viewer", "jovian-reader").await.unwrap();
    admin.auth_enable().await.unwrap();

    let registry = EtcdRegistry::connect(EtcdConfig::new(&endpoints).credentials("svc", "svc-pw"))
        .await
        .unwrap();
    let registry = Arc::new(registry);
    let running = App::new()
        .registry(registry.clone())
        .serve(greeter_server(SERVICE))
        .start()
        .await
        .unwrap();
    let address = running.local_addrs()[0].to_string();

    // the read-only user reads
    let listed = jovianctl(&endpoints, "viewer", "viewer-pw", &["list", SERVICE]).await;
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "list as the read-only user failed: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains(&address), "{stdout}");

    // ...and is refused a write: non-zero exit, "permission denied", the key it tried
    let refused = jovianctl(&endpoints, "viewer", "viewer-pw", &["disable", SERVICE, &address]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "disable as the read-only user succeeded");
    assert!(stderr.contains("refused: permission denied writing"), "{stderr}");
    let key = format!("/jovian/{SERVICE}/configurators/grpc://{address}");
    assert!(stderr.contains(&key), "the error names {key}: {stderr}");
    assert!(
        stderr.contains("readwrite"),
        "the error says what permission is needed: {stderr}"
    );
    let listed = jovianctl(&endpoints, "viewer", "viewer-pw", &["list", SERVICE, "--json"]).await;
    let instances: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(instances[0]["enable"], true, "nothing was written: {instances}");

    // a wrong password: a clear error, non-zero exit
    let wrong = jovianctl(&endpoints, "viewer", "not-the-password", &["list", SERVICE]).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "a wrong password listed");
    assert!(stderr.contains("authenticat"), "{stderr}");
    assert!(
        stderr.contains("--user") && stderr.contains("--password"),
        "the error points at the credentials: {stderr}"
    );
    assert!(!stderr.contains("cannot reach"), "not an unreachable etcd: {stderr}");

    running.stop().await.unwrap();
    registry.close().await.unwrap();
}
