//! Watching calls end: a response body wrapper that learns the gRPC status (from the headers
//! of a trailers-only response, or from the trailers) and reports it once, when the call ends
//! or is abandoned. Server metrics and client metrics both use it, and the server's layer
//! opens the `grpc.server` span and its trace context.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::Frame;
use tonic::body::Body;
use tracing::Instrument;

use crate::metrics::metrics;
use crate::trace::{TRACEPARENT, TraceContext};

/// Called once with the call's gRPC code name (`Ok`, `Unavailable`, ...).
pub(crate) type OnEnd = Box<dyn FnOnce(&'static str) + Send>;

/// A response body that reports the call's gRPC status when it ends.
pub(crate) struct ObservedBody {
    inner: Body,
    code: Option<&'static str>,
    on_end: Option<OnEnd>,
}

impl ObservedBody {
    /// Wraps `response`'s body; a trailers-only response reports its status at once.
    pub(crate) fn wrap(response: http::Response<Body>, on_end: OnEnd) -> http::Response<Body> {
        let code = grpc_code(response.headers());
        response.map(|inner| {
            let mut body = ObservedBody {
                inner,
                code,
                on_end: Some(on_end),
            };
            if code.is_some() && http_body::Body::is_end_stream(&body.inner) {
                body.end(code);
            }
            Body::new(body)
        })
    }

    fn end(&mut self, code: Option<&'static str>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(code.unwrap_or("Unknown"));
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
                    let code = grpc_code(trailers).or(self.code);
                    self.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = code_name(status.code());
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
        self.end(Some("Cancelled"));
    }
}

fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let status = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(code_name(tonic::Code::from_i32(status)))
}

/// A gRPC code's name, for metric labels.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Counts, times and traces every call a server serves.
///
/// Metrics are labelled with the method only for calls to the gRPC services the server
/// offers that reached a method (any code but `Unimplemented`); every other path is one
/// `unknown` value. The path is the caller's to choose, and a label per path would let any
/// client grow the server's memory and its `/metrics` without limit.
#[derive(Clone)]
pub(crate) struct ServerObserveLayer {
    service: Arc<str>,
    offered: Arc<[&'static str]>,
}

/// The method label of calls that reached no method the server offers.
pub(crate) const UNKNOWN_METHOD: &str = "unknown";

impl ServerObserveLayer {
    /// Observes calls to the server registered as `service`, which offers the gRPC services
    /// named `offered`.
    pub(crate) fn new(service: &str, offered: &[&'static str]) -> Self {
        Self {
            service: service.into(),
            offered: offered.into(),
        }
    }
}

impl<S> tower::Layer<S> for ServerObserveLayer {
    type Service = ServerObserve<S>;

    fn layer(&self, inner: S) -> ServerObserve<S> {
        ServerObserve {
            inner,
            service: Arc::clone(&self.service),
            offered: Arc::clone(&self.offered),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ServerObserve<S> {
    inner: S,
    service: Arc<str>,
    offered: Arc<[&'static str]>,
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
        let method: Arc<str> = request.uri().path().into();
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let context = parent.map_or_else(TraceContext::root, |p| p.child());
        let span = tracing::debug_span!(
            "grpc.server",
            service = %self.service,
            method = %method,
            trace_id = %context.trace_hex(),
            span_id = %context.span_hex(),
            parent_span_id = %parent.map(|p| p.span_hex()).unwrap_or_default(),
            code = tracing::field::Empty,
        );
        let service = Arc::clone(&self.service);
        let offered = Arc::clone(&self.offered);
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let response = context.scope(call).await?;
                let span = tracing::Span::current();
                let on_end: OnEnd = Box::new(move |code| {
                    let m = metrics();
                    let label = method_label(&method, code, &offered);
                    m.server_calls.with_label_values(&[&service, label, code]).inc();
                    m.server_latency
                        .with_label_values(&[&service, label])
                        .observe(started.elapsed().as_secs_f64());
                    span.record("code", code);
                });
                Ok(ObservedBody::wrap(response, on_end))
            }
            .instrument(span),
        )
    }
}

/// `path` if it names a method of an `offered` gRPC service that the call reached, else
/// [`UNKNOWN_METHOD`]: the labels a server's metrics can take are bounded by its own methods.
fn method_label<'a>(path: &'a str, code: &str, offered: &[&str]) -> &'a str {
    let service = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .map(|(service, _)| service);
    match service {
        Some(service) if code != "Unimplemented" && offered.contains(&service) => path,
        _ => UNKNOWN_METHOD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_methods_that_were_reached_are_labelled() {
        let offered = ["helloworld.Greeter"];
        let path = "/helloworld.Greeter/SayHello";
        assert_eq!(method_label(path, "Ok", &offered), path);
        assert_eq!(method_label(path, "Internal", &offered), path);
        for (path, code) in [
            ("/helloworld.Greeter/Nope", "Unimplemented"),
            ("/other.Service/SayHello", "Ok"),
            ("/x", "Unimplemented"),
            ("", "Unimplemented"),
        ] {
            assert_eq!(method_label(path, code, &offered), UNKNOWN_METHOD, "{path}");
        }
    }
}
