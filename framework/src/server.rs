//! A gRPC server the [`App`](crate::App) binds, serves and registers.
//!
//! A [`GrpcServer`] is a set of tonic services behind one listener, registered under one service
//! name. The App binds its listener first (port 0 allowed), so what gets registered is the
//! address actually bound, or the `advertise` address when the bound one is not what clients
//! should dial (a container, NAT, or `0.0.0.0`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) advertise: Option<String>,
    pub(crate) routes: RoutesBuilder,
    pub(crate) grpc_services: Vec<&'static str>,
    pub(crate) tls: Option<ServerTls>,
}

/// PEM files for serving TLS.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl GrpcServer {
    /// A server registered as `service`, listening where the config's `[servers.<service>]`
    /// says, else on `127.0.0.1` at a free port, until [`bind`](Self::bind) says otherwise.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            info: ServiceInfo::new(service, ""),
            bind: None,
            advertise: None,
            routes: Routes::builder(),
            grpc_services: Vec::new(),
            tls: None,
        }
    }

    /// Serves TLS with these files instead of plain HTTP/2. Clients need
    /// [`ClientTls`](crate::client::ClientTls) to call it.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The address to listen on; port 0 picks a free port.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
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

    /// tonic's TLS settings, read from the files now so a bad path fails the start.
    pub(crate) fn tls_config(&self) -> crate::Result<Option<tonic::transport::ServerTlsConfig>> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| crate::Error::Config {
                key: format!("servers.{}.tls.{key}", self.name()),
                expected: "a readable PEM file".into(),
                found: format!("{}: {e}", path.display()),
            })
        };
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?));
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client_ca", ca)?));
        }
        Ok(Some(config))
    }

    /// The service name this server registers under.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("name", &self.info.name)
            .field("services", &self.grpc_services)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Binds a listener, failing with an error that names the address; returns it with the address
/// actually bound (port 0 resolved).
pub(crate) async fn listen(addr: SocketAddr) -> crate::Result<(tokio::net::TcpListener, SocketAddr)> {
    let bind_error = |source| crate::Error::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
