//! The client side: a channel to a service, balanced over its live instances.
//!
//! A [`ServiceChannel`] watches the registry and keeps one lazily connected tonic `Channel` per
//! instance. Each snapshot is applied in place as it arrives, calls flowing or not: instances
//! that stay keep their connection and statistics, new ones get a channel that connects on
//! first use, removed ones are dropped. A call picks an instance by the [`Policy`] among those
//! the [`Filter`] admits, skipping ejected ones, and goes straight to its channel; with no
//! instance to pick it fails at once with `Unavailable` naming the service and the filter,
//! never waiting. A call that could not reach its instance moves to another; see
//! [`RetryPolicy`]. The channel is a `tower::Service` and `Clone`, so every tonic-generated
//! client takes it.
//!
//! ```no_run
//! # async fn demo(registry: impl jovian::Discovery) -> Result<(), jovian::Error> {
//! let channel = jovian::ClientBuilder::new(registry).build("greeter").await?;
//! // let mut client = GreeterClient::new(channel);
//! # Ok(()) }
//! ```

mod balancer;
mod budget;
mod deadline;
mod instance;
mod live;
mod options;
mod policy;
mod replay;
mod slots;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use crate::error::BoxError;
use crate::{Discovery, Result, ServiceInfo};
use balancer::Balancer;
pub(crate) use live::{ClientView, live_clients};
pub use options::{
    ClientOptions, ClientTls, ConnectionOptions, DEFAULT_TIMEOUT, Ejection, Filter, HASH_KEY_HEADER, HashKey, Policy,
    RetryPolicy,
};

/// Builds [`ServiceChannel`]s over one registry.
#[derive(Clone)]
pub struct ClientBuilder {
    registry: Arc<dyn Discovery>,
    options: ClientOptions,
}

impl ClientBuilder {
    /// A builder over `registry` with default options.
    pub fn new(registry: impl Discovery) -> Self {
        Self {
            registry: Arc::new(registry),
            options: ClientOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
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
        let balancer = Balancer::new(service, self.options.clone())?;
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
    /// it; true if there was one. For benchmarks of the pick path.
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

    /// Always ready: readiness is a property of the instance a call picks, so it is awaited per
    /// call, after the pick.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let balancer = Arc::clone(&self.balancer);
        Box::pin(async move { balancer.dispatch(request).await })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("options", &self.options)
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

/// Milliseconds since the first call, never 0, so it fits an atomic where 0 means "unset".
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
