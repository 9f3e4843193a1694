//! An application tracing with OpenTelemetry (`tracing-opentelemetry`) installs OpenTelemetry's
//! propagator with `jovian::trace::set_propagator`, and its traces run unbroken through jovian
//! clients and servers: caller → client → server → a client inside the handler → the next
//! server, every span in one trace, each the parent of the next.
//!
//! The propagator and the subscriber are the process's, so this binary holds this one test.

use std::sync::Arc;
use std::time::Duration;

use jovian::{App, ClientBuilder, GrpcServer, ServiceChannel};
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{GreeterClient, HelloReply, HelloRequest};
use jovian_registry_memory::MemoryStore;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The adapter an application writes: OpenTelemetry's W3C propagator over jovian's hooks.
struct Otel(TraceContextPropagator);

impl jovian::trace::Propagator for Otel {
    fn extract(&self, headers: &http::HeaderMap, span: &tracing::Span) {
        let _ = span.set_parent(self.0.extract(&Headers(headers)));
    }

    fn inject(&self, span: &tracing::Span, headers: &mut http::HeaderMap) {
        self.0.inject_context(&span.context(), &mut HeadersMut(headers));
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Answers by calling the next service, from inside its own call.
struct Front(ServiceChannel);

#[tonic::async_trait]
impl Greeter for Front {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        GreeterClient::new(self.0.clone()).say_hello(request.into_inner()).await
    }
}

struct Back;

#[tonic::async_trait]
impl Greeter for Back {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: "from the back".into(),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opentelemetry_trace_runs_through_two_hops() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("jovian=debug,trace_otel=info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace_otel")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    jovian::trace::set_propagator(Otel(TraceContextPropagator::new())).unwrap();
    assert!(
        jovian::trace::set_propagator(Otel(TraceContextPropagator::new())).is_err(),
        "the first propagator stays"
    );

    let store = MemoryStore::new();
    let app = |server: GrpcServer| {
        App::new()
            .registry(store.registry())
            .governor(None)
            .drain_delay(Duration::ZERO)
            .serve(server)
            .start()
    };
    let back = app(GrpcServer::new("otel-back").add_service(GreeterServer::new(Back)))
        .await
        .unwrap();
    let to_back = ClientBuilder::new(store.registry()).build("otel-back").await.unwrap();
    let front = app(GrpcServer::new("otel-front").add_service(GreeterServer::new(Front(to_back))))
        .await
        .unwrap();
    let mut client = GreeterClient::new(ClientBuilder::new(store.registry()).build("otel-front").await.unwrap());

    let reply = client
        .say_hello(HelloRequest::default())
        .instrument(tracing::info_span!("caller"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "from the back");
    front.stop().await.unwrap();
    back.stop().await.unwrap();

    let spans = Arc::new(
        jovian_tests::eventually(Duration::from_secs(5), "the five spans exported", || {
            let exporter = exporter.clone();
            async move {
                let spans = exporter.get_finished_spans().unwrap();
                (spans.len() >= 5).then_some(spans)
            }
        })
        .await,
    );
    let named = |name: &str, service: &str| -> &SpanData {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && (service.is_empty()
                        || s.attributes
                            .iter()
                            .any(|kv| kv.key.as_str() == "service" && kv.value.as_str() == service))
            })
            .unwrap_or_else(|| panic!("no {name} span of {service:?} in {spans:#?}"))
    };
    let caller = named("caller", "");
    let chain = [
        caller,
        named("grpc.client", "otel-front"),
        named("grpc.server", "otel-front"),
        named("grpc.client", "otel-back"),
        named("grpc.server", "otel-back"),
    ];
    let trace = caller.span_context.trace_id();
    assert_eq!(caller.parent_span_id, SpanId::INVALID, "the caller starts the trace");
    for pair in chain.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        assert_eq!(
            child.span_context.trace_id(),
            trace,
            "{} of {:?} is in the caller's trace",
            child.name,
            child.attributes
        );
        assert_eq!(
            child.parent_span_id,
            parent.span_context.span_id(),
            "{} ({:?}) is the child of {} ({:?})",
            child.name,
            child.attributes,
            parent.name,
            parent.attributes
        );
    }
}
