//! A gRPC server the `App` binds, serves and registers.
//!
//! A [`GrpcServer`] is a set of tonic services behind one listener, registered under one service
//! name. The App binds its listener first (port 0 allowed), so what gets registered is the
//! address actually bound, or the `advertise` address when the bound one is not what clients
//! should dial (a container, NAT, or `0.0.0.0`).
//!
//! Every setting of the config's `[servers.NAME]` section ([`ServerConfig`]) can be made in
//! code too, and what the code sets wins. Middleware is any tower layer, given to
//! [`GrpcServer::layer`] as to tonic's `Server::builder().layer(..)`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tower::util::{BoxCloneService, Oneshot};
use tower::{Layer, Service, ServiceExt};

use crate::error::BoxError;
use crate::http2::tls;
use crate::metrics::GrpcType;
use crate::observe::{LearnMethods, Methods};
use crate::{Error, ServiceInfo};
pub use config::ServerConfig;

mod budget;
mod config;
pub(crate) mod connection;
mod cutoff;
pub(crate) mod serve;

/// What a layer given to [`GrpcServer::layer`] wraps: the server's services (and the layers
/// added after it), type-erased so that a server's type does not change with its layers.
/// Layers are usually generic over the service they wrap and never name this.
pub type LayeredService = BoxCloneService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Adds one layer around the services below it.
type BoxedLayer = Box<dyn FnOnce(LayeredService) -> LayeredService + Send>;

/// One gRPC listener and the tonic services behind it.
///
/// ```no_run
/// # use std::time::Duration;
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
///     .layer(tower::limit::ConcurrencyLimitLayer::new(64))
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
///     .configure(|settings| settings.max_concurrent_streams = Some(128))
///     .add_service(greeter);
/// # }
/// ```
pub struct GrpcServer {
    pub(crate) info: ServiceInfo,
    /// What the code set; the config's section fills in the rest.
    pub(crate) settings: ServerConfig,
    routes: RoutesBuilder,
    pub(crate) grpc_services: Vec<&'static str>,
    layers: Vec<BoxedLayer>,
    method_types: HashMap<String, GrpcType>,
}

/// PEM files for serving TLS: the `[servers.NAME.tls]` section.
///
/// ```
/// let tls = jovian::ServerTls::new("server.pem", "server-key.pem").client_ca("clients-ca.pem");
/// let server = jovian::GrpcServer::new("greeter").tls(tls);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerTls {
    /// The server's certificate chain (`cert`).
    pub cert: PathBuf,
    /// The certificate's private key (`key`).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (`client_ca`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl GrpcServer {
    /// A server registered as `service`, set up as the config's `[servers.<service>]` says,
    /// else listening on `127.0.0.1` at a free port, with the HTTP/2 defaults of
    /// [`ServerConfig`].
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            info: ServiceInfo::new(service, ""),
            settings: ServerConfig::default(),
            routes: Routes::builder(),
            grpc_services: Vec::new(),
            layers: Vec::new(),
            method_types: HashMap::new(),
        }
    }

    /// Serves TLS with these files instead of plain HTTP/2. Clients need
    /// [`ClientTls`](crate::client::ClientTls) to call it.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.settings.tls = Some(tls);
        self
    }

    /// The address to listen on; port 0 picks a free port.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.settings.host = Some(addr.ip());
        self.settings.port = Some(addr.port());
        self
    }

    /// The `host:port` to register instead of the bound address.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.settings.advertise = Some(address.into());
        self
    }

    /// Sets any of the `[servers.NAME]` settings in code: HTTP/2 and connection settings
    /// (streams and calls per connection, keep-alive, windows, frame and header sizes,
    /// connection age), as well as where to listen. What is set here wins over the config;
    /// what is left `None` comes from it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let server = jovian::GrpcServer::new("greeter").configure(|s| {
    ///     s.concurrency_limit_per_connection = Some(32);
    ///     s.http2_keepalive_interval = Some(Duration::from_secs(30));
    /// });
    /// ```
    pub fn configure(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.settings);
        self
    }

    /// Adjusts the registered [`ServiceInfo`] (zone, weight, metadata, group...). The name and
    /// address are the App's to set.
    pub fn map_info(mut self, f: impl FnOnce(ServiceInfo) -> ServiceInfo) -> Self {
        self.info = f(self.info);
        self
    }

    /// Adds a tonic service (a generated `XxxServer`).
    ///
    /// tonic's generated servers limit the messages they decode to 4 MiB unless told
    /// otherwise (`XxxServer::new(svc).max_decoding_message_size(16 << 20)`).
    /// [`ServerConfig::max_request_message_bytes`] sets a limit for every service of the
    /// server, from config or code; a larger one than the generated server's needs raising
    /// there too.
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

    /// Wraps the server's services in a tower layer: a `ConcurrencyLimitLayer`, a
    /// `TimeoutLayer`, authentication, tower-http's layers, tonic's `InterceptorLayer`.
    ///
    /// Layers wrap every call to the services added with [`add_service`](Self::add_service),
    /// whenever they were added; the gRPC health service jovian adds stays outside them, so
    /// probes are answered whatever the layers require. The first layer added is the
    /// outermost, as with tonic's `Server::layer` and tower's `ServiceBuilder`. jovian's
    /// metrics and tracing are outside every layer: a call a layer turns away is counted with
    /// the code the caller got.
    ///
    /// An error a layer returns becomes the call's gRPC status: a [`tonic::Status`] anywhere
    /// in its source chain is that status, tower's timeout is `DEADLINE_EXCEEDED`, tower's
    /// load shedding is `RESOURCE_EXHAUSTED`, and anything else is `UNKNOWN` with the error's
    /// message.
    pub fn layer<L, ResBody>(mut self, layer: L) -> Self
    where
        L: Layer<LayeredService> + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        self.layers.push(Box::new(move |inner| {
            let layered = layer
                .layer(inner)
                .map_response(|response| response.map(Body::new))
                .map_err(Into::into);
            BoxCloneService::new(layered)
        }));
        self
    }

    /// Declares the kind of a streaming method, for the `grpc_type` label of the server's
    /// metrics; `path` is `/package.Service/Method`. Methods not declared are `unary`, since
    /// neither a call nor tonic's generated code says what kind a method is.
    pub fn method_type(mut self, path: impl Into<String>, grpc_type: GrpcType) -> Self {
        self.method_types.insert(path.into(), grpc_type);
        self
    }

    /// The service name this server registers under.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The service that serves this server's calls, with `health` beside the layered
    /// application services, and what its metrics need to know about the methods.
    pub(crate) fn into_service(self, health: Routes, max_request_message: Option<usize>) -> (Dispatch, Arc<Methods>) {
        let mut offered = self.grpc_services;
        offered.push(HEALTH_SERVICE);
        let mut types = self.method_types;
        types
            .entry(format!("/{HEALTH_SERVICE}/Watch"))
            .or_insert(GrpcType::ServerStream);
        let methods = Arc::new(Methods::new(offered, types));
        let direct = Direct {
            routes: LearnMethods::new(self.routes.routes().prepare(), Arc::clone(&methods)),
            max_request_message,
        };
        // Without layers the services are called as they are; boxing them (a clone that
        // allocates on every call, and a boxed future) is for layers, whose types vary.
        let application = if self.layers.is_empty() {
            Application::Direct(direct)
        } else {
            let mut application =
                BoxCloneService::new(direct.map_err(|never: Infallible| -> BoxError { match never {} }));
            for layer in self.layers.into_iter().rev() {
                application = layer(application);
            }
            Application::Layered(application)
        };
        let health = LearnMethods::new(health.prepare(), Arc::clone(&methods));
        (Dispatch { health, application }, methods)
    }
}

/// The gRPC health service every server offers.
pub(crate) const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Sends health checks to the health service and everything else through the application's
/// layers to its services, and turns the layers' errors into gRPC statuses.
#[derive(Clone)]
pub(crate) struct Dispatch {
    health: LearnMethods<Routes>,
    application: Application,
}

/// The application's services, behind its layers if it has any.
#[derive(Clone)]
enum Application {
    Direct(Direct),
    Layered(LayeredService),
}

/// The application's services with nothing around them but the request size limit.
#[derive(Clone)]
struct Direct {
    routes: LearnMethods<Routes>,
    max_request_message: Option<usize>,
}

impl Service<http::Request<Body>> for Direct {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = <LearnMethods<Routes> as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let request = match self.max_request_message {
            Some(limit) => request.map(|body| Body::new(LimitedMessages::new(body, limit))),
            None => request,
        };
        self.routes.call(request)
    }
}

impl Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call waits for its own service in its future, so that a layer holding calls
        // back (a concurrency limit) never holds up health checks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let is_health = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(HEALTH_SERVICE))
            .is_some_and(|rest| rest.starts_with('/'));
        if is_health {
            return DispatchFuture::Health {
                call: self.health.clone().oneshot(request),
            };
        }
        match &self.application {
            Application::Direct(direct) => DispatchFuture::Direct {
                call: direct.clone().oneshot(request),
            },
            Application::Layered(layered) => {
                let layered = layered.clone();
                DispatchFuture::Layered {
                    call: Box::pin(async move {
                        Ok(match layered.oneshot(request).await {
                            Ok(response) => response,
                            Err(error) => layer_error_status(error).into_http(),
                        })
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A call [`Dispatch`] sent on.
    #[project = DispatchProjection]
    pub(crate) enum DispatchFuture {
        Health { #[pin] call: Oneshot<LearnMethods<Routes>, http::Request<Body>> },
        Direct { #[pin] call: Oneshot<Direct, http::Request<Body>> },
        Layered { call: BoxFuture<'static, Result<http::Response<Body>, Infallible>> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProjection::Health { call } => call.poll(cx),
            DispatchProjection::Direct { call } => call.poll(cx),
            DispatchProjection::Layered { call } => call.as_mut().poll(cx),
        }
    }
}

/// The gRPC status a caller gets for an error a layer returned.
fn layer_error_status(error: BoxError) -> tonic::Status {
    // tonic finds its own statuses anywhere in the chain, and knows load shedding.
    let error = match tonic::Status::try_from_error(error) {
        Ok(status) => return status,
        Err(error) => error,
    };
    let mut chain = std::iter::successors(Some(&*error as &(dyn std::error::Error + 'static)), |e| e.source());
    if chain.any(|e| e.is::<tower::timeout::error::Elapsed>()) {
        return tonic::Status::deadline_exceeded("the server's time limit for this call passed");
    }
    tonic::Status::unknown(error.to_string())
}

/// A request body whose gRPC messages may be at most `limit` bytes: the stream fails with
/// `RESOURCE_EXHAUSTED` as soon as a message's length prefix announces more, before its bytes
/// are read, so an oversized message costs the server nothing.
pub(crate) struct LimitedMessages {
    inner: Body,
    limit: usize,
    /// The length prefix being read (a compressed flag and a big-endian u32).
    prefix: [u8; 5],
    prefix_read: usize,
    /// Bytes of the current message still to come.
    message_left: usize,
}

impl LimitedMessages {
    pub(crate) fn new(inner: Body, limit: usize) -> Self {
        Self {
            inner,
            limit,
            prefix: [0; 5],
            prefix_read: 0,
            message_left: 0,
        }
    }

    /// Follows the message boundaries through `data`; the first message over the limit is an
    /// error.
    fn check(&mut self, mut data: &[u8]) -> Result<(), tonic::Status> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let taken = self.message_left.min(data.len());
                self.message_left -= taken;
                data = &data[taken..];
                continue;
            }
            let taken = (5 - self.prefix_read).min(data.len());
            self.prefix[self.prefix_read..self.prefix_read + taken].copy_from_slice(&data[..taken]);
            self.prefix_read += taken;
            data = &data[taken..];
            if self.prefix_read == 5 {
                self.prefix_read = 0;
                let length =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
                if length > self.limit {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "a request message of {length} bytes is larger than the {} this server accepts",
                        self.limit
                    )));
                }
                self.message_left = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LimitedMessages {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(status) = self.check(data)
        {
            return Poll::Ready(Some(Err(status)));
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

impl ServerTls {
    /// Serves this certificate chain (PEM) with its private key (PEM).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Requires clients to present a certificate signed by this CA (PEM).
    pub fn client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }

    /// The TLS acceptor for these files (HTTP/2 offered by ALPN), read now so that a bad path
    /// fails the start; errors name the keys of `[servers.<server>.tls]`.
    pub(crate) fn acceptor(&self, server: &str) -> crate::Result<tokio_rustls::TlsAcceptor> {
        use tokio_rustls::rustls;
        let key = |name: &str| format!("servers.{server}.tls.{name}");
        let chain = tls::certificates(&key("cert"), &self.cert)?;
        let private = tls::private_key(&key("key"), &self.key)?;
        let provider = tls::provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls::invalid(&key("cert"), "a certificate rustls can serve", &self.cert, e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = tls::roots(&key("client_ca"), ca)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| tls::invalid(&key("client_ca"), "CA certificates", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, private).map_err(|e| Error::Config {
            key: key("key"),
            expected: "the private key of the certificate in `cert`".into(),
            found: e.to_string(),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("name", &self.info.name)
            .field("services", &self.grpc_services)
            .field("layers", &self.layers.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Binds a listener, failing with an error that names the address; returns it with the address
/// actually bound (port 0 resolved).
pub(crate) async fn listen(addr: SocketAddr) -> crate::Result<(tokio::net::TcpListener, SocketAddr)> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&length.to_be_bytes());
        framed.resize(5 + length as usize, b'x');
        framed
    }

    #[test]
    fn messages_are_followed_across_chunks_and_the_first_too_large_fails() {
        let mut limited = LimitedMessages::new(Body::empty(), 10);
        let stream = [message(10), message(0), message(3)].concat();
        // Every split, including ones through a length prefix.
        for chunk in stream.chunks(3) {
            limited.check(chunk).expect("messages within the limit pass");
        }
        let too_large = message(11);
        limited.check(&too_large[..2]).expect("half a prefix says nothing yet");
        let status = limited.check(&too_large[2..]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("11 bytes"), "{status:?}");
    }
}
