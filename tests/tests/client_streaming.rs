//! Streaming through a `ServiceChannel`: a request that is not complete when the call is made
//! is sent as it comes while the replies stream back, and the call is counted as bidi
//! streaming, or as the type it is declared to be.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use jovian::metrics::GrpcType;
use jovian::{App, ClientBuilder, GrpcServer};
use jovian_examples::{HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::{init_logging, within};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

/// `/test.Echo/Chat`: replies to each request with its name, as it arrives.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default();
            Ok(tonic::server::Grpc::new(codec).streaming(Chat, request).await)
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

fn handled(grpc_type: &str) -> f64 {
    jovian::metrics::render()
        .lines()
        .filter(|l| l.starts_with("grpc_client_handled_total"))
        .filter(|l| l.contains("grpc_service=\"test.Echo\"") && l.contains("grpc_code=\"OK\""))
        .filter(|l| l.contains(&format!("grpc_type=\"{grpc_type}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_request_is_sent_as_it_comes_while_replies_stream_back() {
    init_logging();
    let store = MemoryStore::new();
    let _server = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(GrpcServer::new("echo").add_service(Echo))
        .start()
        .await
        .unwrap();
    for declared in [None, Some(GrpcType::BidiStream)] {
        let mut builder = ClientBuilder::new(store.registry());
        if let Some(grpc_type) = declared {
            builder = builder.method_type("/test.Echo/Chat", grpc_type);
        }
        let channel = builder.build("echo").await.unwrap();
        let before = handled("bidi_stream");
        let (requests, outgoing) = tokio::sync::mpsc::channel::<HelloRequest>(4);
        let outgoing = futures_util::stream::unfold(outgoing, |mut rx| async { rx.recv().await.map(|r| (r, rx)) });
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
        let path = "/test.Echo/Chat".parse().unwrap();
        requests.send(HelloRequest { name: "a".into() }).await.unwrap();
        let call = grpc.streaming(Request::new(outgoing), path, codec);
        let mut replies = within(Duration::from_secs(5), "the call to start", call)
            .await
            .unwrap()
            .into_inner();
        // The first reply comes while the request is still open: it streams both ways.
        let first = within(Duration::from_secs(5), "the first reply", replies.message()).await;
        assert_eq!(first.unwrap().unwrap().message, "a");
        for name in ["b", "c"] {
            requests.send(HelloRequest { name: name.into() }).await.unwrap();
        }
        drop(requests);
        let mut rest = Vec::new();
        while let Some(reply) = within(Duration::from_secs(5), "a reply", replies.message())
            .await
            .unwrap()
        {
            rest.push(reply.message);
        }
        assert_eq!(rest, ["b", "c"]);
        assert_eq!(handled("bidi_stream"), before + 1.0, "counted once, as bidi streaming");
    }
}
