//! Per-attempt layers on a client, through real calls: a layer's header reaches the server,
//! a layer sees each attempt on its instance (and the attempt's number across a retry), a
//! status a layer answers with reaches the caller as it is, a connection failure reaches a
//! layer as a `ConnectionError` that still moves the call when the layer wraps it; and the
//! channel's `poll_ready` is as documented.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use jovian::client::{Attempt, ClientOptions, ConnectionError, InstanceService};
use jovian::{ClientBuilder, Registrar, ServiceChannel, ServiceInfo};
use jovian_examples::proto::greeter_server::Greeter;
use jovian_examples::{GreeterClient, HelloReply, HelloRequest, greeter_server, replying_address};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::{serve, server};
use jovian_tests::{init_logging, within};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};
use tower::{Layer, Service, ServiceExt};

async fn hello(channel: &ServiceChannel) -> Result<String, Status> {
    let reply = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "t".into() })
        .await?;
    Ok(reply.into_inner().message)
}

/// Answers with the caller's `x-tenant`, and refuses calls without one.
#[derive(Clone, Copy)]
struct TenantCheck;

#[tonic::async_trait]
impl Greeter for TenantCheck {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        match request.metadata().get("x-tenant").and_then(|v| v.to_str().ok()) {
            Some(tenant) => Ok(Response::new(HelloReply {
                message: format!("tenant {tenant}"),
            })),
            None => Err(Status::permission_denied("no x-tenant")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layers_header_reaches_the_server() {
    init_logging();
    let store = MemoryStore::new();
    let _server = serve(&store, server("tenant", TenantCheck)).await;
    let plain = ClientBuilder::new(store.registry()).build("tenant").await.unwrap();
    let refused = hello(&plain).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let tagging = tower::util::MapRequestLayer::new(|mut request: http::Request<Body>| {
        request
            .headers_mut()
            .insert("x-tenant", http::HeaderValue::from_static("blue"));
        request
    });
    let tagged = ClientBuilder::new(store.registry())
        .layer(tagging)
        .build("tenant")
        .await
        .unwrap();
    assert_eq!(hello(&tagged).await.unwrap(), "tenant blue");
}

/// What a recording layer saw: for each attempt, the instance its service was made for, the
/// instance and number its request's `Attempt` named.
type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;

/// Records every attempt, and fails the first attempt of every call with a plain error (one
/// that may have reached the instance, as far as the channel can tell).
#[derive(Clone)]
struct Record {
    seen: Seen,
}

impl Layer<InstanceService> for Record {
    type Service = Recording;

    fn layer(&self, inner: InstanceService) -> Recording {
        Recording {
            made_for: inner.instance().address.clone(),
            inner,
            seen: Arc::clone(&self.seen),
        }
    }
}

#[derive(Clone)]
struct Recording {
    made_for: String,
    inner: InstanceService,
    seen: Seen,
}

impl Service<http::Request<Body>> for Recording {
    type Response = http::Response<Body>;
    type Error = jovian::BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<http::Response<Body>, jovian::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let attempt = request.extensions().get::<Attempt>().cloned().expect("an Attempt");
        self.seen.lock().unwrap().push((
            self.made_for.clone(),
            attempt.instance().address.clone(),
            attempt.number(),
        ));
        if attempt.number() == 1 {
            return Box::pin(async { Err("the first attempt fails here".into()) });
        }
        let call = self.inner.call(request);
        Box::pin(call)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_sees_each_attempt_on_its_instance_across_a_retry() {
    init_logging();
    let store = MemoryStore::new();
    let first = serve(&store, greeter_server("retried")).await;
    let second = serve(&store, greeter_server("retried")).await;
    let mut options = ClientOptions::default();
    options
        .retry
        .idempotent_methods
        .insert("/helloworld.Greeter/SayHello".into());
    let seen = Seen::default();
    let channel = ClientBuilder::new(store.registry())
        .options(options)
        .layer(Record {
            seen: Arc::clone(&seen),
        })
        .build("retried")
        .await
        .unwrap();

    let reply = hello(&channel).await.expect("the retry succeeds");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "two attempts: {seen:?}");
    for (made_for, attempted, _) in &seen {
        assert_eq!(
            made_for, attempted,
            "each attempt goes through its own instance's layer"
        );
    }
    assert_eq!(seen.iter().map(|s| s.2).collect::<Vec<_>>(), [1, 2]);
    assert_ne!(seen[0].1, seen[1].1, "the retry went to the other instance");
    assert_eq!(replying_address(&reply), seen[1].1, "the second attempt answered");
    let addresses = [first.local_addrs()[0].to_string(), second.local_addrs()[0].to_string()];
    assert!(seen.iter().all(|s| addresses.contains(&s.1)));
    // The layer's failure counted against the instance, as a transport failure would.
    let ejected: Vec<String> = channel.ejected().into_iter().map(|i| i.address).collect();
    assert_eq!(ejected, [seen[0].1.clone()]);
}

/// A layer's own error around what the instance's service returned.
#[derive(Debug)]
struct Wrapped(jovian::BoxError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "through the layer: {}", self.0)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_reaches_a_layer_as_a_connection_error_and_the_call_moves_on() {
    init_logging();
    let store = MemoryStore::new();
    let live = serve(&store, greeter_server("refused")).await;
    // An address nothing listens on: connecting is refused, so no call can have reached it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    store
        .registry()
        .register(&ServiceInfo::new("refused", dead.clone()))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    // Not idempotent (the default): the call may move only if the error says it never left.
    let channel = ClientBuilder::new(store.registry())
        .layer(tower::util::MapErrLayer::new(move |error: jovian::BoxError| {
            let connection = error.downcast_ref::<ConnectionError>().expect("a ConnectionError");
            recorder
                .lock()
                .unwrap()
                .push((connection.never_sent(), connection.to_string()));
            jovian::BoxError::from(Wrapped(error))
        }))
        .build("refused")
        .await
        .unwrap();
    assert_eq!(channel.instance_count(), 2);
    let expected = live.local_addrs()[0].to_string();
    for _ in 0..4 {
        let reply = within(Duration::from_secs(10), "a call", hello(&channel)).await;
        assert_eq!(
            replying_address(&reply.expect("the call moved to the live instance")),
            expected
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the dead instance was tried");
    assert!(seen.iter().all(|(never_sent, _)| *never_sent), "{seen:?}");
    let ejected: Vec<String> = channel.ejected().into_iter().map(|i| i.address).collect();
    assert_eq!(ejected, [dead]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_from_a_layer_reaches_the_caller_as_is() {
    init_logging();
    let store = MemoryStore::new();
    let _first = serve(&store, greeter_server("gated")).await;
    let _second = serve(&store, greeter_server("gated")).await;
    let attempts = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&attempts);
    let gate = tower::layer::layer_fn(move |inner: InstanceService| {
        let counted = Arc::clone(&counted);
        tower::service_fn(move |request: http::Request<Body>| {
            *counted.lock().unwrap() += 1;
            let inner = inner.clone();
            async move {
                match request.headers().contains_key("x-let-in") {
                    true => inner.oneshot(request).await,
                    false => Err(Status::unauthenticated("no x-let-in").into()),
                }
            }
        })
    });
    let mut options = ClientOptions::default();
    options.retry.idempotent_methods.insert("*".into());
    let channel = ClientBuilder::new(store.registry())
        .options(options)
        .layer(gate)
        .build("gated")
        .await
        .unwrap();
    let status = hello(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "no x-let-in");
    assert_eq!(*attempts.lock().unwrap(), 1, "not retried");
    assert!(channel.ejected().is_empty(), "no instance blamed");
}

/// `poll_ready` is always ready (documented on `ServiceChannel`): with no instance at all, it
/// does not wait, and the call fails at once instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_ready_does_not_wait_and_a_call_with_nowhere_to_go_fails_at_once() {
    init_logging();
    let store = MemoryStore::new();
    let mut channel = ClientBuilder::new(store.registry()).build("nowhere").await.unwrap();
    let waker = futures_util::task::noop_waker();
    let ready = channel.poll_ready(&mut Context::from_waker(&waker));
    assert!(matches!(ready, Poll::Ready(Ok(()))), "{ready:?}");
    let status = within(Duration::from_secs(5), "the call to fail", hello(&channel))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
