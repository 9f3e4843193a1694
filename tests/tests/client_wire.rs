//! The client on the wire, against peers it did not write: scripted HTTP/2 servers that behave
//! as stock gRPC servers do (a ping policy that punishes, old grpc-go's blind spot for a stream
//! ended on its HEADERS) or misbehave (stall after the head, stop mid-message, never send
//! trailers, refuse or reset streams, go away). Each case pins what the client sends, when a
//! call ends, and when it may move to another instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jovian::client::{ClientOptions, MethodOptions};
use jovian::metrics::GrpcType;
use jovian::{ClientBuilder, GrpcServer, MIN_PING_INTERVAL_KEY, Registrar, ServiceChannel, ServiceInfo};
use jovian_examples::proto::greeter_server::Greeter;
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{PeerEcho, serve, server};
use jovian_tests::h2peer::{ACK, END_STREAM, Peer, ScriptedServer, code, kind};
use jovian_tests::{init_logging, within};
use prost::Message;
use tokio::sync::mpsc;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// Registers a scripted server as an instance of `service`, as a foreign stack would: no
/// metadata, so the client knows nothing of its ping policy.
async fn register(store: &MemoryStore, service: &str, scripted: &ScriptedServer) -> ServiceInfo {
    let info = ServiceInfo::new(service, scripted.addr().to_string());
    store.registry().register(&info).await.unwrap();
    info
}

async fn channel(store: &MemoryStore, service: &str, options: ClientOptions) -> ServiceChannel {
    ClientBuilder::new(store.registry())
        .options(options)
        .build(service)
        .await
        .unwrap()
}

fn hello_reply(message: &str) -> Vec<u8> {
    HelloReply {
        message: message.into(),
    }
    .encode_to_vec()
}

async fn say_hello(channel: &ServiceChannel, timeout: Option<Duration>) -> Result<String, Status> {
    let mut request = Request::new(HelloRequest { name: "t".into() });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    Ok(GreeterClient::new(channel.clone())
        .say_hello(request)
        .await?
        .into_inner()
        .message)
}

/// Failed on the old code: the HEADERS frame itself ended the stream, which grpc-go servers
/// before 1.84 never tell their handler about (the interop case `empty_stream` hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_request_stream_ends_in_an_empty_data_frame() {
    init_logging();
    let (seen, mut frames) = mpsc::unbounded_channel();
    let scripted = ScriptedServer::start(move |mut peer: Peer| {
        let seen = seen.clone();
        async move {
            let Some(headers) = peer.next_request().await else {
                return;
            };
            let _ = seen.send(headers.clone());
            if headers.flags & END_STREAM == 0 {
                while let Some(frame) = peer.next_frame().await {
                    let ended = frame.kind == kind::DATA && frame.flags & END_STREAM != 0;
                    let _ = seen.send(frame);
                    if ended {
                        break;
                    }
                }
            }
            let _ = peer.answer(headers.stream, &hello_reply("none")).await;
        }
    })
    .await;
    let store = MemoryStore::new();
    register(&store, "empty", &scripted).await;
    let channel = channel(&store, "empty", ClientOptions::default()).await;
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let requests = tokio_stream::iter(Vec::<HelloRequest>::new());
    let reply = within(
        Duration::from_secs(5),
        "the empty client stream's reply",
        grpc.client_streaming(Request::new(requests), SAY_HELLO.parse().unwrap(), codec),
    )
    .await
    .unwrap();
    assert_eq!(reply.into_inner().message, "none");
    let headers = frames.recv().await.unwrap();
    assert_eq!(headers.kind, kind::HEADERS);
    assert_eq!(headers.flags & END_STREAM, 0, "the stream must not end on its HEADERS");
    let end = frames.recv().await.unwrap();
    assert_eq!(
        (end.kind, end.flags & END_STREAM, end.payload.len()),
        (kind::DATA, END_STREAM, 0),
        "then one empty DATA frame ending the stream: {end:?}"
    );
}

/// Failed on the old code: h2 refused the whole request ("malformed headers") and the client
/// reported UNAVAILABLE, blaming the instance for the caller's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_headers_are_dropped_not_blamed_on_the_instance() {
    init_logging();
    let store = MemoryStore::new();
    let _server = serve(&store, server("hop", PeerEcho)).await;
    let channel = ClientBuilder::new(store.registry())
        .layer(tower::util::MapRequestLayer::new(
            |mut request: http::Request<tonic::body::Body>| {
                let headers = request.headers_mut();
                for (name, value) in [
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("te", "gzip"),
                ] {
                    headers.insert(name, value.parse().unwrap());
                }
                request
            },
        ))
        .build("hop")
        .await
        .unwrap();
    for _ in 0..3 {
        say_hello(&channel, None)
            .await
            .expect("the call goes through without them");
    }
    assert!(channel.ejected().is_empty(), "no instance is blamed");
}

/// What a scripted instance does after a call's response head.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Nothing more.
    AfterHead,
    /// Part of a message, then nothing.
    MidMessage,
    /// The whole message, then no trailers.
    BeforeTrailers,
}

/// Failed on the old code: the deadline stopped at the response's head, so each of these calls
/// waited forever, and the instance counted as healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_covers_the_body_and_trailers_and_counts_against_the_instance() {
    init_logging();
    for stall in [Stall::AfterHead, Stall::MidMessage, Stall::BeforeTrailers] {
        let stalled = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&stalled);
        let scripted = ScriptedServer::start(move |mut peer: Peer| {
            let counted = Arc::clone(&counted);
            async move {
                while let Some(request) = peer.next_request().await {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let stream = request.stream;
                    let _ = peer.respond(stream).await;
                    match stall {
                        Stall::AfterHead => {}
                        Stall::MidMessage => {
                            let whole = jovian_tests::h2peer::grpc_frame(&hello_reply("cut short"));
                            let _ = peer.write(kind::DATA, 0, stream, &whole[..whole.len() - 3]).await;
                        }
                        Stall::BeforeTrailers => {
                            let _ = peer.message(stream, &hello_reply("no trailers")).await;
                        }
                    }
                }
                // Keeps the connection open, saying nothing more.
                std::future::pending::<()>().await;
            }
        })
        .await;
        let store = MemoryStore::new();
        let staller = register(&store, "stall", &scripted).await;
        let _healthy = serve(&store, server("stall", PeerEcho)).await;
        let options = ClientOptions::default().timeout(Duration::from_millis(300));
        let channel = channel(&store, "stall", options).await;
        let mut timeouts = 0;
        while stalled.load(Ordering::Relaxed) < 3 {
            let started = Instant::now();
            let result = within(Duration::from_secs(5), "a call to end", say_hello(&channel, None)).await;
            if let Err(status) = result {
                assert_eq!(status.code(), Code::DeadlineExceeded, "{stall:?}: {status:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{stall:?}: ended at its deadline"
                );
                timeouts += 1;
            }
        }
        assert_eq!(timeouts, 3, "{stall:?}: each stalled call timed out");
        let ejected: Vec<String> = channel.ejected().into_iter().map(|i| i.address).collect();
        assert_eq!(
            ejected,
            std::slice::from_ref(&staller.address),
            "{stall:?}: three timeouts in a row eject the instance"
        );
        for _ in 0..5 {
            say_hello(&channel, None)
                .await
                .expect("the healthy instance takes the calls");
        }
    }
}

/// `/test.Deadline/<anything>`: fails every call with NOT_FOUND, its message the call's
/// `grpc-timeout` as received (or `none`), so a test sees the deadline each call carried.
#[derive(Clone)]
struct DeadlineEcho;

impl tonic::server::NamedService for DeadlineEcho {
    const NAME: &'static str = "test.Deadline";
}

impl tower::Service<http::Request<tonic::body::Body>> for DeadlineEcho {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        std::future::ready(Ok(Status::not_found(timeout).into_http()))
    }
}

/// Failed on the old code: every call, a stream too, got the 5 s default deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_get_the_default_deadline_and_streams_none_unless_configured() {
    init_logging();
    let store = MemoryStore::new();
    let _server = serve(&store, GrpcServer::new("deadline").add_service(DeadlineEcho)).await;
    let carried = |channel: ServiceChannel, path: &'static str, streaming: bool| async move {
        let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let status = if streaming {
            // A request stream still open when the call is made.
            let (_open, requests) = mpsc::unbounded_channel::<HelloRequest>();
            let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(requests);
            grpc.streaming(Request::new(requests), path.parse().unwrap(), codec)
                .await
                .unwrap_err()
        } else {
            grpc.unary(Request::new(HelloRequest::default()), path.parse().unwrap(), codec)
                .await
                .unwrap_err()
        };
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        status.message().to_owned()
    };
    let in_ms = |value: String| -> u64 {
        let (digits, unit) = value.split_at(value.len() - 1);
        assert_eq!(unit, "m", "{value}");
        digits.parse().unwrap()
    };

    let mut options = ClientOptions::default();
    options.methods.insert(
        "/test.Deadline/Watch".into(),
        MethodOptions::default().grpc_type(GrpcType::ServerStream),
    );
    options.methods.insert(
        "/test.Deadline/Report".into(),
        MethodOptions::default().timeout(Duration::from_secs(30)),
    );
    let plain = ClientBuilder::new(store.registry())
        .options(options.clone())
        .method_type("/test.Deadline/Tail", GrpcType::ServerStream)
        .build("deadline")
        .await
        .unwrap();
    let unary = in_ms(carried(plain.clone(), "/test.Deadline/Get", false).await);
    assert!((4_000..=5_000).contains(&unary), "the 5 s unary default: {unary} ms");
    assert_eq!(
        carried(plain.clone(), "/test.Deadline/Chat", true).await,
        "none",
        "bidi"
    );
    assert_eq!(
        carried(plain.clone(), "/test.Deadline/Watch", false).await,
        "none",
        "declared in options"
    );
    assert_eq!(
        carried(plain.clone(), "/test.Deadline/Tail", false).await,
        "none",
        "declared in code"
    );
    let report = in_ms(carried(plain, "/test.Deadline/Report", false).await);
    assert!((29_000..=30_000).contains(&report), "the method's own: {report} ms");

    options.stream_timeout = Some(Duration::from_secs(60));
    let bounded = channel(&store, "deadline", options).await;
    let stream = in_ms(carried(bounded.clone(), "/test.Deadline/Watch", false).await);
    assert!((59_000..=60_000).contains(&stream), "stream_timeout: {stream} ms");
    let chat = in_ms(carried(bounded, "/test.Deadline/Chat", true).await);
    assert!((59_000..=60_000).contains(&chat), "stream_timeout: {chat} ms");
}

/// Pings a scripted instance saw while its one call was quiet, and whether it sent GOAWAY.
#[derive(Debug, Default)]
struct PingLog {
    pings: usize,
    too_many: bool,
}

/// A scripted instance that keeps each call quiet for `quiet`, then answers it, and judges
/// pings as grpc-go's server does with its default policy: a ping after the server sent
/// HEADERS or DATA is forgiven; any other within 5 minutes of the last one is a strike; the
/// third strike is GOAWAY `ENHANCE_YOUR_CALM` "too_many_pings" and the connection closes.
async fn strict_instance(quiet: Duration) -> (ScriptedServer, Arc<std::sync::Mutex<PingLog>>) {
    let log = Arc::new(std::sync::Mutex::new(PingLog::default()));
    let logged = Arc::clone(&log);
    let scripted = ScriptedServer::start(move |mut peer: Peer| {
        let log = Arc::clone(&logged);
        async move {
            let mut strikes = 0;
            let mut spoke_since_ping = true;
            let mut last_ping: Option<Instant> = None;
            let Some(request) = peer.next_request().await else {
                return;
            };
            let request = request.stream;
            let answer_at = tokio::time::Instant::now() + quiet;
            loop {
                let frame = tokio::select! {
                    frame = peer.read_frame() => frame,
                    () = tokio::time::sleep_until(answer_at) => {
                        let _ = peer.answer(request, &hello_reply("after a while")).await;
                        std::future::pending::<()>().await;
                        return;
                    }
                };
                let Some(frame) = frame else { return };
                match frame.kind {
                    kind::SETTINGS if frame.flags & ACK == 0 => {
                        let _ = peer.write(kind::SETTINGS, ACK, 0, &[]).await;
                    }
                    kind::PING if frame.flags & ACK == 0 => {
                        let _ = peer.write(kind::PING, ACK, 0, &frame.payload).await;
                        if spoke_since_ping {
                            strikes = 0;
                            spoke_since_ping = false;
                        } else if last_ping.is_some_and(|at: Instant| at.elapsed() < Duration::from_secs(300)) {
                            strikes += 1;
                        }
                        last_ping = Some(Instant::now());
                        let too_many = strikes > 2;
                        {
                            let mut log = log.lock().unwrap();
                            log.pings += 1;
                            log.too_many |= too_many;
                        }
                        if too_many {
                            let _ = peer.go_away(request, code::ENHANCE_YOUR_CALM, b"too_many_pings").await;
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    (scripted, log)
}

/// Failed on the old code: pinged every second while its call was quiet, a stock grpc-go server
/// closed the connection at the third strike (about 4 s), failing the call with UNAVAILABLE.
/// An instance that says it takes pings (as jovian's servers do) is still pinged each second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_call_is_pinged_only_as_the_instance_allows() {
    init_logging();
    let quiet = Duration::from_secs(6);
    let (stock, stock_log) = strict_instance(quiet).await;
    let (welcoming, welcoming_log) = strict_instance(quiet).await;
    let store = MemoryStore::new();
    register(&store, "stock", &stock).await;
    let info = ServiceInfo::new("welcoming", welcoming.addr().to_string()).with_metadata(MIN_PING_INTERVAL_KEY, "0");
    store.registry().register(&info).await.unwrap();
    let stock_channel = channel(&store, "stock", ClientOptions::default()).await;
    let welcoming_channel = channel(&store, "welcoming", ClientOptions::default()).await;
    let (stock_reply, _) = tokio::join!(
        say_hello(&stock_channel, Some(Duration::from_secs(20))),
        say_hello(&welcoming_channel, Some(Duration::from_secs(20))),
    );
    let stock_log = stock_log.lock().unwrap();
    assert_eq!(
        stock_reply.expect("the quiet call to the stock server succeeds"),
        "after a while"
    );
    assert!(!stock_log.too_many, "no too_many_pings: {stock_log:?}");
    assert!(
        (1..=2).contains(&stock_log.pings),
        "pinged, but no more than twice in one quiet stretch: {stock_log:?}"
    );
    let welcoming_log = welcoming_log.lock().unwrap();
    assert!(
        welcoming_log.pings >= 3,
        "an instance that takes pings gets one about every second: {welcoming_log:?}"
    );
}

/// What a scripted instance does with every request.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// `RST_STREAM(REFUSED_STREAM)`: not processed, says RFC 9113 §8.7.
    RefusedStream,
    /// `GOAWAY` below the stream, without an error: the instance is closing the connection.
    GracefulGoAway,
    /// `GOAWAY` below the stream with an error.
    ErrorGoAway,
    /// `RST_STREAM(INTERNAL_ERROR)`: the request may have been processed.
    InternalReset,
}

/// Pins what counts as "never sent" (moved to another instance whatever the method) and what
/// may have run (never sent twice unless idempotent), so an h2 upgrade cannot change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_calls_that_never_ran_move_to_another_instance() {
    init_logging();
    for refusal in [
        Refusal::RefusedStream,
        Refusal::GracefulGoAway,
        Refusal::ErrorGoAway,
        Refusal::InternalReset,
    ] {
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&refused);
        let scripted = ScriptedServer::start(move |mut peer: Peer| {
            let counted = Arc::clone(&counted);
            async move {
                while let Some(request) = peer.next_request().await {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let stream = request.stream;
                    let _ = match refusal {
                        Refusal::RefusedStream => peer.reset(stream, code::REFUSED_STREAM).await,
                        Refusal::GracefulGoAway => peer.go_away(stream.saturating_sub(2), code::NO_ERROR, b"").await,
                        Refusal::ErrorGoAway => peer.go_away(stream.saturating_sub(2), code::PROTOCOL_ERROR, b"").await,
                        Refusal::InternalReset => peer.reset(stream, code::INTERNAL_ERROR).await,
                    };
                }
            }
        })
        .await;
        let store = MemoryStore::new();
        register(&store, "refuse", &scripted).await;
        let answered = Arc::new(AtomicUsize::new(0));
        let _healthy = serve(&store, server("refuse", Counting(Arc::clone(&answered)))).await;
        let channel = channel(&store, "refuse", ClientOptions::default()).await;
        let mut failed = 0;
        for _ in 0..10 {
            if let Err(status) = say_hello(&channel, None).await {
                assert_eq!(status.code(), Code::Unavailable, "{refusal:?}: {status:?}");
                failed += 1;
            }
        }
        let (refused, answered) = (refused.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
        assert!(refused > 0, "{refusal:?}: the scripted instance was tried");
        match refusal {
            Refusal::InternalReset => {
                assert_eq!(
                    failed, refused,
                    "{refusal:?}: a call that may have run is not sent again"
                );
                assert_eq!(answered, 10 - failed, "{refusal:?}: the others went to the healthy one");
            }
            _ => {
                assert_eq!(failed, 0, "{refusal:?}: every call moved on and succeeded");
                assert_eq!(answered, 10, "{refusal:?}");
            }
        }
    }
}

/// Counts the calls it answers.
#[derive(Clone)]
struct Counting(Arc<AtomicUsize>);

#[tonic::async_trait]
impl Greeter for Counting {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(HelloReply { message: "ok".into() }))
    }
}

/// How a hostile scripted instance treats its connections.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Announces `SETTINGS_MAX_CONCURRENT_STREAMS` 0: no call can start.
    NoStreams,
    /// Announces an initial window of 0 and never opens it: no request body can go.
    ClosedWindow,
    /// Answers the head, then sends messages without end.
    EndlessBody,
    /// A message over the client's 4 MiB decoding limit.
    OversizedMessage,
    /// Thousands of PINGs and SETTINGS before it answers.
    ControlFlood,
    /// Takes the request and never says anything again.
    Silent,
}

/// Each call to a hostile instance ends by its deadline at the latest, the healthy instance
/// beside it takes the calls once the hostile one is ejected, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_instance_costs_calls_their_deadline_and_no_more() {
    init_logging();
    for hostile in [
        Hostile::NoStreams,
        Hostile::ClosedWindow,
        Hostile::EndlessBody,
        Hostile::OversizedMessage,
        Hostile::ControlFlood,
        Hostile::Silent,
    ] {
        let scripted = ScriptedServer::start(move |mut peer: Peer| async move {
            match hostile {
                // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 0.
                Hostile::NoStreams => drop(peer.write(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 0]).await),
                // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
                Hostile::ClosedWindow => drop(peer.write(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]).await),
                _ => {}
            }
            while let Some(request) = peer.next_request().await {
                let stream = request.stream;
                match hostile {
                    Hostile::EndlessBody => {
                        let _ = peer.respond(stream).await;
                        let chunk = jovian_tests::h2peer::grpc_frame(&hello_reply("more")).repeat(100);
                        // Within the client's windows it reads and drops; past them, it waits.
                        while peer.write(kind::DATA, 0, stream, &chunk).await.is_ok() {
                            tokio::task::yield_now().await;
                        }
                        return;
                    }
                    Hostile::OversizedMessage => {
                        let _ = peer.respond(stream).await;
                        let mut prefix = vec![0];
                        prefix.extend_from_slice(&(5u32 << 20).to_be_bytes());
                        let _ = peer.write(kind::DATA, 0, stream, &prefix).await;
                    }
                    Hostile::ControlFlood => {
                        for i in 0..5_000u64 {
                            let _ = peer.write(kind::PING, 0, 0, &i.to_be_bytes()).await;
                            let _ = peer.write(kind::SETTINGS, 0, 0, &[]).await;
                        }
                        let _ = peer.answer(stream, &hello_reply("after the flood")).await;
                    }
                    _ => {}
                }
            }
            std::future::pending::<()>().await;
        })
        .await;
        let store = MemoryStore::new();
        register(&store, "hostile", &scripted).await;
        let _healthy = serve(&store, server("hostile", PeerEcho)).await;
        let options = ClientOptions::default().timeout(Duration::from_millis(300));
        let channel = channel(&store, "hostile", options).await;
        let mut succeeded = 0;
        for _ in 0..12 {
            let started = Instant::now();
            let result = within(Duration::from_secs(5), "a call to end", say_hello(&channel, None)).await;
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{hostile:?}: a call took {:?}: {result:?}",
                started.elapsed()
            );
            match result {
                Ok(_) => succeeded += 1,
                Err(status) => assert!(
                    matches!(
                        status.code(),
                        Code::DeadlineExceeded
                            | Code::Unavailable
                            | Code::ResourceExhausted
                            | Code::OutOfRange
                            | Code::Internal
                    ),
                    "{hostile:?}: {status:?}"
                ),
            }
        }
        assert!(
            succeeded >= 6,
            "{hostile:?}: the healthy instance took the calls ({succeeded} of 12)"
        );
    }
}

/// An instance that still answers a ping with GOAWAY `ENHANCE_YOUR_CALM` "too_many_pings"
/// (a server stricter than stock) is pinged half as often on the next connection, as grpc-go's
/// client backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pings_doubles_the_interval_for_the_next_connection() {
    init_logging();
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen, mut first_pings) = mpsc::unbounded_channel();
    let counted = Arc::clone(&connections);
    let scripted = ScriptedServer::start(move |mut peer: Peer| {
        let connection = counted.fetch_add(1, Ordering::Relaxed);
        let seen = seen.clone();
        async move {
            let Some(request) = peer.next_request().await else {
                return;
            };
            let asked = Instant::now();
            while let Some(frame) = peer.read_frame().await {
                if frame.kind == kind::PING && frame.flags & ACK == 0 {
                    let _ = seen.send(asked.elapsed());
                    if connection == 0 {
                        let _ = peer
                            .go_away(request.stream, code::ENHANCE_YOUR_CALM, b"too_many_pings")
                            .await;
                        return;
                    }
                    let _ = peer.write(kind::PING, ACK, 0, &frame.payload).await;
                    let _ = peer.answer(request.stream, &hello_reply("calm")).await;
                }
            }
        }
    })
    .await;
    let store = MemoryStore::new();
    register(&store, "strict", &scripted).await;
    let channel = channel(&store, "strict", ClientOptions::default()).await;
    let first = say_hello(&channel, Some(Duration::from_secs(10))).await;
    assert_eq!(
        first.unwrap_err().code(),
        Code::Unavailable,
        "the strict instance closed the connection"
    );
    let first_ping = first_pings.recv().await.unwrap();
    assert_eq!(
        say_hello(&channel, Some(Duration::from_secs(10))).await.unwrap(),
        "calm"
    );
    let second_ping = first_pings.recv().await.unwrap();
    assert!(
        first_ping < Duration::from_millis(1_900),
        "the usual 1 s: {first_ping:?}"
    );
    assert!(second_ping >= Duration::from_millis(1_900), "doubled: {second_ping:?}");
    assert_eq!(connections.load(Ordering::Relaxed), 2);
}
