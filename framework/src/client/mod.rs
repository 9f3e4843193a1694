//! The client side: a channel to a service, balanced over its live instances.
//!
//! A [`ServiceChannel`] watches the registry and keeps one lazily connected tonic `Channel` per
//! instance. Each snapshot is applied in place as it arrives, calls flowing or not: instances
//! that stay keep their connection, new ones get a channel that connects on first use, removed
//! ones are dropped. A call picks an instance (round robin) and goes straight to its channel;
//! with no instance to pick, it fails at once with `Unavailable` naming the service, never
//! waiting. The channel is a `tower::Service` and `Clone`, so every tonic-generated client
//! takes it.
//!
//! ```no_run
//! # async fn demo(registry: impl jovian::Registry) -> Result<(), jovian::Error> {
//! let channel = jovian::ClientBuilder::new(registry).build("greeter").await?;
//! // let mut client = GreeterClient::new(channel);
//! # Ok(()) }
//! ```

mod balancer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::error::BoxError;
use crate::{Registry, Result, ServiceInfo};
use balancer::Balancer;

/// Builds [`ServiceChannel`]s over one registry.
#[derive(Clone)]
pub struct ClientBuilder {
    registry: Arc<dyn Registry>,
    options: ClientOptions,
}

/// How a client connects to instances and which instances it uses.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Only instances registered with this scheme are used.
    pub scheme: String,
    /// How long establishing a connection to one instance may take.
    pub connect_timeout: Duration,
    /// How often an idle or busy connection is pinged (HTTP/2 keep-alive), so a dead peer is
    /// noticed.
    pub keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            scheme: "grpc".to_owned(),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

impl ClientBuilder {
    /// A builder over `registry` with default options.
    pub fn new(registry: impl Registry) -> Self {
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
    /// call made right after goes to an instance that was registered before this call.
    pub async fn build(&self, service: &str) -> Result<ServiceChannel> {
        let watch = self.registry.watch(service).await?;
        let balancer = Balancer::new(service, self.options.clone());
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

    /// The instances calls may currently go to.
    pub fn instances(&self) -> Vec<ServiceInfo> {
        self.balancer.instances()
    }
}

/// The future of one call through a [`ServiceChannel`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

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
        match self.balancer.pick() {
            Ok(channel) => Box::pin(async move {
                let response = channel.oneshot(request).await?;
                Ok(response)
            }),
            Err(status) => Box::pin(std::future::ready(Err(status.into()))),
        }
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
