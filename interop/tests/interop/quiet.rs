//! Long quiet calls from jovian's client, with its default options, to grpc-go's default
//! server settings (`go/slowserver`: grpc-go's TestService on `grpc.NewServer()`): a unary
//! call its server answers after 10 s, and a server stream that says nothing for 30 s.
//!
//! grpc-go's default keepalive enforcement lets a client ping at most once every 5 minutes
//! (and not at all without a call in flight); past two strikes it sends GOAWAY
//! `too_many_pings` and closes the connection, failing the calls on it. A quiet call must
//! survive that: the client may not ping it to death.

use std::time::Duration;

use jovian_interop::channel::InteropChannel;
use jovian_interop::go;
use jovian_interop::proto::test_service_client::TestServiceClient;
use jovian_interop::proto::{ResponseParameters, SimpleRequest, StreamingOutputCallRequest};
use jovian_tests::within;
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::servers::Server;

/// grpc-go's logging, verbose enough to show why it closed a connection.
pub const GO_LOGGING: &[(&str, &str)] = &[
    ("GRPC_GO_LOG_SEVERITY_LEVEL", "info"),
    ("GRPC_GO_LOG_VERBOSITY_LEVEL", "2"),
];

/// A grpc-go server with default settings, logging verbosely.
pub async fn slow_server() -> Server {
    Server::start_with_env("grpc-go slow server", &go::programs().slow_server, GO_LOGGING, |port| {
        vec![format!("--port={port}")]
    })
    .await
}

/// A jovian client's channel to `server`, with default options.
pub async fn client(server: &Server) -> (InteropChannel, TestServiceClient<jovian::ServiceChannel>) {
    let channel = InteropChannel::connect("127.0.0.1", server.port)
        .await
        .expect("a channel to the grpc-go server");
    let client = TestServiceClient::new(channel.channel.clone());
    (channel, client)
}

/// Fails the test with `status` and the server's log, if the server sent `too_many_pings`.
pub fn explain(what: &str, status: &Status, elapsed: Duration, server: &Server) -> String {
    format!(
        "{what} failed after {elapsed:.1?}: {:?} {:?}\ngrpc-go server's log:\n{}",
        status.code(),
        status.message(),
        server.process.output()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_answered_after_10_s_succeeds() {
    let server = slow_server().await;
    let (_channel, mut client) = client(&server).await;
    let mut request = Request::new(SimpleRequest {
        response_size: 1,
        ..SimpleRequest::default()
    });
    request.metadata_mut().insert("x-sleep-ms", "10000".parse().unwrap());
    // The caller's own deadline: the client's default (5 s) is for calls that set none.
    request.set_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let result = within(
        Duration::from_secs(40),
        "a unary call answered after 10 s",
        client.unary_call(request),
    )
    .await;
    if let Err(status) = result {
        panic!(
            "{}",
            explain("a unary call answered after 10 s", &status, started.elapsed(), &server)
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the server did not wait 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_quiet_for_30_s_succeeds() {
    let server = slow_server().await;
    let (_channel, mut client) = client(&server).await;
    // No deadline: a stream lasts as long as its caller lets it, not a default made for
    // unary calls.
    let request = StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: 1,
            interval_us: 30_000_000,
            ..ResponseParameters::default()
        }],
        ..StreamingOutputCallRequest::default()
    };
    let started = Instant::now();
    let call = async {
        let mut stream = client.streaming_output_call(request).await?.into_inner();
        let mut responses = 0;
        while stream.message().await?.is_some() {
            responses += 1;
        }
        Ok::<_, Status>(responses)
    };
    match within(Duration::from_secs(50), "a server stream quiet for 30 s", call).await {
        Ok(responses) => assert_eq!(responses, 1, "the stream's responses"),
        Err(status) => panic!(
            "{}",
            explain("a server stream quiet for 30 s", &status, started.elapsed(), &server)
        ),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "the server did not wait 30 s"
    );
}
