//! Server middleware and transport settings through real calls: tower layers given to
//! `GrpcServer::layer`, and tonic's settings from `[servers.NAME]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use jovian::{App, ClientBuilder, Config, GrpcServer, Running, ServiceChannel};
use jovian_examples::proto::greeter_server::Greeter;
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{Sleepy, server};
use jovian_tests::init_logging;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Counts the calls in its handler at once. A call named `"n"` waits (up to a bound) for `n`
/// calls to be in the handler together before it answers, so the most seen at once is `n`
/// unless something upstream let fewer in.
#[derive(Clone, Default)]
struct Crowd {
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Greeter for Crowd {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let wanted: usize = request.into_inner().name.parse().unwrap_or(1);
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Bounded, so a limit that lets one call in at a time still ends every call.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            while self.inside.load(Ordering::SeqCst) < wanted {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(Response::new(HelloReply { message: "done".into() }))
    }
}

impl Crowd {
    /// Makes `n` calls at once through `channel` and returns the most that were in the
    /// handler together.
    async fn most_at_once(&self, channel: ServiceChannel, n: usize) -> usize {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let mut client = GreeterClient::new(channel.clone());
                tokio::spawn(async move { client.say_hello(HelloRequest { name: n.to_string() }).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().expect("every call ends well");
        }
        self.most.load(Ordering::SeqCst)
    }
}

async fn start(store: &MemoryStore, app: App, server: GrpcServer) -> (Running, ServiceChannel) {
    let name = server.name().to_owned();
    let running = app
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await
        .unwrap();
    let channel = ClientBuilder::new(store.registry()).build(&name).await.unwrap();
    (running, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_layer_lets_one_call_in_at_a_time() {
    init_logging();
    let store = MemoryStore::new();
    let unlimited = Crowd::default();
    let (running, channel) = start(&store, App::new(), server("crowd-free", unlimited.clone())).await;
    assert_eq!(
        unlimited.most_at_once(channel, 4).await,
        4,
        "without the layer the four calls meet"
    );
    running.stop().await.unwrap();

    let limited = Crowd::default();
    let layered = server("crowd-limited", limited.clone()).layer(tower::limit::ConcurrencyLimitLayer::new(1));
    let (running, channel) = start(&store, App::new(), layered).await;
    assert_eq!(limited.most_at_once(channel, 4).await, 1);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_per_connection_comes_from_the_servers_config_section() {
    init_logging();
    let store = MemoryStore::new();
    let crowd = Crowd::default();
    let config = Config::from_toml("[servers.crowd-config]\nconcurrency_limit_per_connection = 1").unwrap();
    let (running, channel) = start(&store, App::from_config(config), server("crowd-config", crowd.clone())).await;
    assert_eq!(
        crowd.most_at_once(channel, 4).await,
        1,
        "one connection, one call at a time"
    );
    running.stop().await.unwrap();
}

/// Turns away calls without an `x-token` header with an error, as an authentication layer
/// would.
#[derive(Clone)]
struct RequireToken<S>(S);

impl<S> tower::Service<http::Request<tonic::body::Body>> for RequireToken<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Error: Into<jovian::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = jovian::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, jovian::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if !request.headers().contains_key("x-token") {
            return Box::pin(async { Err(Status::unauthenticated("no token").into()) });
        }
        let call = self.0.call(request);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

fn handled(code: &str, method: &str) -> u64 {
    let labels = if method == "unknown" {
        ["unknown", "unknown", "unknown", code]
    } else {
        ["unary", "helloworld.Greeter", method, code]
    };
    jovian::metrics::metrics()
        .server_handled
        .with_label_values(&labels)
        .get()
}

fn with_token(name: &str) -> Request<HelloRequest> {
    let mut request = Request::new(HelloRequest { name: name.into() });
    request.metadata_mut().insert("x-token", "t".parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_rejects_calls_is_seen_by_callers_and_metrics_but_not_by_health_checks() {
    init_logging();
    let store = MemoryStore::new();
    let guarded = server("guarded", Sleepy).layer(tower::layer::layer_fn(RequireToken));
    let (running, channel) = start(&store, App::new(), guarded).await;
    let mut client = GreeterClient::new(channel);

    let (unknown_before, known_before) = (
        handled("Unauthenticated", "unknown"),
        handled("Unauthenticated", "SayHello"),
    );
    let error = client.say_hello(HelloRequest { name: "x".into() }).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    assert_eq!(
        handled("Unauthenticated", "unknown"),
        unknown_before + 1,
        "a path no call reached yet is not labelled, whatever the layers answer"
    );
    client
        .say_hello(with_token("x"))
        .await
        .expect("a call with the token passes");
    let error = client.say_hello(HelloRequest { name: "x".into() }).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    assert_eq!(handled("Unauthenticated", "SayHello"), known_before + 1);

    let addr = running.local_addrs()[0];
    let health = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(health)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health checks need no token")
        .into_inner()
        .status;
    assert_eq!(ServingStatus::try_from(status).unwrap(), ServingStatus::Serving);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_layer_ends_slow_calls_with_deadline_exceeded() {
    init_logging();
    let store = MemoryStore::new();
    let limited = server("limited", Sleepy)
        .layer(tower::layer::layer_fn(RequireToken))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(100)));
    let (running, channel) = start(&store, App::new(), limited).await;
    let mut client = GreeterClient::new(channel);
    client.say_hello(with_token("fast")).await.expect("a fast call passes");
    let before = handled("DeadlineExceeded", "SayHello");
    let error = client.say_hello(with_token("10000")).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("time limit"), "{error:?}");
    assert_eq!(handled("DeadlineExceeded", "SayHello"), before + 1);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_messages_over_the_configured_size_are_refused() {
    init_logging();
    let store = MemoryStore::new();
    let config = Config::from_toml("[servers.small]\nmax_request_message_bytes = 64").unwrap();
    let (running, channel) = start(&store, App::from_config(config), server("small", Sleepy)).await;
    let mut client = GreeterClient::new(channel);
    client
        .say_hello(HelloRequest { name: "short".into() })
        .await
        .expect("a small message passes");
    let error = client
        .say_hello(HelloRequest { name: "x".repeat(100) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(error.message().contains("the 64 this server accepts"), "{error:?}");
    running.stop().await.unwrap();
}
