//! A gRPC server the [`App`](crate::App) binds, serves and registers.
//!
//! A [`GrpcServer`] is a set of tonic services behind one listener, registered under one service
//! name. The App binds its listener first (port 0 allowed), so what gets registered is the
//! address actually bound, or the `advertise` address when the bound one is not what clients
//! should dial (a container, NAT, or `0.0.0.0`).

use std::convert::Infallible;
use std::net::SocketAddr;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tower::Service;

use crate::ServiceInfo;

/// One gRPC listener and the tonic services behind it.
///
/// ```no_run
/// # use jovian::GrpcServer;
/// # fn demo<S>(greeter: S)
/// # where
/// #     S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible>
/// #         + tonic::server::NamedService + Clone + Send + Sync + 'static,
/// #     S::Future: Send + 'static,
/// # {
/// let server = GrpcServer::new("greeter")
///     .bind("0.0.0.0:50051".parse().unwrap())
///     .advertise("10.0.0.7:50051")
///     .map_info(|info| info.with_zone("z1").with_weight(50))
///     .add_service(greeter);
/// # }
/// ```
pub struct GrpcServer {
    pub(crate) info: ServiceInfo,
    pub(crate) bind: SocketAddr,
    pub(crate) advertise: Option<String>,
    pub(crate) routes: RoutesBuilder,
    pub(crate) grpc_services: Vec<&'static str>,
}

impl GrpcServer {
    /// A server registered as `service`, listening on `127.0.0.1` at a free port until
    /// [`bind`](Self::bind) says otherwise.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            info: ServiceInfo::new(service, ""),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            routes: Routes::builder(),
            grpc_services: Vec::new(),
        }
    }

    /// The address to listen on; port 0 picks a free port.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The `host:port` to register instead of the bound address.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Adjusts the registered [`ServiceInfo`] (zone, weight, metadata, group...). The name and
    /// address are the App's to set.
    pub fn map_info(mut self, f: impl FnOnce(ServiceInfo) -> ServiceInfo) -> Self {
        self.info = f(self.info);
        self
    }

    /// Adds a tonic service (a generated `XxxServer`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.grpc_services.push(S::NAME);
        self
    }

    /// The service name this server registers under.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}
