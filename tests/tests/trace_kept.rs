//! A `traceparent` the caller set is sent as it is: the client starts or continues a trace only
//! when the call carries none.

use std::time::Duration;

use jovian::{App, ClientBuilder, GrpcServer};
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
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

/// Failed on the old code: the client replaced every `traceparent` with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_traceparent_is_kept_and_a_missing_one_is_made() {
    let store = MemoryStore::new();
    let _server = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(GrpcServer::new("traced").add_service(GreeterServer::new(Echo)))
        .start()
        .await
        .unwrap();
    let channel = ClientBuilder::new(store.registry()).build("traced").await.unwrap();
    let mut client = GreeterClient::new(channel);

    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = Request::new(HelloRequest::default());
    request.metadata_mut().insert("traceparent", theirs.parse().unwrap());
    let received = client.say_hello(request).await.unwrap().into_inner().message;
    assert_eq!(received, theirs);

    let made = client
        .say_hello(HelloRequest::default())
        .await
        .unwrap()
        .into_inner()
        .message;
    assert!(
        jovian::trace::TraceContext::parse(&made).is_some(),
        "a call without one carries a new one: {made:?}"
    );
}
