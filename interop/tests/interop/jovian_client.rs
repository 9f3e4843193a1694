//! jovian's interop client (`jovian-interop-client`, a `ServiceChannel` with default options)
//! against grpc-go's interop server with its default settings: every standard case. And
//! against jovian's own server: the standard cases again, and the compression cases, which
//! grpc-go's server does not implement (it registers no gzip codec and ignores
//! `expect_compressed` and `response_compressed`).

use jovian_interop::go;

use crate::servers::{Server, run_cases, run_client};
use jovian_interop::cases::{COMPRESSION, STANDARD};

async fn run_against(what: &str, server: &Server, cases: &[&str]) {
    run_cases(what, cases, |case| {
        let args = vec![
            "--server_host=127.0.0.1".to_owned(),
            format!("--server_port={}", server.port),
            format!("--test_case={case}"),
        ];
        async move {
            let client = env!("CARGO_BIN_EXE_jovian-interop-client").as_ref();
            run_client("jovian-interop-client", client, &args).await
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jovian_client_against_a_grpc_go_server() {
    let programs = go::programs();
    let server = Server::start("grpc-go interop server", &programs.interop_server, |port| {
        vec![format!("--port={port}")]
    })
    .await;
    run_against("jovian client -> grpc-go server", &server, STANDARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jovian_client_against_a_jovian_server() {
    let server = Server::start(
        "jovian-interop-server",
        env!("CARGO_BIN_EXE_jovian-interop-server").as_ref(),
        |port| vec!["--port".into(), port.to_string(), "--host".into(), "127.0.0.1".into()],
    )
    .await;
    // Not server_compressed_streaming: it wants one message of a stream compressed and the
    // next not, and tonic's server compresses every message of a stream or none.
    let cases: Vec<&str> = STANDARD.iter().chain(&COMPRESSION[..3]).copied().collect();
    run_against("jovian client -> jovian server", &server, &cases).await;
}
