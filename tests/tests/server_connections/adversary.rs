//! The server's own HTTP/2 connections under hostile, unlucky or large users: handlers that
//! panic, bodies far larger than the flow-control windows, readers that do not read, streams
//! reset as fast as they open, connections that never finish their handshake while the server
//! stops, deadlines that pass mid-stream, TLS clients that are not.

use super::{Patient, start, still_serving};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use jovian::{App, ClientBuilder, GrpcServer};
use jovian_examples::proto::greeter_server::Greeter;
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{Sleepy, server};
use jovian_tests::{eventually, init_logging, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

/// A plain tonic client to `addr`: one connection.
pub(super) async fn plain_channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A bare h2 client connection to `addr`.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

fn grpc_request(path: &str) -> http::request::Builder {
    http::Request::post(format!("http://test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

/// One gRPC message frame: uncompressed, `payload` long.
fn frame(payload: &[u8]) -> Bytes {
    let mut framed = vec![0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    framed.into()
}

/// The grpc-status of a response: in its head (trailers-only) or its trailers.
async fn grpc_status(response: http::Response<h2::RecvStream>) -> Option<String> {
    if let Some(status) = response.headers().get("grpc-status") {
        return Some(status.to_str().unwrap().to_owned());
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.ok()?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.ok()??;
    Some(trailers.get("grpc-status")?.to_str().unwrap().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Panics

/// Panics for the name "panic" (before its first await, as an `unwrap` on a bad request
/// would); sleeps as many milliseconds as a numeric name says, then answers.
#[derive(Clone, Copy)]
struct Panicky;

#[tonic::async_trait]
impl Greeter for Panicky {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        assert!(name != "panic", "the handler panics as asked");
        if let Ok(ms) = name.parse::<u64>() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(Response::new(HelloReply { message: name }))
    }
}

/// Sends SayHello with `name` on `client`, the whole request at once.
fn say_hello(client: &mut h2::client::SendRequest<Bytes>, name: &str) -> h2::client::ResponseFuture {
    let request = grpc_request("/helloworld.Greeter/SayHello").body(()).unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // HelloRequest { name }: field 1, length-delimited.
    let mut message = vec![0x0a, name.len() as u8];
    message.extend_from_slice(name.as_bytes());
    body.send_data(frame(&message), true).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_fails_only_its_own_call() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("panicky", Panicky)).await;
    // One connection, and the two calls in one write: the server reads both at once and runs
    // the first inline, in the connection's task.
    let mut client = h2_client(running.local_addr("panicky").unwrap()).await;
    let panicked = say_hello(&mut client, "panic");
    let slow = say_hello(&mut client, "300");
    let panicked = within(Duration::from_secs(5), "the panicking call", panicked).await;
    let slow = within(Duration::from_secs(5), "the slow call beside it", slow).await;
    let slow = slow.expect("a call beside one whose handler panicked is not failed with it");
    assert_eq!(grpc_status(slow).await.as_deref(), Some("0"));
    assert!(
        panicked
            .as_ref()
            .map_or(true, |r| r.headers().get("grpc-status").is_some_and(|s| s != "0")),
        "the panicking call does not answer OK: {panicked:?}"
    );
    // The connection itself goes on.
    let again = say_hello(&mut client.clone().ready().await.unwrap(), "again");
    let again = within(Duration::from_secs(5), "a call after the panic", again)
        .await
        .expect("the connection survives a panicking handler");
    assert_eq!(grpc_status(again).await.as_deref(), Some("0"));
    still_serving(&store, "panicky").await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_is_answered_with_a_status() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("panicky2", Panicky)).await;
    let mut client = h2_client(running.local_addr("panicky2").unwrap()).await;
    let response = say_hello(&mut client, "panic");
    let response = within(Duration::from_secs(5), "an answer to the panicking call", response).await;
    let response = response.expect("the call is answered, not reset");
    let status = grpc_status(response).await;
    assert_eq!(status.as_deref(), Some("13"), "INTERNAL for a handler that panicked");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stream_that_panics_ends_its_call_with_internal() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, streams_server("panicky3", Streams::default())).await;
    let mut client = h2_client(running.local_addr("panicky3").unwrap()).await;
    for _ in 0..2 {
        let request = grpc_request("/test.Stream/Down").body(()).unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(frame(b"\x0a\x05panic"), true).unwrap();
        let response = within(Duration::from_secs(5), "the head", response)
            .await
            .expect("the call is answered");
        let status = within(Duration::from_secs(5), "the status", grpc_status(response)).await;
        assert_eq!(status.as_deref(), Some("13"), "INTERNAL for a stream that panicked");
        client = client.ready().await.expect("the connection goes on");
    }
    running.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Streams larger than the windows

/// `/test.Stream/Up` (client streaming: answers the bytes it read, or INVALID_ARGUMENT at
/// once when the first message's name is "refuse"), `/test.Stream/Down` (server streaming:
/// `name` is "COUNT SIZE", sends COUNT messages of SIZE bytes, counting what it produced;
/// "forever" sends one then nothing more; "panic" sends one then panics), `/test.Stream/Chat` (bidi: echoes each message).
#[derive(Clone, Default)]
struct Streams {
    produced: Arc<AtomicUsize>,
}

impl NamedService for Streams {
    const NAME: &'static str = "test.Stream";
}

type Codec = tonic_prost::ProstCodec<HelloReply, HelloRequest>;

impl tower::Service<http::Request<Body>> for Streams {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::default()).max_decoding_message_size(8 << 20);
            Ok(match request.uri().path() {
                "/test.Stream/Up" => grpc.client_streaming(Up, request).await,
                "/test.Stream/Down" => grpc.server_streaming(Down(this.produced), request).await,
                "/test.Stream/Chat" => grpc.streaming(Chat, request).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

struct Up;

impl tonic::server::ClientStreamingService<HelloRequest> for Up {
    type Response = HelloReply;
    type Future = BoxFuture<'static, Result<Response<HelloReply>, Status>>;

    fn call(&mut self, request: Request<Streaming<HelloRequest>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut read = 0usize;
            while let Some(message) = stream.message().await? {
                if read == 0 && message.name == "refuse" {
                    return Err(Status::invalid_argument("refused at the first message"));
                }
                read += message.name.len();
            }
            Ok(Response::new(HelloReply {
                message: read.to_string(),
            }))
        })
    }
}

struct Down(Arc<AtomicUsize>);

impl tonic::server::ServerStreamingService<HelloRequest> for Down {
    type Response = HelloReply;
    type ResponseStream = BoxStream<'static, Result<HelloReply, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        let produced = Arc::clone(&self.0);
        Box::pin(async move {
            let name = request.into_inner().name;
            if name == "panic" {
                let one = futures_util::stream::iter([Ok(HelloReply { message: "one".into() })]);
                let then = futures_util::stream::poll_fn(|_| -> Poll<Option<Result<HelloReply, Status>>> {
                    panic!("the response stream panics as asked")
                });
                return Ok(Response::new(one.chain(then).boxed()));
            }
            if name == "forever" {
                let one = futures_util::stream::iter([Ok(HelloReply { message: "one".into() })]);
                return Ok(Response::new(one.chain(futures_util::stream::pending()).boxed()));
            }
            let (count, size) = name.split_once(' ').expect("COUNT SIZE");
            let (count, size): (usize, usize) = (count.parse().unwrap(), size.parse().unwrap());
            let message = "x".repeat(size);
            let replies = futures_util::stream::iter(0..count).map(move |_| {
                produced.fetch_add(1, Ordering::SeqCst);
                Ok(HelloReply {
                    message: message.clone(),
                })
            });
            Ok(Response::new(replies.boxed()))
        })
    }
}

struct Chat;

impl tonic::server::StreamingService<HelloRequest> for Chat {
    type Response = HelloReply;
    type ResponseStream = BoxStream<'static, Result<HelloReply, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<HelloRequest>>) -> Self::Future {
        let replies = request
            .into_inner()
            .map(|request| request.map(|r| HelloReply { message: r.name }));
        Box::pin(async move { Ok(Response::new(replies.boxed())) })
    }
}

fn streams_server(name: &str, streams: Streams) -> GrpcServer {
    GrpcServer::new(name).add_service(streams)
}

fn client_codec() -> tonic_prost::ProstCodec<HelloRequest, HelloReply> {
    tonic_prost::ProstCodec::default()
}

const CHUNK: usize = 64 * 1024;
/// 20 MiB in 64 KiB messages.
const MESSAGES: usize = 320;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mebibytes_each_way_on_a_bidi_call() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, streams_server("bidi", Streams::default())).await;
    let channel = ClientBuilder::new(store.registry()).build("bidi").await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(8 << 20);
    grpc.ready().await.unwrap();
    let outgoing = futures_util::stream::iter(0..MESSAGES).map(|i| HelloRequest {
        name: format!("{i:08}").repeat(CHUNK / 8),
    });
    let call = grpc.streaming(
        Request::new(outgoing),
        "/test.Stream/Chat".parse().unwrap(),
        client_codec(),
    );
    let mut replies = within(Duration::from_secs(10), "the call starts", call)
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(reply) = within(Duration::from_secs(20), "a reply", replies.message())
        .await
        .unwrap()
    {
        assert_eq!(reply.message.len(), CHUNK);
        assert_eq!(&reply.message[..8], format!("{got:08}"), "in order");
        got += 1;
    }
    assert_eq!(got, MESSAGES);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mebibytes_up_while_the_handler_reads_and_down_to_a_slow_reader() {
    init_logging();
    let store = MemoryStore::new();
    let streams = Streams::default();
    let running = start(&store, streams_server("updown", streams.clone())).await;
    let channel = ClientBuilder::new(store.registry()).build("updown").await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(8 << 20);
    grpc.ready().await.unwrap();
    // Up: 20 MiB.
    let outgoing = futures_util::stream::iter(0..MESSAGES).map(|_| HelloRequest {
        name: "u".repeat(CHUNK),
    });
    let read = within(
        Duration::from_secs(30),
        "20 MiB up",
        grpc.client_streaming(
            Request::new(outgoing),
            "/test.Stream/Up".parse().unwrap(),
            client_codec(),
        ),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(read.message, (MESSAGES * CHUNK).to_string());
    // Down: 64 MiB offered to a client that reads nothing at first.
    grpc.ready().await.unwrap();
    let total = 1024;
    let call = grpc.server_streaming(
        Request::new(HelloRequest {
            name: format!("{total} {CHUNK}"),
        }),
        "/test.Stream/Down".parse().unwrap(),
        client_codec(),
    );
    let mut replies = within(Duration::from_secs(10), "the call starts", call)
        .await
        .unwrap()
        .into_inner();
    // The handler runs until the windows and buffers are full, then is held back.
    let mut last = usize::MAX;
    let held_at = eventually(Duration::from_secs(20), "the producer is held back", || {
        let now = streams.produced.load(Ordering::SeqCst);
        let stable = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stable.then_some(now)
        }
    })
    .await;
    assert!(
        held_at * CHUNK < 16 << 20,
        "a reader that reads nothing let the server produce {held_at} messages of 64 KiB"
    );
    let mut got = 0;
    while let Some(reply) = within(Duration::from_secs(20), "a reply", replies.message())
        .await
        .unwrap()
    {
        assert_eq!(reply.message.len(), CHUNK);
        got += 1;
    }
    assert_eq!(got, total);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_at_its_first_message_gets_the_refusal() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, streams_server("refuse", Streams::default())).await;
    let channel = plain_channel(running.local_addr("refuse").unwrap()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // The first message says "refuse"; the client goes on with 20 MiB more.
    let outgoing = futures_util::stream::iter(0..MESSAGES).map(|i| HelloRequest {
        name: if i == 0 { "refuse".into() } else { "u".repeat(CHUNK) },
    });
    let status = within(
        Duration::from_secs(30),
        "the refusal",
        grpc.client_streaming(
            Request::new(outgoing),
            "/test.Stream/Up".parse().unwrap(),
            client_codec(),
        ),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::InvalidArgument, "refused at the first message"),
        "{status:?}"
    );
    running.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Deadlines

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_mid_stream_ends_the_stream() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, streams_server("deadline", Streams::default())).await;
    // Bare h2: sends the deadline, does not enforce it.
    let mut client = h2_client(running.local_addr("deadline").unwrap()).await;
    let request = grpc_request("/test.Stream/Down")
        .header("grpc-timeout", "300m")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // HelloRequest { name: "forever" }
    body.send_data(frame(b"\x0a\x07forever"), true).unwrap();
    let response = within(Duration::from_secs(5), "the head", response).await.unwrap();
    let status = within(
        Duration::from_secs(5),
        "the server ends a stream whose deadline passed",
        grpc_status(response),
    )
    .await;
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    running.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Stopping

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_in_its_handshake_does_not_hold_up_a_stop() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .shutdown_deadline(Duration::from_secs(30))
        .serve(server("handshaking", Sleepy))
        .start()
        .await
        .unwrap();
    // A load balancer's TCP check, a port scanner, a client that connected and froze.
    let _silent = TcpStream::connect(running.local_addr("handshaking").unwrap())
        .await
        .unwrap();
    // Let the server accept it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(Duration::from_secs(5), "a stop with no call in flight", running.stop())
        .await
        .expect("nothing was in flight, so the stop was within its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_in_its_tls_handshake_does_not_hold_up_a_stop() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = jovian_tests::pki::Pki::generate(dir.path());
    let store = MemoryStore::new();
    let tls = jovian::ServerTls::new(&pki.server_cert, &pki.server_key);
    let running = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .shutdown_deadline(Duration::from_secs(30))
        .serve(server("tlshandshaking", Sleepy).tls(tls))
        .start()
        .await
        .unwrap();
    let _silent = TcpStream::connect(running.local_addr("tlshandshaking").unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(Duration::from_secs(5), "a stop with no call in flight", running.stop())
        .await
        .expect("nothing was in flight, so the stop was within its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_unary_calls_and_cuts_off_a_stream_at_the_deadline() {
    init_logging();
    let store = MemoryStore::new();
    let running = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .shutdown_deadline(Duration::from_secs(2))
        .serve(
            GrpcServer::new("stopping")
                .add_service(Streams::default())
                .add_service(jovian_examples::proto::greeter_server::GreeterServer::new(Sleepy)),
        )
        .start()
        .await
        .unwrap();
    let channel = plain_channel(running.local_addr("stopping").unwrap()).await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            Request::new(HelloRequest { name: "forever".into() }),
            "/test.Stream/Down".parse().unwrap(),
            client_codec(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().message, "one");
    let unary: Vec<_> = (0..20)
        .map(|_| {
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move { client.say_hello(HelloRequest { name: "700".into() }).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = within(Duration::from_secs(8), "the stop, within its deadline", running.stop()).await;
    assert!(
        matches!(stopped, Err(jovian::Error::ShutdownDeadline(_))),
        "the endless stream was cut off at the deadline: {stopped:?}"
    );
    for call in unary {
        call.await
            .unwrap()
            .expect("a unary call in flight when the stop began finishes");
    }
    let ended = within(Duration::from_secs(5), "the stream ends", stream.message()).await;
    assert!(ended.is_err(), "the cut-off stream ends in an error: {ended:?}");
}

// ---------------------------------------------------------------------------------------------
// Many streams, resets, odd requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_at_once_on_one_connection() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("thousand", Sleepy)).await;
    let channel = plain_channel(running.local_addr("thousand").unwrap()).await;
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move { client.say_hello(HelloRequest { name: "100".into() }).await })
        })
        .collect();
    for call in calls {
        within(Duration::from_secs(30), "a call", call)
            .await
            .unwrap()
            .expect("every call succeeds");
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_at_once() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("many", Sleepy)).await;
    let addr = running.local_addr("many").unwrap();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = GreeterClient::new(plain_channel(addr).await);
                for _ in 0..5 {
                    client.say_hello(HelloRequest { name: "20".into() }).await?;
                }
                Ok::<_, Status>(())
            })
        })
        .collect();
    for call in calls {
        within(Duration::from_secs(30), "a connection's calls", call)
            .await
            .unwrap()
            .expect("every call succeeds");
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_as_fast_as_they_open_leave_nothing_behind() {
    init_logging();
    let store = MemoryStore::new();
    let patient = Patient::default();
    let running = start(&store, server("rapid", patient.clone())).await;
    let addr = running.local_addr("rapid").unwrap();
    let baseline = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut opened = 0;
    'attack: for _connection in 0..5 {
        let mut client = h2_client(addr).await;
        for _ in 0..2000 {
            // Half reset before the body, half once the handler has it.
            let with_body = opened % 2 == 0;
            let Ok(ready) = within(Duration::from_secs(5), "room for a stream", client.clone().ready()).await else {
                // The server closed the attacking connection: fair.
                continue 'attack;
            };
            client = ready;
            let Ok((_response, mut body)) =
                client.send_request(grpc_request("/helloworld.Greeter/SayHello").body(()).unwrap(), false)
            else {
                continue 'attack;
            };
            if with_body {
                let _ = body.send_data(frame(b""), false);
            }
            body.send_reset(h2::Reason::CANCEL);
            opened += 1;
        }
    }
    assert!(opened > 0);
    // Patient never answers in time: the health service says whether the server serves.
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain_channel(addr).await);
    within(
        Duration::from_secs(5),
        "a health check after the attack",
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("the server still serves");
    eventually(Duration::from_secs(10), "every handler started is dropped", || async {
        let (started, dropped) = (
            patient.started.load(Ordering::SeqCst),
            patient.dropped.load(Ordering::SeqCst),
        );
        (started == dropped).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the server's tasks are back to a handful",
        || async {
            let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
            (alive <= baseline + 10).then_some(())
        },
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_services_are_unimplemented() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("unknown", Sleepy)).await;
    let mut client = h2_client(running.local_addr("unknown").unwrap()).await;
    for path in [
        "/helloworld.Greeter/Nope",
        "/no.Such/Service",
        "/",
        "/helloworld.Greeter",
    ] {
        let (response, mut body) = client
            .send_request(grpc_request(path).body(()).unwrap(), false)
            .unwrap();
        // The server may answer (and end the stream) from the headers alone, before the body
        // goes: then the stream is closed and the body has nowhere to go, which is fine.
        let _ = body.send_data(frame(b""), true);
        let response = within(Duration::from_secs(5), "an answer", response).await.unwrap();
        let status = within(Duration::from_secs(5), "the status", grpc_status(response)).await;
        assert_eq!(status.as_deref(), Some("12"), "UNIMPLEMENTED for {path}");
    }
    still_serving(&store, "unknown").await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_refused_and_the_connection_goes_on() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("headers", Sleepy)).await;
    let mut client = h2_client(running.local_addr("headers").unwrap()).await;
    // 64 KiB of headers, in CONTINUATION frames past the first.
    let big = "v".repeat(64 * 1024);
    let request = grpc_request("/helloworld.Greeter/SayHello")
        .header("x-big", big.as_str())
        .body(())
        .unwrap();
    match client.send_request(request, true) {
        Ok((response, _)) => {
            let answered = within(Duration::from_secs(5), "an answer to the oversized head", response).await;
            if let Ok(response) = answered {
                assert_ne!(response.status(), http::StatusCode::OK, "not served");
            }
        }
        // The client refused to send it: the server's SETTINGS said so.
        Err(error) => tracing::info!(%error, "the h2 client would not send it"),
    }
    still_serving(&store, "headers").await;
    running.stop().await.unwrap();
}

/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
fn frame_head(length: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut head = (length as u32).to_be_bytes()[1..].to_vec();
    head.extend_from_slice(&[kind, flags]);
    head.extend_from_slice(&stream.to_be_bytes());
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_continuation_frames_is_cut_short() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("continuation", Sleepy)).await;
    let stream = TcpStream::connect(running.local_addr("continuation").unwrap())
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    // A HEADERS frame that never ends (no END_HEADERS), then 32 MiB of CONTINUATION frames,
    // each one more header field of 16,000 bytes.
    let flood = tokio::spawn(async move {
        let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        start.extend(frame_head(0, 4, 0, 0));
        // :method POST, :scheme http, :path / (static table).
        start.extend(frame_head(3, 1, 0, 1));
        start.extend_from_slice(&[0x83, 0x86, 0x84]);
        write.write_all(&start).await?;
        let mut field = vec![0x00, 0x03];
        field.extend_from_slice(b"x-a");
        field.extend_from_slice(&[0x7f, 0x81, 0x7c]);
        field.resize(field.len() + 16_000, b'v');
        let mut continuation = frame_head(field.len(), 9, 0, 1);
        continuation.extend_from_slice(&field);
        for _ in 0..2000 {
            write.write_all(&continuation).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    within(Duration::from_secs(10), "the server closes the flood", async {
        let mut sink = [0u8; 4096];
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let sent = within(Duration::from_secs(10), "the flood stops", flood).await.unwrap();
    assert!(sent.is_err(), "the server read all 32 MiB of one request's headers");
    still_serving(&store, "continuation").await;
    running.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// TLS

/// Answers with how many certificates the client presented and its address.
#[derive(Clone, Copy)]
struct WhoAreYou;

#[tonic::async_trait]
impl Greeter for WhoAreYou {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let certs = request.peer_certs().map_or(0, |certs| certs.len());
        let remote = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        Ok(Response::new(HelloReply {
            message: format!("{certs} {remote}"),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_shows_the_peer_and_plaintext_or_junk_is_closed() {
    use jovian::ServerTls;
    use jovian::client::ClientTls;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = jovian_tests::pki::Pki::generate(dir.path());
    let store = MemoryStore::new();
    let tls = ServerTls::new(&pki.server_cert, &pki.server_key).client_ca(&pki.ca);
    let running = start(&store, server("mtls", WhoAreYou).tls(tls)).await;
    let addr = running.local_addr("mtls").unwrap();
    let client_tls = ClientTls::default()
        .ca(&pki.ca)
        .identity(&pki.client_cert, &pki.client_key);
    let mut options = jovian::client::ClientOptions::default();
    options.connection.tls = Some(client_tls);
    let call = |options: jovian::client::ClientOptions| {
        let store = &store;
        async move {
            let channel = ClientBuilder::new(store.registry())
                .options(options)
                .build("mtls")
                .await
                .unwrap();
            GreeterClient::new(channel)
                .say_hello(HelloRequest::default())
                .await
                .map(|r| r.into_inner().message)
        }
    };
    let reply = within(Duration::from_secs(10), "a call over mutual TLS", call(options.clone()))
        .await
        .expect("mutual TLS works");
    let (certs, remote) = reply.split_once(' ').unwrap();
    assert_eq!(certs, "1", "the handler sees the client's certificate: {reply}");
    assert!(remote.starts_with("127.0.0.1:"), "and its address: {reply}");
    // Plaintext HTTP/2, and junk, against the TLS port.
    for bytes in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"[..],
        &[0x16; 4096][..],
        &[0xff; 64][..],
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(bytes).await;
        within(Duration::from_secs(5), "the server closes it", async {
            let mut sink = [0u8; 4096];
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    within(Duration::from_secs(10), "a call after the junk", call(options))
        .await
        .expect("the TLS server still serves");
    running.stop().await.unwrap();
}
