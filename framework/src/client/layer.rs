//! Per-attempt layers: the application's `tower` layers around each instance's connection.
//!
//! A [`ServiceChannel`](super::ServiceChannel) picks an instance for each attempt of a call
//! and sends the attempt to that instance's [`InstanceService`]. Layers added with
//! [`ClientBuilder::layer`](super::ClientBuilder::layer) wrap that service, once per instance
//! (made on the instance's first call), so a layer sees the concrete instance: its
//! [`InstanceService::instance`] when the layer is applied, and an [`Attempt`] on every
//! request, which says which attempt of the call it is. Retries and failover happen outside
//! the layers: a call that moves to another instance goes through that instance's layers.
//!
//! What a layer returns decides what the channel does next:
//!
//! - a response: the attempt succeeded (whatever its gRPC status), as a response from the
//!   instance would have;
//! - a [`tonic::Status`] error: the layer's own answer, given to the caller as it is (an
//!   authorization layer refusing, say); the instance is not blamed and the call not retried;
//! - any other error: the attempt failed. The instance is ejected as for a transport failure,
//!   and the call moves to another instance if it certainly never reached this one (the
//!   error's source chain holds a [`ConnectionError`] whose
//!   [`never_sent`](ConnectionError::never_sent) is true) or, within the retry budget, if its
//!   method is idempotent.
//!
//! Layers cost the calls of a channel that has any: the request is built as an
//! `http::Request<tonic::body::Body>` for them, the layered service is cloned for each attempt
//! and its future boxed. A channel without layers sends each attempt straight to the
//! connection.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tonic::body::Body;
use tower::Service;
use tower::util::BoxCloneSyncService;

use super::transport::{Head, Link, TransportError};
use crate::ServiceInfo;
use crate::error::BoxError;

/// One instance's service: the connection to it, inside the layers added after this one.
///
/// Requests carry a path-only URI (`/package.Service/Method`), as tonic's generated clients
/// make them, and an [`Attempt`] extension; the connection adds the instance's scheme and
/// authority. Errors are [`ConnectionError`]s, or what a layer returned.
#[derive(Clone)]
pub struct InstanceService {
    inner: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
    instance: Arc<ServiceInfo>,
}

impl InstanceService {
    /// `service` as instance `instance`'s service.
    pub fn new<S>(instance: Arc<ServiceInfo>, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let service = tower::ServiceExt::map_err(service, Into::into);
        Self {
            inner: BoxCloneSyncService::new(service),
            instance,
        }
    }

    /// The instance this service sends to.
    pub fn instance(&self) -> &ServiceInfo {
        &self.instance
    }

    pub(super) fn connection(instance: Arc<ServiceInfo>, link: Arc<Link>) -> Self {
        Self::new(instance, LinkService { link })
    }
}

impl Service<http::Request<Body>> for InstanceService {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.inner.call(request)
    }
}

impl fmt::Debug for InstanceService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceService")
            .field("instance", &self.instance.address)
            .finish_non_exhaustive()
    }
}

/// How an attempt failed on the connection to its instance: the error of the innermost
/// [`InstanceService`], which a layer may pass on (or wrap: the channel looks for it along the
/// error's source chain).
///
/// It is its own type, not the transport's, so the transport can change without changing
/// what layers see.
#[derive(Debug)]
pub struct ConnectionError(TransportError);

impl ConnectionError {
    /// Whether the request certainly never reached the instance, so sending it to another
    /// cannot run it twice: no connection could be made, the connection would not take it, or
    /// the instance refused it unprocessed (`REFUSED_STREAM`, or above a `GOAWAY`'s last
    /// stream).
    pub fn never_sent(&self) -> bool {
        self.0.never_sent()
    }

    /// Whether the request never reached the instance because the instance was closing the
    /// connection gracefully (a `GOAWAY` without an error): nothing is wrong with the instance,
    /// and a new connection to it may take the call.
    pub fn connection_closing(&self) -> bool {
        self.0.connection_closing()
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectionError {
    // The transport error's own cause, not the transport error: it says the same as this one.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// Which attempt of a call a request is, on which instance: an extension of every request an
/// [`InstanceService`] gets.
#[derive(Clone, Debug)]
pub struct Attempt {
    instance: Arc<ServiceInfo>,
    number: usize,
}

impl Attempt {
    pub(super) fn new(instance: Arc<ServiceInfo>, number: usize) -> Self {
        Self { instance, number }
    }

    /// The instance the attempt goes to.
    pub fn instance(&self) -> &ServiceInfo {
        &self.instance
    }

    /// 1 for a call's first attempt, 2 for the next, and so on.
    pub fn number(&self) -> usize {
        self.number
    }
}

/// Wraps a client's instance services in one application layer.
pub(super) type LayerFn = Arc<dyn Fn(InstanceService) -> InstanceService + Send + Sync>;

/// Turns a `tower::Layer` over [`InstanceService`] into a [`LayerFn`].
pub(super) fn layer_fn<L>(layer: L) -> LayerFn
where
    L: tower::Layer<InstanceService> + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + Sync + 'static,
    <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
{
    Arc::new(move |inner: InstanceService| {
        let instance = Arc::clone(&inner.instance);
        InstanceService::new(instance, layer.layer(inner))
    })
}

/// The innermost service: the instance's connection.
#[derive(Clone)]
struct LinkService {
    link: Arc<Link>,
}

impl Service<http::Request<Body>> for LinkService {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let link = Arc::clone(&self.link);
        async move {
            let (parts, body) = request.into_parts();
            let payload = super::replay::read_now(body);
            let head = Head {
                method: parts.method,
                path: parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                headers: parts.headers,
            };
            let response = link.call(head, payload).await.map_err(ConnectionError)?;
            Ok(response.map(Body::new))
        }
        .boxed()
    }
}
