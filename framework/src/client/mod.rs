//! The client side: a channel to a service, balanced over its live instances.
//!
//! A [`ServiceChannel`] watches the registry and keeps one lazily made HTTP/2 connection per
//! instance. Each snapshot is applied in place as it arrives, calls flowing or not: instances
//! that stay keep their connection and statistics, new ones connect on their first call,
//! removed ones are dropped. A call picks an instance by the [`Policy`] among those the
//! [`Filter`] admits, skipping ejected ones, and goes straight to its connection, from the
//! caller's own task (no buffer task or channel in between); with no instance to pick it fails
//! at once with `Unavailable` naming the service and the filter, never waiting. A call that
//! could not reach its instance moves to another; see [`RetryPolicy`]. The channel is a
//! `tower::Service` and `Clone`, so every tonic-generated client takes it. Layers of the
//! application's own can wrap each attempt on its instance: see [`ClientBuilder::layer`].
//!
//! # Metrics
//!
//! | metric | labels |
//! |---|---|
//! | `grpc_client_started_total` | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_client_handled_total` | `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code` |
//! | `grpc_client_handling_seconds` (histogram) | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `jovian_client_attempts_total` | `service`, `instance`, `grpc_code` |
//! | `jovian_client_attempt_seconds` (histogram) | `service`, `instance` |
//! | `jovian_client_picks_total` | `service`, `policy` |
//! | `jovian_client_ejections_total` | `service`, `instance` |
//! | `jovian_client_instances` (gauge) | `service` |
//!
//! The `grpc_client_*` family is go-grpc-prometheus's: one series per method whatever
//! instances and attempts a call took, `grpc_code` named as grpc-go names codes (`OK`,
//! `Unavailable`, `DeadlineExceeded`, ...). `jovian_client_*` is the balancer's own, labelled
//! by the jovian service and the instance's address; an instance's series go when it leaves
//! the instance set. Method labels come from generated clients; a hand-made path is labelled
//! only while few such paths have been seen, and `unknown` after, so no caller can grow the
//! series without bound.
//!
//! ```no_run
//! # async fn demo(registry: impl jovian::Discovery) -> Result<(), jovian::Error> {
//! let channel = jovian::ClientBuilder::new(registry).build("greeter").await?;
//! // let mut client = GreeterClient::new(channel);
//! # Ok(()) }
//! ```

mod balancer;
mod budget;
mod call;
mod clock;
mod instance;
mod layer;
mod live;
mod metrics;
mod options;
mod policy;
mod replay;
mod slots;
pub(crate) mod transport;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use crate::error::BoxError;
use crate::metrics::GrpcType;
use crate::{Discovery, Result, ServiceInfo};
use balancer::Balancer;
pub use layer::{Attempt, ConnectionError, InstanceService};
use layer::{LayerFn, layer_fn};
pub(crate) use live::{ClientView, live_clients};
pub use options::{
    ClientOptions, ClientTls, ConnectionOptions, DEFAULT_TIMEOUT, Ejection, Filter, HASH_KEY_HEADER, HashKey,
    MethodOptions, Policy, RetryPolicy,
};
pub(crate) use transport::check_tls;

/// Builds [`ServiceChannel`]s over one registry.
#[derive(Clone)]
pub struct ClientBuilder {
    registry: Arc<dyn Discovery>,
    options: ClientOptions,
    layers: Vec<LayerFn>,
    method_types: HashMap<String, GrpcType>,
}

impl ClientBuilder {
    /// A builder over `registry` with default options.
    pub fn new(registry: impl Discovery) -> Self {
        Self {
            registry: Arc::new(registry),
            options: ClientOptions::default(),
            layers: Vec::new(),
            method_types: HashMap::new(),
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Wraps every attempt of every call in `layer`, around the connection to the instance the
    /// attempt goes to: a per-attempt (inner) layer.
    ///
    /// The layer is applied once per instance, to that instance's [`InstanceService`] (whose
    /// [`instance`](InstanceService::instance) it can read), on the instance's first call; each
    /// request it sees carries an [`Attempt`] naming the instance and the attempt's number.
    /// Picking, retries and failover happen outside it, so a call that moves to another
    /// instance goes through that instance's layer, and the call's deadline covers the layer's
    /// readiness and work. Layers added first are outermost. What a layer's errors make the
    /// channel do is in [`InstanceService`]'s module: a `tonic::Status` goes to the caller
    /// as it is; any other error fails the attempt like a transport failure.
    ///
    /// ```
    /// # fn demo(registry: impl jovian::Discovery) {
    /// use jovian::client::Attempt;
    ///
    /// // Tells each instance which attempt of the call it serves.
    /// let builder = jovian::ClientBuilder::new(registry).layer(tower::util::MapRequestLayer::new(
    ///     |mut request: http::Request<tonic::body::Body>| {
    ///         let number = request.extensions().get::<Attempt>().map_or(1, Attempt::number);
    ///         request.headers_mut().insert("x-attempt", number.into());
    ///         request
    ///     },
    /// ));
    /// # }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<InstanceService> + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + Sync + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers.push(layer_fn(layer));
        self
    }

    /// Declares that calls to `path` (`/package.Service/Method`) are of `grpc_type`, as
    /// [`MethodOptions::grpc_type`] does: for their default deadline (none for streams, unless
    /// [`ClientOptions::stream_timeout`]) and their label in the `grpc_client_*` metrics. A
    /// call does not say its method's type, so the channel takes a call whose request was
    /// complete when it was made for unary and any other for bidi-streaming: declare your
    /// server-streaming methods, or every call of theirs gets the unary deadline.
    pub fn method_type(mut self, path: impl Into<String>, grpc_type: GrpcType) -> Self {
        self.method_types.insert(path.into(), grpc_type);
        self
    }

    /// A channel to `service`. Returns once the registry's current snapshot is applied, so a
    /// call made right after goes to an instance that was registered before this call; with
    /// [`ClientOptions::wait_for_instances`], waits up to that long for a first instance.
    pub async fn build(&self, service: &str) -> Result<ServiceChannel> {
        let mut watch = self.registry.watch(service).await?;
        if let Some(limit) = self.options.wait_for_instances {
            let filter = &self.options.filter;
            let first = watch.wait_for(|e| e.iter().any(|i| filter.admits(i)));
            if tokio::time::timeout(limit, first).await.is_err() {
                tracing::warn!(service, ?limit, filter = %filter, "no instance appeared in time; calls fail until one does");
            }
        }
        let balancer = Balancer::new(
            service,
            self.options.clone(),
            self.layers.clone(),
            self.method_types.clone(),
        )?;
        live::announce(&balancer);
        // The update task owns a handle on the registry: a registry that is dropped ends its
        // watches, and this channel must keep following for as long as it is used.
        let updates = balancer.follow(watch, Arc::clone(&self.registry));
        Ok(ServiceChannel {
            balancer,
            _updates: Arc::new(AbortOnDrop(updates)),
        })
    }
}

/// A `tower::Service` that sends each gRPC call to one live instance of a service.
///
/// Cheap to clone; clones share the instance set and its connections. The registry watch stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct ServiceChannel {
    balancer: Arc<Balancer>,
    _updates: Arc<AbortOnDrop>,
}

impl ServiceChannel {
    /// The service this channel calls.
    pub fn service(&self) -> &str {
        self.balancer.service()
    }

    /// The instances calls may currently go to (ejected ones included).
    pub fn instances(&self) -> Vec<ServiceInfo> {
        self.balancer.instances()
    }

    /// How many instances calls may currently go to; cheaper than `instances().len()`.
    pub fn instance_count(&self) -> usize {
        self.balancer.len()
    }

    /// The instances currently set aside after failures.
    pub fn ejected(&self) -> Vec<ServiceInfo> {
        self.balancer.ejected()
    }

    /// Picks an instance as a call would (`hash_key` for consistent hashing) without calling
    /// it; true if there was one. For jovian's benchmarks of the pick path (the `bench`
    /// feature): not an API, it may change or go in any release.
    #[cfg(feature = "bench")]
    #[doc(hidden)]
    pub fn bench_pick(&self, hash_key: Option<&[u8]>) -> bool {
        self.balancer.pick_once(hash_key)
    }

    /// The options this channel runs with.
    pub fn options(&self) -> &ClientOptions {
        self.balancer.options()
    }
}

/// The future of one call through a [`ServiceChannel`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready, and never an error: a `ServiceChannel` takes every call.
    ///
    /// Readiness belongs to the instance a call goes to, which is picked per attempt, when the
    /// call is made; so a `ServiceChannel` applies no backpressure here, and everything a call
    /// may wait for is inside its future, under its deadline: the connection to the picked
    /// instance (made on its first call), a free HTTP/2 stream when the instance limits
    /// concurrent streams, and the readiness of any [layer](ClientBuilder::layer) around the
    /// instance. A call with no instance to go to does not wait either: it fails at once with
    /// `Unavailable`. To bound the calls in flight, put a limit in front of the channel (e.g.
    /// `tower::limit::ConcurrencyLimit`) or around each instance (a layer).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (call, span) = self.balancer.prepare(request);
        Box::pin(tracing::Instrument::instrument(
            Arc::clone(&self.balancer).send(call),
            span,
        ))
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("options", &self.options)
            .field("layers", &self.layers.len())
            .field("method_types", &self.method_types)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceChannel")
            .field("service", &self.service())
            .field("instances", &self.balancer.len())
            .finish()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
