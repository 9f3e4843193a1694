//! Watching server calls: the outermost layer counts, times and traces every call (opening
//! the `grpc.server` span and its trace context), and a response body wrapper learns the
//! gRPC status (from the headers of a trailers-only response, or from the trailers) and
//! reports it once, when the call ends or is abandoned.
//!
//! This is on every call's path, so it costs what it must and no more (measured in
//! BENCHMARKS.md, scenario 7, "Server path"): a method's metric series are resolved once, when
//! the first call reaches it, not looked up by label on each call; the futures and the body
//! wrapper are named types, so a call allocates for one boxed future and the body tonic boxes
//! anyway; and a path is copied only while no call has reached it yet.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::Frame;
use tonic::Code;
use tonic::body::Body;
use tracing::Instrument;

use crate::metrics::{GrpcType, MethodSeries, grpc_code_name};
use crate::trace::{TRACEPARENT, TraceContext, propagator};

/// What a call's end reports to: the method's series, when the call started, and its span.
struct Ending {
    series: Arc<MethodSeries>,
    started: Instant,
    span: tracing::Span,
}

impl Ending {
    fn report(self, code: Code) {
        let name = grpc_code_name(code);
        self.series.handled(code).inc();
        self.series.handling.observe(self.started.elapsed().as_secs_f64());
        self.span.record("code", name);
    }
}

/// A response body that reports the call's gRPC status when it ends.
struct ObservedBody {
    inner: Body,
    code: Option<Code>,
    ending: Option<Ending>,
}

impl ObservedBody {
    /// Wraps `response`'s body; a trailers-only response reports its status at once.
    fn observe(response: http::Response<Body>, ending: Ending) -> http::Response<Body> {
        let code = crate::http2::grpc::status(response.headers());
        response.map(|inner| {
            let mut body = ObservedBody {
                inner,
                code,
                ending: Some(ending),
            };
            if code.is_some() && http_body::Body::is_end_stream(&body.inner) {
                body.end(code);
            }
            Body::new(body)
        })
    }

    fn end(&mut self, code: Option<Code>) {
        if let Some(ending) = self.ending.take() {
            ending.report(code.unwrap_or(Code::Unknown));
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = crate::http2::grpc::status(trailers).or(self.code);
                    self.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.end(Some(code));
            }
            Poll::Ready(None) => {
                let code = self.code;
                self.end(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Abandoned before its end: the caller went away.
        self.end(Some(Code::Cancelled));
    }
}

/// The label values of calls that reached no method the server offers.
pub(crate) const UNKNOWN: &str = "unknown";

/// Most methods one server labels; past this every new path is `unknown`. No real server has
/// this many, so it only matters when something labels paths it should not (an interceptor
/// inside a generated service that answers any path of its service), and then it keeps the
/// series bounded.
const MAX_LABELLED_METHODS: usize = 512;

/// The methods of one server that calls have reached, learned as they are reached, each with
/// its metric series.
///
/// A server's paths are the caller's to choose, and a label per path would let any client
/// grow the server's memory and its `/metrics` without limit. tonic's generated services do
/// not list their methods, so a path is learned when a call to a service the server offers
/// came back from the service itself (below every layer the application added) with any code
/// but `Unimplemented`. A call that a layer turned away never teaches a path.
pub(crate) struct Methods {
    offered: Vec<&'static str>,
    types: HashMap<String, GrpcType>,
    reached: RwLock<HashMap<String, Arc<MethodSeries>>>,
    /// Made when first needed, so a server every call of which reached a method exports no
    /// `unknown` series.
    unknown: OnceLock<Arc<MethodSeries>>,
}

impl Methods {
    /// The methods of a server offering the gRPC services named `offered`, whose streaming
    /// methods are `types` (by path; anything else is unary).
    pub(crate) fn new(offered: Vec<&'static str>, types: HashMap<String, GrpcType>) -> Self {
        Self {
            offered,
            types,
            reached: RwLock::new(HashMap::new()),
            unknown: OnceLock::new(),
        }
    }

    /// The series of `path` if a call has reached it before.
    fn get(&self, path: &str) -> Option<Arc<MethodSeries>> {
        self.reached.read().expect("methods lock").get(path).cloned()
    }

    /// The series of `path`, or the `unknown` ones when no call has reached it.
    fn series(&self, path: &str) -> Arc<MethodSeries> {
        self.get(path).unwrap_or_else(|| {
            Arc::clone(
                self.unknown
                    .get_or_init(|| Arc::new(MethodSeries::server(UNKNOWN, UNKNOWN, UNKNOWN))),
            )
        })
    }

    /// Notes that a call reached `path` of an offered service and was answered `code`.
    fn reached(&self, path: &str, code: Option<Code>) {
        if code == Some(Code::Unimplemented) {
            return;
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/')) else {
            return;
        };
        if !self.offered.contains(&service) || method.is_empty() || method.contains('/') {
            return;
        }
        if self.reached.read().expect("methods lock").contains_key(path) {
            return;
        }
        let mut reached = self.reached.write().expect("methods lock");
        if reached.len() < MAX_LABELLED_METHODS {
            let grpc_type = self.types.get(path).copied().unwrap_or_default();
            reached
                .entry(path.to_owned())
                .or_insert_with(|| Arc::new(MethodSeries::server(grpc_type.as_str(), service, method)));
        }
    }
}

/// Learns which paths calls reach: wraps the application's services, inside every layer the
/// application added.
#[derive(Clone)]
pub(crate) struct LearnMethods<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S> LearnMethods<S> {
    pub(crate) fn new(inner: S, methods: Arc<Methods>) -> Self {
        Self { inner, methods }
    }
}

impl<S> tower::Service<http::Request<Body>> for LearnMethods<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Learning<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Once a path is learned there is nothing more to learn from its calls.
        let path = request.uri().path();
        let learn = match self.methods.get(path) {
            Some(_) => None,
            None => Some((path.to_owned(), Arc::clone(&self.methods))),
        };
        Learning {
            call: self.inner.call(request),
            learn,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call through [`LearnMethods`]: notes the path it reached once it is answered.
    pub(crate) struct Learning<F> {
        #[pin]
        call: F,
        learn: Option<(String, Arc<Methods>)>,
    }
}

impl<F> Future for Learning<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let response = ready!(this.call.poll(cx))?;
        if let Some((path, methods)) = this.learn.take() {
            methods.reached(&path, crate::http2::grpc::status(response.headers()));
        }
        Poll::Ready(Ok(response))
    }
}

/// Counts, times and traces every call a server serves: the outermost layer, so what it
/// counts is what callers saw, calls that the application's layers turned away included.
#[derive(Clone)]
pub(crate) struct ServerObserve<S> {
    inner: S,
    service: Arc<str>,
    methods: Arc<Methods>,
}

impl<S> ServerObserve<S> {
    /// Observes calls to the server registered as `service`.
    pub(crate) fn new(inner: S, service: &str, methods: Arc<Methods>) -> Self {
        Self {
            inner,
            service: service.into(),
            methods,
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for ServerObserve<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let (span, context) = match propagator() {
            Some(propagator) => {
                let span = tracing::debug_span!(
                    "grpc.server",
                    service = %self.service,
                    method = %path,
                    code = tracing::field::Empty,
                );
                propagator.extract(request.headers(), &span);
                (span, None)
            }
            None => builtin_server_span(&self.service, path, request.headers()),
        };
        let started = Instant::now();
        // A path calls reached before is counted as started now. One not seen yet is counted
        // once the service answers, when it is known whether the call reached a method: its
        // labels must not depend on anything but the methods the server has.
        let series = match self.methods.get(path) {
            Some(series) => {
                series.started.inc();
                Ok(series)
            }
            None => Err((path.to_owned(), Arc::clone(&self.methods))),
        };
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let response = match context {
                    Some(context) => context.scope(call).await?,
                    None => call.await?,
                };
                let series = series.unwrap_or_else(|(path, methods)| {
                    let series = methods.series(&path);
                    series.started.inc();
                    series
                });
                let ending = Ending {
                    series,
                    started,
                    span: tracing::Span::current(),
                };
                Ok(ObservedBody::observe(response, ending))
            }
            .instrument(span),
        )
    }
}

/// The `grpc.server` span of a call under jovian's own ids, and the context its handler runs
/// in: the caller's trace continued, or a new one.
fn builtin_server_span(service: &str, path: &str, headers: &http::HeaderMap) -> (tracing::Span, Option<TraceContext>) {
    let parent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let context = parent.map_or_else(TraceContext::root, |p| p.child());
    let span = tracing::debug_span!(
        "grpc.server",
        service = %service,
        method = %path,
        trace_id = %context.trace_hex(),
        span_id = %context.span_hex(),
        parent_span_id = %parent.map(|p| p.span_hex()).unwrap_or_default(),
        code = tracing::field::Empty,
    );
    (span, Some(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_methods_that_calls_reached_are_labelled() {
        let types = HashMap::from([("/helloworld.Greeter/Chat".to_owned(), GrpcType::BidiStream)]);
        let methods = Methods::new(vec!["helloworld.Greeter"], types);
        let path = "/helloworld.Greeter/SayHello";
        assert_eq!(methods.series(path).labels(), [UNKNOWN; 3], "not reached yet");
        methods.reached(path, None);
        assert_eq!(
            methods.series(path).labels(),
            ["unary", "helloworld.Greeter", "SayHello"]
        );
        methods.reached("/helloworld.Greeter/Chat", Some(Code::Internal));
        assert_eq!(
            methods.series("/helloworld.Greeter/Chat").labels(),
            ["bidi_stream", "helloworld.Greeter", "Chat"]
        );
        for (path, code) in [
            ("/helloworld.Greeter/Nope", Some(Code::Unimplemented)),
            ("/other.Service/SayHello", None),
            ("/helloworld.Greeter/", None),
            ("/helloworld.Greeter/a/b", None),
            ("/x", Some(Code::Unimplemented)),
            ("", Some(Code::Unimplemented)),
        ] {
            methods.reached(path, code);
            assert_eq!(methods.series(path).labels(), [UNKNOWN; 3], "{path}");
        }
    }

    #[test]
    fn a_server_labels_a_bounded_number_of_methods() {
        let methods = Methods::new(vec!["svc.S"], HashMap::new());
        for i in 0..MAX_LABELLED_METHODS + 10 {
            methods.reached(&format!("/svc.S/M{i}"), None);
        }
        assert_eq!(methods.reached.read().unwrap().len(), MAX_LABELLED_METHODS);
        assert_eq!(
            methods
                .series(&format!("/svc.S/M{}", MAX_LABELLED_METHODS + 1))
                .labels(),
            [UNKNOWN; 3]
        );
    }
}
