//! A server's HTTP/2 connections under clients that misbehave, go quiet, give up or outstay
//! their welcome: junk instead of HTTP/2, silence, pings left unanswered, calls abandoned,
//! deadlines, connections past their age. Each is seen from outside, on the socket or through a
//! real client, and the server must go on serving.

mod adversary;
mod floods;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jovian::{ClientBuilder, GrpcServer, Running};
use jovian_examples::proto::greeter_server::Greeter;
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{PeerEcho, server};
use jovian_tests::{init_logging, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const PING: u8 = 6;
const GOAWAY: u8 = 7;

async fn start(store: &MemoryStore, server: GrpcServer) -> Running {
    jovian_tests::greeters::serve(store, server).await
}

/// Reads HTTP/2 frames from `stream` until the server closes it, returning their types.
async fn frames_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let mut types = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

/// A server answers over a fresh connection: it is still serving.
async fn still_serving(store: &MemoryStore, name: &str) {
    let channel = ClientBuilder::new(store.registry()).build(name).await.unwrap();
    within(
        Duration::from_secs(5),
        "a call after the attack",
        GreeterClient::new(channel).say_hello(HelloRequest { name: "after".into() }),
    )
    .await
    .expect("the server still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_instead_of_http2_is_closed_and_the_server_goes_on() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("junk", PeerEcho)).await;
    let addr = running.local_addr("junk").unwrap();
    let junk: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0xff; 64],
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        // A valid preface, then a frame whose length is far over the frame size limit.
        &[PREFACE, &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]].concat(),
    ];
    for bytes in junk {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        within(
            Duration::from_secs(5),
            "the server closes a connection of junk",
            frames_until_closed(&mut stream),
        )
        .await;
    }
    still_serving(&store, "junk").await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_anything_is_closed_after_the_handshake_timeout() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("silent", PeerEcho)).await;
    let addr = running.local_addr("silent").unwrap();
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // They hold nothing up meanwhile.
    still_serving(&store, "silent").await;
    for stream in &mut silent {
        // 10 s of handshake time, with room for a loaded machine.
        within(
            Duration::from_secs(20),
            "a silent connection is closed",
            frames_until_closed(stream),
        )
        .await;
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() {
    init_logging();
    let store = MemoryStore::new();
    let server = server("pinged", PeerEcho).configure(|s| {
        s.http2_keepalive_interval = Some(Duration::from_millis(200));
        s.http2_keepalive_timeout = Some(Duration::from_millis(300));
    });
    let running = start(&store, server).await;
    let mut stream = TcpStream::connect(running.local_addr("pinged").unwrap()).await.unwrap();
    // A client that completes the handshake, then never answers anything.
    stream.write_all(&[PREFACE, &EMPTY_SETTINGS].concat()).await.unwrap();
    let frames = within(
        Duration::from_secs(5),
        "the server closes a connection whose pings go unanswered",
        frames_until_closed(&mut stream),
    )
    .await;
    assert!(
        frames.contains(&PING),
        "the server pinged before closing: frames {frames:?}"
    );
    still_serving(&store, "pinged").await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_their_age_are_replaced_without_failing_a_call() {
    init_logging();
    let store = MemoryStore::new();
    let server = server("aging", PeerEcho).configure(|s| {
        s.max_connection_age = Some(Duration::from_millis(300));
        s.max_connection_age_grace = Some(Duration::from_secs(5));
    });
    let running = start(&store, server).await;
    let channel = ClientBuilder::new(store.registry()).build("aging").await.unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                let mut peers = std::collections::BTreeSet::new();
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                while tokio::time::Instant::now() < until {
                    let reply = client
                        .say_hello(HelloRequest { name: "x".into() })
                        .await
                        .expect("no call fails while connections age out");
                    peers.insert(reply.into_inner().message);
                }
                peers
            })
        })
        .collect();
    let mut connections = std::collections::BTreeSet::new();
    for caller in callers {
        connections.extend(caller.await.unwrap());
    }
    // Each reply names the client's side of its connection: new connections, new ports.
    assert!(
        connections.len() >= 3,
        "2 s of calls over connections that age out after 0.3 s used {connections:?}"
    );
    running.stop().await.unwrap();
}

/// Counts handlers that began and handlers that were dropped (finished or cancelled).
#[derive(Clone, Default)]
struct Patient {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Greeter for Patient {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let _dropped = Dropped(Arc::clone(&self.dropped));
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Response::new(HelloReply::default()))
    }
}

/// A plain tonic client to `addr`.
async fn plain_client(addr: std::net::SocketAddr) -> GreeterClient<tonic::transport::Channel> {
    GreeterClient::new(adversary::plain_channel(addr).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_sent_with_the_call_ends_it_on_the_server() {
    init_logging();
    let store = MemoryStore::new();
    let patient = Patient::default();
    let running = start(&store, server("deadline", patient.clone())).await;
    // A client of bare h2, which sends the deadline and does not enforce it (tonic's and
    // jovian's clients do): what the server does with it is all there is to see.
    let tcp = TcpStream::connect(running.local_addr("deadline").unwrap())
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("http://deadline/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // One empty message: uncompressed, zero bytes long.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = within(Duration::from_secs(5), "the server ends the call", response)
        .await
        .unwrap();
    // Trailers-only: the status is in the head.
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED; the head was {:?}",
        response.headers()
    );
    assert_eq!(
        patient.dropped.load(Ordering::SeqCst),
        1,
        "the handler was dropped with the call"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_gives_up_on_is_dropped_on_the_server() {
    init_logging();
    let store = MemoryStore::new();
    let patient = Patient::default();
    let running = start(&store, server("abandoned", patient.clone())).await;
    let mut client = plain_client(running.local_addr("abandoned").unwrap()).await;
    let call = tokio::spawn(async move { client.say_hello(HelloRequest::default()).await });
    jovian_tests::eventually(Duration::from_secs(5), "the handler starts", || async {
        (patient.started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // Dropping the call resets its stream.
    call.abort();
    jovian_tests::eventually(Duration::from_secs(5), "the abandoned handler is dropped", || async {
        (patient.dropped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // A stop does not wait for it: nothing is left in flight.
    within(Duration::from_secs(5), "the stop", running.stop())
        .await
        .unwrap();
}

/// A handler that computes (blocks its thread) for 20 ms, counting how many compute at once.
#[derive(Clone, Default)]
struct Busy {
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Greeter for Busy {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(Response::new(HelloReply::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn handlers_that_compute_for_long_run_in_parallel_on_one_connection() {
    init_logging();
    let store = MemoryStore::new();
    let busy = Busy::default();
    let running = start(&store, server("busy", busy.clone())).await;
    // One instance: every call of the client goes over its one connection.
    let channel = ClientBuilder::new(store.registry()).build("busy").await.unwrap();
    for _ in 0..10 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let mut client = GreeterClient::new(channel.clone());
                tokio::spawn(async move { client.say_hello(HelloRequest::default()).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().expect("every call ends well");
        }
        if busy.most.load(Ordering::SeqCst) > 1 {
            break;
        }
    }
    assert!(
        busy.most.load(Ordering::SeqCst) > 1,
        "calls over one connection to a handler that computes for 20 ms never ran two at once"
    );
    running.stop().await.unwrap();
}

/// Reads the server's first SETTINGS frame (after sending the preface and empty SETTINGS);
/// returns its parameters as (identifier, value).
async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    stream.write_all(&[PREFACE, &EMPTY_SETTINGS].concat()).await.unwrap();
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 4, "the server speaks first with SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect()
}

/// Failed on the old code: no SETTINGS_MAX_CONCURRENT_STREAMS unless configured, so one
/// connection could open streams without limit (200,000 that never ended took 1.9 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_header_lists_are_bounded_by_default() {
    init_logging();
    let store = MemoryStore::new();
    let running = start(&store, server("bounded", PeerEcho)).await;
    let mut stream = TcpStream::connect(running.local_addr("bounded").unwrap())
        .await
        .unwrap();
    let settings = within(
        Duration::from_secs(5),
        "the server's SETTINGS",
        server_settings(&mut stream),
    )
    .await;
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    const MAX_HEADER_LIST_SIZE: u16 = 6;
    assert!(settings.contains(&(MAX_CONCURRENT_STREAMS, 200)), "{settings:?}");
    assert!(settings.contains(&(MAX_HEADER_LIST_SIZE, 16 * 1024)), "{settings:?}");
    drop(stream);
    running.stop().await.unwrap();
}

/// A connection that shook hands and never called is let go once it has had no call for
/// `max_connection_idle`: GOAWAY, then closed (after a grace, as this client answers nothing);
/// one with a call open is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_call_for_the_idle_limit_is_closed_gracefully() {
    init_logging();
    let store = MemoryStore::new();
    let idle = Duration::from_millis(500);
    let server = server("idle", SlowEcho).configure(|s| s.max_connection_idle = Some(idle));
    let running = start(&store, server).await;
    let addr = running.local_addr("idle").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[PREFACE, &EMPTY_SETTINGS].concat()).await.unwrap();
    let started = std::time::Instant::now();
    let frames = within(
        Duration::from_secs(20),
        "the idle connection is closed",
        frames_until_closed(&mut stream),
    )
    .await;
    assert!(frames.contains(&GOAWAY), "closed gracefully: {frames:?}");
    assert!(started.elapsed() >= idle, "not before the limit");
    // A call longer than the limit keeps its connection, and the next call uses it.
    let channel = ClientBuilder::new(store.registry()).build("idle").await.unwrap();
    let mut client = GreeterClient::new(channel);
    let slow = client.say_hello(HelloRequest { name: "1500".into() }).await.unwrap();
    let again = client.say_hello(HelloRequest { name: "0".into() }).await.unwrap();
    assert_eq!(
        slow.into_inner().message,
        again.into_inner().message,
        "both calls came over the same client connection"
    );
    running.stop().await.unwrap();
}

/// Failed on the old code: the call ran inline in its connection's task, so for 3 s that task
/// answered no ping and read no other call; the client gave up on the connection after 2 s,
/// failing the slow call and the fast ones beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_computes_for_seconds_holds_up_nothing_else_on_its_connection() {
    init_logging();
    let store = MemoryStore::new();
    let spinning = Arc::new(tokio::sync::Notify::new());
    let running = start(&store, server("cpu", Spinning(Arc::clone(&spinning)))).await;
    let channel = ClientBuilder::new(store.registry()).build("cpu").await.unwrap();
    GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "warm".into() })
        .await
        .unwrap();
    let mut request = tonic::Request::new(HelloRequest { name: "spin".into() });
    request.set_timeout(Duration::from_secs(10));
    let mut client = GreeterClient::new(channel.clone());
    let slow = tokio::spawn(async move { client.say_hello(request).await });
    within(
        Duration::from_secs(5),
        "the handler to start computing",
        spinning.notified(),
    )
    .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut fast = Vec::new();
    for _ in 0..4 {
        let (channel, done) = (channel.clone(), Arc::clone(&done));
        fast.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut calls = 0;
            while !done.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                GreeterClient::new(channel.clone())
                    .say_hello(HelloRequest { name: "fast".into() })
                    .await
                    .expect("a fast call beside the computing one");
                slowest = slowest.max(started.elapsed());
                calls += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (calls, slowest)
        }));
    }
    let reply = slow.await.unwrap();
    done.store(true, Ordering::Relaxed);
    reply.expect("the computing call finishes");
    for task in fast {
        let (calls, slowest) = task.await.unwrap();
        assert!(calls > 10, "fast calls went on meanwhile: {calls}");
        assert!(
            slowest < Duration::from_secs(1),
            "no fast call waited on the computing one: {slowest:?}"
        );
    }
    running.stop().await.unwrap();
}

/// Computes (blocks its thread) for 3 s when asked `spin`, telling the test when it starts;
/// answers at once otherwise.
#[derive(Clone)]
struct Spinning(Arc<tokio::sync::Notify>);

#[tonic::async_trait]
impl Greeter for Spinning {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        if request.get_ref().name == "spin" {
            self.0.notify_one();
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Ok(Response::new(HelloReply { message: "done".into() }))
    }
}

/// Replies with the client's address (its connection), after sleeping as many milliseconds as
/// the request's name says.
#[derive(Clone, Copy)]
struct SlowEcho;

#[tonic::async_trait]
impl Greeter for SlowEcho {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let remote = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let ms = request.into_inner().name.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Response::new(HelloReply { message: remote }))
    }
}
