//! The interop server's layer: echoes the test metadata and records each request message's
//! compression flag for the handlers.
//!
//! The Echo Metadata feature sends `x-grpc-test-echo-initial` back in the response headers and
//! `x-grpc-test-echo-trailing-bin` back in the trailers. A tonic handler can set headers but
//! not the trailers of a successful unary call, so both are done here, around the service.
//! The request body is wrapped by [`flags::observe`](crate::flags::observe) and the
//! [`MessageFlags`] put into the request's extensions, where tonic hands them to the handler
//! (`request.extensions()`), for the CompressedRequest feature.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::flags::{MessageFlags, observe};

/// The metadata key whose value the server sends back in its initial metadata.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The metadata key whose value the server sends back in its trailing metadata.
pub const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// Adds [`Echo`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoLayer;

impl<S> Layer<S> for EchoLayer {
    type Service = Echo<S>;

    fn layer(&self, inner: S) -> Echo<S> {
        Echo { inner }
    }
}

/// Echoes the test metadata and records request message flags; see the module.
#[derive(Clone, Debug)]
pub struct Echo<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Echo<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let initial = request.headers().get(ECHO_INITIAL).cloned();
        let trailing = request.headers().get(ECHO_TRAILING).cloned();
        let flags = MessageFlags::default();
        let mut request = request.map(|body| Body::new(observe(body, flags.clone())));
        request.extensions_mut().insert(flags);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(value) = initial {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(ECHO_INITIAL), value);
            }
            if let Some(value) = trailing {
                response = with_trailer(response, value);
            }
            Ok(response)
        })
    }
}

/// `response` with `x-grpc-test-echo-trailing-bin: value` in its trailers: in the trailers
/// frame of its body, or in its headers when it is trailers-only (a call failed before any
/// message, whose `grpc-status` is in the headers).
fn with_trailer(mut response: Response<Body>, value: HeaderValue) -> Response<Body> {
    if response.headers().contains_key("grpc-status") {
        response
            .headers_mut()
            .insert(HeaderName::from_static(ECHO_TRAILING), value);
        return response;
    }
    response.map(|body| {
        Body::new(body.map_frame(move |mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                trailers.insert(HeaderName::from_static(ECHO_TRAILING), value.clone());
            }
            frame
        }))
    })
}
