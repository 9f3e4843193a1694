//! Stops with streams open: a handler that waits for [`ShutdownHandle::drained`] ends its
//! stream after the instance left the registry and before the graceful stop, so the stop is a
//! routine one (`Ok`, well within the shutdown deadline) and the client learns with a status
//! it can retry elsewhere; a stream that ignores it is cut off at the deadline, and the stop
//! says so.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use jovian::metrics::GrpcType;
use jovian::{App, ClientBuilder, Error, GrpcServer, ShutdownHandle};
use jovian_examples::{HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use jovian_tests::{init_logging, within};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status, Streaming};

const PATH: &str = "/test.Ticker/Tick";

/// `/test.Ticker/Tick`: a reply every 50 ms, until the App has drained (if `stop` is given),
/// then UNAVAILABLE.
#[derive(Clone)]
struct Ticker {
    stop: Option<ShutdownHandle>,
}

impl NamedService for Ticker {
    const NAME: &'static str = "test.Ticker";
}

impl tower::Service<http::Request<Body>> for Ticker {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ticks = Ticks(self.stop.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default();
            Ok(tonic::server::Grpc::new(codec).streaming(ticks, request).await)
        })
    }
}

struct Ticks(Option<ShutdownHandle>);

impl tonic::server::StreamingService<HelloRequest> for Ticks {
    type Response = HelloReply;
    type ResponseStream = BoxStream<'static, Result<HelloReply, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, _: Request<Streaming<HelloRequest>>) -> Self::Future {
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_millis(50)))
            .map(|_| Ok(HelloReply { message: "tick".into() }));
        let stream = match self.0.clone() {
            Some(stop) => {
                let end = futures_util::stream::once(async move {
                    stop.drained().await;
                    Err(Status::unavailable("the server is stopping; call another instance"))
                });
                futures_util::stream::select(ticks, end)
                    .scan(false, |ended, item| {
                        let done = *ended;
                        *ended |= item.is_err();
                        futures_util::future::ready((!done).then_some(item))
                    })
                    .boxed()
            }
            None => ticks.boxed(),
        };
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

async fn stop_with_a_stream_open(handler_waits_for_drained: bool) -> (Result<(), Error>, Duration, Status) {
    let store = MemoryStore::new();
    let app = App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::from_millis(200))
        .shutdown_deadline(Duration::from_secs(2));
    let stop = handler_waits_for_drained.then(|| app.shutdown_handle());
    let running = app
        .serve(GrpcServer::new("ticker").add_service(Ticker { stop }))
        .start()
        .await
        .unwrap();
    let channel = ClientBuilder::new(store.registry())
        .method_type(PATH, GrpcType::ServerStream)
        .build("ticker")
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    let mut stream = grpc
        .server_streaming(Request::new(HelloRequest::default()), PATH.parse().unwrap(), codec)
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first tick");
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Status::ok("ended"),
                Err(status) => return status,
            }
        }
    });
    let stopped = within(Duration::from_secs(10), "the stop", running.stop()).await;
    let took = started.elapsed();
    let ended = within(Duration::from_secs(5), "the stream's end", reader)
        .await
        .unwrap();
    (stopped, took, ended)
}

/// Failed before `ShutdownHandle::drained` existed: a handler could not learn that the server
/// was stopping, every open stream ran to the shutdown deadline, and `run()` returned
/// `Err(ShutdownDeadline)`, so a routine stop exited 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_when_drained_makes_a_routine_stop() {
    init_logging();
    let (stopped, took, ended) = stop_with_a_stream_open(true).await;
    stopped.expect("a routine stop");
    assert!(took < Duration::from_millis(1500), "no wait for the deadline: {took:?}");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("stopping"), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ignores_the_stop_is_cut_off_at_the_deadline() {
    init_logging();
    let (stopped, took, ended) = stop_with_a_stream_open(false).await;
    assert!(matches!(stopped, Err(Error::ShutdownDeadline(_))), "{stopped:?}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_ne!(ended.code(), Code::Ok, "the client sees the stream cut: {ended:?}");
}
