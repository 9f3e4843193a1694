//! Trace context travels with calls: a recorded client span starts a trace that the server span
//! of the same call shares, and a call made while serving continues the trace it serves.
//!
//! This binary installs its own global subscriber to see every span, so it holds one test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jovian::{App, ClientBuilder, GrpcServer};
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{GreeterClient, HelloReply, HelloRequest, greeter_server};
use jovian_registry_memory::MemoryStore;
use tonic::{Request, Response, Status};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A span's name and its fields as strings.
type SpanRecord = (String, HashMap<String, String>);

/// Every span named `grpc.*`, with its string fields, those recorded later included.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Id, SpanRecord)>>>);

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name().starts_with("grpc.") {
            let mut fields = Fields(HashMap::new());
            attrs.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((id.clone(), (attrs.metadata().name().to_owned(), fields.0)));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some((_, (_, fields))) = self.0.lock().unwrap().iter_mut().find(|(span, _)| span == id) {
            let mut more = Fields(std::mem::take(fields));
            values.record(&mut more);
            *fields = more.0;
        }
    }
}

/// A greeter that asks the downstream `backend` service before answering.
struct Frontend {
    backend: jovian::ServiceChannel,
}

#[tonic::async_trait]
impl Greeter for Frontend {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let downstream = GreeterClient::new(self.backend.clone())
            .say_hello(request.into_inner())
            .await?;
        Ok(downstream)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_of_a_call_share_a_trace_id() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone())).unwrap();

    let store = MemoryStore::new();
    let _backend = App::new()
        .registry(store.registry())
        .serve(greeter_server("backend"))
        .start()
        .await
        .unwrap();
    let backend = ClientBuilder::new(store.registry()).build("backend").await.unwrap();
    let frontend = GrpcServer::new("frontend").add_service(GreeterServer::new(Frontend { backend }));
    let _frontend = App::new()
        .registry(store.registry())
        .serve(frontend)
        .start()
        .await
        .unwrap();
    let channel = ClientBuilder::new(store.registry()).build("frontend").await.unwrap();
    GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "t".into() })
        .await
        .unwrap();

    let spans: Vec<SpanRecord> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, span)| span.clone())
        .collect();
    let find = |name: &str, service: &str| {
        spans
            .iter()
            .find(|(n, f)| n == name && f.get("service").map(String::as_str) == Some(service))
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no {name} span for {service} in {spans:?}"))
    };
    let (client, server) = (find("grpc.client", "frontend"), find("grpc.server", "frontend"));
    assert_eq!(client["trace_id"].len(), 32);
    assert_eq!(
        client["trace_id"], server["trace_id"],
        "the server continued the client's trace"
    );
    assert_eq!(
        server["parent_span_id"], client["span_id"],
        "the server span's parent is the client span"
    );
    let (downstream_client, downstream_server) = (find("grpc.client", "backend"), find("grpc.server", "backend"));
    assert_eq!(
        downstream_client["trace_id"], client["trace_id"],
        "a call made while serving continues the trace"
    );
    assert_eq!(downstream_server["trace_id"], client["trace_id"]);
}
