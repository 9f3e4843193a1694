//! Which `traceparent` a call sends: the caller's as it is; else, made while serving, one that
//! continues the served trace; else a new one only when a subscriber records the call's span
//! (nobody could see an unrecorded trace, and the header costs every server). That last case
//! needs a process-wide subscriber: `tracing.rs` has it.

use jovian::{ClientBuilder, GrpcServer};
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::serve;
use tonic::{Request, Response, Status};

/// Answers with the `traceparent` it received.
struct Echo;

#[tonic::async_trait]
impl Greeter for Echo {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let received = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(HelloReply { message: received }))
    }
}

/// Echo behind `frontend`, which asks it before answering: a call made while serving.
struct Frontend {
    echo: jovian::ServiceChannel,
}

#[tonic::async_trait]
impl Greeter for Frontend {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        GreeterClient::new(self.echo.clone())
            .say_hello(request.into_inner())
            .await
    }
}

/// An in-memory registry serving `echo`, and `frontend` calling it.
async fn servers() -> (MemoryStore, Vec<jovian::Running>) {
    let store = MemoryStore::new();
    let echo = serve(&store, GrpcServer::new("echo").add_service(GreeterServer::new(Echo))).await;
    let frontend = Frontend {
        echo: ClientBuilder::new(store.registry()).build("echo").await.unwrap(),
    };
    let frontend = serve(
        &store,
        GrpcServer::new("frontend").add_service(GreeterServer::new(frontend)),
    )
    .await;
    (store, vec![echo, frontend])
}

/// The `traceparent` the echo server received from a call through `service`.
async fn received(store: &MemoryStore, service: &str, request: Request<HelloRequest>) -> String {
    let channel = ClientBuilder::new(store.registry()).build(service).await.unwrap();
    GreeterClient::new(channel)
        .say_hello(request)
        .await
        .unwrap()
        .into_inner()
        .message
}

/// Failed on the old code: the client replaced every `traceparent` with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_traceparent_is_kept() {
    let (store, _servers) = servers().await;
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = Request::new(HelloRequest::default());
    request.metadata_mut().insert("traceparent", theirs.parse().unwrap());
    assert_eq!(received(&store, "echo", request).await, theirs);
}

/// No subscriber here: a call from outside any served call sends no `traceparent`, and one
/// made while serving continues the trace its server started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_call_starts_no_trace_and_a_served_one_continues_its_own() {
    let (store, _servers) = servers().await;
    assert_eq!(
        received(&store, "echo", Request::new(HelloRequest::default())).await,
        ""
    );
    let downstream = received(&store, "frontend", Request::new(HelloRequest::default())).await;
    assert!(
        jovian::trace::TraceContext::parse(&downstream).is_some(),
        "a call made while serving carries the served trace: {downstream:?}"
    );
}
