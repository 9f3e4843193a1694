//! grpc-go's interop client against a jovian interop server: every standard case grpc-go's
//! client has. (It has none of the compression cases; `jovian_client` runs those against
//! the jovian server with jovian's client.)

use jovian_interop::cases::STANDARD;
use jovian_interop::go;

use crate::servers::{Server, run_cases, run_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_client_against_a_jovian_server() {
    let programs = go::programs();
    let server = Server::start(
        "jovian-interop-server",
        env!("CARGO_BIN_EXE_jovian-interop-server").as_ref(),
        |port| vec!["--port".into(), port.to_string(), "--host".into(), "127.0.0.1".into()],
    )
    .await;
    run_cases("grpc-go client -> jovian server", STANDARD, |case| {
        let args = vec![
            "--server_host=127.0.0.1".to_owned(),
            format!("--server_port={}", server.port),
            format!("--test_case={case}"),
        ];
        let client = programs.interop_client.clone();
        async move { run_client("grpc-go interop client", &client, &args).await }
    })
    .await;
    assert!(
        server.process.output().lines().all(|line| !line.contains("panicked")),
        "the jovian server panicked:\n{}",
        server.process.output()
    );
}
