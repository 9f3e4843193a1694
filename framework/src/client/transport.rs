//! The client's HTTP/2 transport: one connection per instance, driven with `h2` directly.
//!
//! A call is sent from the caller's own task: its request head and (already complete) body
//! are handed to h2 under h2's stream lock, which wakes the connection's task to write them;
//! the response is awaited on h2's response future and its body read from h2's stream, all in
//! the caller's task. Nothing sits between the caller and the connection, where a tonic
//! `Channel` puts a `tower::buffer` worker task (a channel hop each way) and hyper a dispatch
//! channel plus one or two tasks spawned per request. A request body that is not complete when
//! the call is made (client streaming) is the exception: a task sends it as it comes.
//!
//! A [`Link`] is one instance's connection slot. Its connection is made on the instance's
//! first call (lazily), by one task for every caller that waits on it (single flight), and
//! again on the first call after it died.
//!
//! The connection's task also keeps it alive, within what the instance allows ([`Pings`]):
//! while calls are in flight and nothing was read for `keepalive_interval`, it sends a ping,
//! and a ping unanswered for `keepalive_timeout` closes the connection, failing its calls, so
//! a frozen or vanished instance is noticed within about the two. An idle connection is never
//! pinged. A stock gRPC server (grpc-go, grpc-java, C-core) forgives one ping after each time
//! it sent something and closes the connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_pings")
//! on the third unforgiven one within 5 minutes; so an instance that has not said in its
//! registry entry that it takes pings more often gets at most two pings per quiet stretch
//! (one forgiven, one strike), and a `too_many_pings` doubles the link's interval, as grpc-go's
//! client does. Past that, a frozen instance of that kind is noticed by its calls' deadlines.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::uri::{Authority, PathAndQuery, Scheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::body::Body;

use super::clock::now_ms;
use super::options::{ClientTls, ConnectionOptions};
use crate::error::BoxError;
use crate::http2::frames::{FrameScan, kind};
use crate::http2::keepalive::{Event, Pinger};
use crate::http2::pump::{Pump, Pumped};
use crate::http2::tls;
use crate::service::MIN_PING_INTERVAL_KEY;
use crate::{Error, ServiceInfo};

/// h2 settings as hyper's client sets them (tonic's `Channel` runs on those).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// How connections are made: shared by every instance of a client.
pub(super) struct Connector {
    tls: Option<Tls>,
    connect_timeout: Duration,
    keepalive: Option<(Duration, Duration)>,
    h2: h2::client::Builder,
}

struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// The name to verify instead of the instance's host.
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// `service` names the client in errors: a TLS file that is wrong is reported under the
    /// config key it is read from, `clients.{service}.tls.*`.
    pub(super) fn new(service: &str, options: &ConnectionOptions) -> crate::Result<Self> {
        let mut h2 = h2::client::Builder::new();
        h2.initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false);
        let keepalive =
            (!options.keepalive_interval.is_zero()).then_some((options.keepalive_interval, options.keepalive_timeout));
        Ok(Self {
            tls: options
                .tls
                .as_ref()
                .map(|tls| Tls::new(tls, &tls_section(service)))
                .transpose()?,
            connect_timeout: options.connect_timeout,
            keepalive,
            h2,
        })
    }

    /// The scheme requests carry.
    pub(super) fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// Dials `address`, shakes hands (TLS, HTTP/2) and starts the connection's task.
    async fn connect(
        self: Arc<Self>,
        address: Arc<str>,
        in_flight: Arc<AtomicUsize>,
        pings: Pings,
        calm: Arc<AtomicU32>,
    ) -> Result<Connection, ConnectFailed> {
        let dial = async {
            let tcp = TcpStream::connect(&*address)
                .await
                .map_err(|e| ConnectFailed::new("cannot connect", e))?;
            tcp.set_nodelay(true)
                .map_err(|e| ConnectFailed::new("cannot set TCP_NODELAY", e))?;
            let io = match &self.tls {
                None => Io::Plain(tcp),
                Some(tls) => Io::Tls(Box::new(tls.handshake(tcp, &address).await?)),
            };
            let state = Arc::new(ConnState::new());
            let (heard, hear) = tokio::sync::oneshot::channel();
            let io = Tracked {
                io,
                state: Arc::clone(&state),
                heard: Some(heard),
                put_off: false,
                frames: FrameScan::default(),
            };
            let (send, mut connection) = self
                .h2
                .handshake::<_, Bytes>(io)
                .await
                .map_err(|e| ConnectFailed::new("the HTTP/2 handshake failed", e))?;
            let keepalive = self.keepalive.and_then(|(interval, timeout)| {
                // Slower after each `too_many_pings` this instance sent, never faster than it allows.
                let interval = interval
                    .saturating_mul(1 << calm.load(Ordering::Relaxed))
                    .max(pings.min());
                Some(KeepAlive {
                    pinger: Pinger::new(connection.ping_pong()?),
                    interval,
                    timeout,
                    limited: matches!(pings, Pings::Limited),
                    frames_at_ping: 0,
                    quiet_pings: 0,
                    last_ping: None,
                })
            });
            tokio::spawn(Driver {
                connection,
                keepalive,
                state: Arc::clone(&state),
                in_flight,
                address: Arc::clone(&address),
                calm,
                yielded: false,
            });
            // As grpc-go does, the connection is used once the instance has spoken (its
            // SETTINGS): a listener that takes connections and drops them, or a frozen process
            // whose kernel still accepts them, fails the connect, so calls that wait on it have
            // certainly not reached it and may go elsewhere.
            hear.await.map_err(|_| {
                ConnectFailed::new(
                    "the connection closed before the instance said anything",
                    io::Error::from(io::ErrorKind::ConnectionAborted),
                )
            })?;
            Ok::<_, ConnectFailed>(Connection {
                send: Mutex::new(send),
                state,
            })
        };
        // A connect that fails or times out drops the connection, and with it its task.
        tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| ConnectFailed::timed_out(self.connect_timeout))?
    }
}

/// Loads `tls` as the client of `service` would, reporting a wrong file under its key.
pub(crate) fn check_tls(service: &str, tls: &ClientTls) -> crate::Result<()> {
    Tls::new(tls, &tls_section(service)).map(drop)
}

/// A setting that needs another that is not there.
fn missing(key: &str, expected: &str) -> Error {
    Error::Config {
        key: key.to_owned(),
        expected: expected.into(),
        found: "nothing".into(),
    }
}

fn tls_section(service: &str) -> String {
    format!("clients.{service}.tls")
}

impl Tls {
    fn new(tls: &ClientTls, section: &str) -> crate::Result<Self> {
        let key = |name: &str| format!("{section}.{name}");
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config {
                key: key("ca"),
                expected: "TLS settings rustls can use".into(),
                found: e.to_string(),
            })?;
        let roots = match &tls.ca {
            Some(ca) => tls::roots(&key("ca"), ca)?,
            None => rustls::RootCertStore::empty(),
        };
        let builder = builder.with_root_certificates(roots);
        let mut config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(private)) => {
                let certs = tls::certificates(&key("cert"), cert)?;
                let private = tls::private_key(&key("key"), private)?;
                builder
                    .with_client_auth_cert(certs, private)
                    .map_err(|e| tls::invalid(&key("cert"), "a certificate to go with tls.key", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(missing(&key("key"), "the private key of tls.cert")),
            (None, Some(_)) => return Err(missing(&key("cert"), "the certificate of tls.key")),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = tls
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|e| Error::Config {
                    key: key("server_name"),
                    expected: "a DNS name or an IP address".into(),
                    found: format!("{name}: {e}"),
                })
            })
            .transpose()?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        address: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectFailed> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = address
                    .parse::<Authority>()
                    .map(|a| a.host().trim_start_matches('[').trim_end_matches(']').to_owned())
                    .map_err(|e| ConnectFailed::new("the address has no host", e))?;
                ServerName::try_from(host).map_err(|e| ConnectFailed::new("the host is not a valid TLS name", e))?
            }
        };
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectFailed::new("the TLS handshake failed", e))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectFailed::new(
                "the TLS handshake failed",
                io::Error::other("the instance did not agree to HTTP/2 (ALPN h2)"),
            ));
        }
        Ok(stream)
    }
}

/// One instance's connection: made on first use, made again after it died.
pub(super) struct Link {
    address: Arc<str>,
    authority: Authority,
    scheme: Scheme,
    connector: Arc<Connector>,
    /// The calls in flight on this instance, which the connection's task reads to know whether
    /// to keep the connection alive. The instance counts them.
    in_flight: Arc<AtomicUsize>,
    /// How often the instance lets itself be pinged.
    pings: Pings,
    /// How many times the instance closed a connection for too many pings: each doubles the
    /// keep-alive interval of the connections made after it.
    calm: Arc<AtomicU32>,
    live: ArcSwapOption<Connection>,
    connecting: Mutex<Option<Connecting>>,
}

/// How often an instance lets its connections be pinged while calls are in flight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Pings {
    /// As often as every this long, as its registry entry says ([`MIN_PING_INTERVAL_KEY`]).
    Welcome(Duration),
    /// Unknown: as a stock gRPC server allows (see the module's head).
    Limited,
}

/// Pings a [`Pings::Limited`] instance gets while it sends nothing: the first is forgiven by
/// grpc-go, grpc-java and C-core servers, the second is one strike of the two they tolerate.
const QUIET_PINGS: u32 = 2;

/// How long after its last ping a stock gRPC server takes another without a strike
/// (grpc-go's `EnforcementPolicy.MinTime`, grpc-java's and C-core's default alike).
const STOCK_MIN_PING_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The most doublings of the keep-alive interval after `too_many_pings`.
const MAX_CALM: u32 = 8;

impl Pings {
    /// What `info`'s registry entry says.
    pub(super) fn of(info: &ServiceInfo) -> Self {
        info.metadata
            .get(MIN_PING_INTERVAL_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(Pings::Limited, |ms| Pings::Welcome(Duration::from_millis(ms)))
    }

    fn min(self) -> Duration {
        match self {
            Pings::Welcome(min) => min,
            Pings::Limited => Duration::ZERO,
        }
    }
}

type Connecting = Shared<BoxFuture<'static, Result<Arc<Connection>, Arc<ConnectFailed>>>>;

/// A connection that was made, alive or not.
pub(super) struct Connection {
    send: Mutex<h2::client::SendRequest<Bytes>>,
    state: Arc<ConnState>,
}

/// What the connection's task and its callers share.
struct ConnState {
    closed: AtomicBool,
    /// Why the connection was closed, when that says more than the error its calls got.
    reason: OnceLock<&'static str>,
    /// When something was last read from the peer, in the client's milliseconds.
    last_read_ms: AtomicU64,
    /// Whether something was read in the connection task's current poll of h2.
    read_this_poll: AtomicBool,
    /// HEADERS and DATA frames read from the peer.
    stream_frames: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        Self {
            closed: AtomicBool::new(false),
            reason: OnceLock::new(),
            last_read_ms: AtomicU64::new(now_ms()),
            read_this_poll: AtomicBool::new(false),
            stream_frames: AtomicU64::new(0),
        }
    }

    fn close(&self, reason: Option<&'static str>) {
        if let Some(reason) = reason {
            let _ = self.reason.set(reason);
        }
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Link {
    pub(super) fn new(
        info: &ServiceInfo,
        connector: Arc<Connector>,
        in_flight: Arc<AtomicUsize>,
    ) -> Result<Self, TransportError> {
        let authority: Authority = info
            .address
            .parse()
            .map_err(|e| TransportError::not_sent("the instance's address is not a valid authority", e))?;
        Ok(Self {
            address: info.address.as_str().into(),
            authority,
            scheme: connector.scheme(),
            connector,
            in_flight,
            pings: Pings::of(info),
            calm: Arc::new(AtomicU32::new(0)),
            live: ArcSwapOption::empty(),
            connecting: Mutex::new(None),
        })
    }

    pub(super) fn in_flight(&self) -> &Arc<AtomicUsize> {
        &self.in_flight
    }

    /// The live connection, made now if there is none (one connect for every caller waiting).
    async fn connection(&self) -> Result<Arc<Connection>, TransportError> {
        if let Some(live) = &*self.live.load()
            && !live.state.is_closed()
        {
            return Ok(Arc::clone(live));
        }
        let pending = {
            let mut connecting = self.connecting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(live) = &*self.live.load()
                && !live.state.is_closed()
            {
                return Ok(Arc::clone(live));
            }
            match &*connecting {
                Some(pending) => pending.clone(),
                None => {
                    // Its own task: the connect goes on if the caller that started it gives up.
                    let task = tokio::spawn(Arc::clone(&self.connector).connect(
                        Arc::clone(&self.address),
                        Arc::clone(&self.in_flight),
                        self.pings,
                        Arc::clone(&self.calm),
                    ));
                    let pending = async move {
                        match task.await {
                            Ok(Ok(live)) => Ok(Arc::new(live)),
                            Ok(Err(failed)) => Err(Arc::new(failed)),
                            Err(join) => Err(Arc::new(ConnectFailed::new("the connect task failed", join))),
                        }
                    }
                    .boxed()
                    .shared();
                    *connecting = Some(pending.clone());
                    pending
                }
            }
        };
        let result = pending.clone().await;
        let mut connecting = self.connecting.lock().unwrap_or_else(|e| e.into_inner());
        if connecting.as_ref().is_some_and(|c| c.ptr_eq(&pending)) {
            *connecting = None;
            if let Ok(live) = &result {
                self.live.store(Some(Arc::clone(live)));
            }
        }
        result.map_err(|failed| TransportError {
            kind: Kind::Connect,
            source: Some(Box::new(SharedConnectFailed(failed))),
            detail: None,
        })
    }

    /// The request h2 sends for `head`: its path on this instance's scheme and authority.
    fn request(&self, head: Head) -> http::Request<()> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(head.path);
        let mut request = http::Request::new(());
        *request.method_mut() = head.method;
        *request.uri_mut() = http::Uri::from_parts(uri).expect("a scheme, an authority and a path make a URI");
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = head.headers;
        strip_connection_headers(request.headers_mut());
        request
    }

    /// Sends `head` with `body` on the instance's connection (made now if there is none) and
    /// waits for the response's head: the one way every attempt reaches the wire, with or
    /// without the application's layers.
    pub(super) async fn call(&self, head: Head, body: Payload) -> Result<http::Response<RecvBody>, TransportError> {
        let connection = self.connection().await?;
        let mut request = Some(self.request(head));
        let (response, stream) = std::future::poll_fn(|cx| connection.poll_send(cx, &mut request)).await?;
        let cancel = self.send_body(stream, body);
        connection.response(response, cancel).await
    }

    /// Sends a request's body after its head: at once when it is complete, else from a task
    /// of its own; returns what stops that task when the response is dropped.
    fn send_body(&self, mut stream: h2::SendStream<Bytes>, body: Payload) -> Option<tokio::sync::oneshot::Sender<()>> {
        match body {
            // Even an empty body ends in a DATA frame, not on the HEADERS: grpc-go servers
            // before 1.84 never tell a handler that a request stream ended on its HEADERS
            // (grpc-go issue 2867), so an empty client stream would hang there.
            Payload::Complete(data) => {
                // The head is out, and an instance may answer (and end the stream) before the
                // body follows it: a server that needs no body does. What happened is what the
                // response says.
                if let Err(error) = stream.send_data(data, true) {
                    tracing::trace!(instance = %self.address, %error, "the request body was not sent");
                }
                None
            }
            Payload::Streaming(body) => {
                let (cancel, canceled) = tokio::sync::oneshot::channel();
                tokio::spawn(pipe(body, stream, canceled));
                Some(cancel)
            }
        }
    }
}

impl Connection {
    /// Opens a stream for `request` (taken when it goes), waiting while the connection has
    /// as many streams open as the instance allows. The body follows (`Link::send_body`).
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        request: &mut Option<http::Request<()>>,
    ) -> Poll<Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), TransportError>> {
        let mut send = self.send.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match send.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => send.send_request(request.take().expect("sent once"), false),
            Poll::Ready(Err(e)) => Err(e),
        };
        Poll::Ready(sent.map_err(|e| {
            // The connection is going away or gone: the next call makes a new one.
            self.state.close(None);
            if is_graceful_close(&e) {
                return TransportError::closing("the instance was closing the connection", e);
            }
            TransportError::not_sent("the connection would not take the request", e)
        }))
    }

    /// Waits for the response's head.
    async fn response(
        &self,
        response: h2::client::ResponseFuture,
        cancel: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<http::Response<RecvBody>, TransportError> {
        let response = response.await.map_err(|e| {
            if is_graceful_close(&e) {
                // Above the last stream of a graceful GOAWAY: the connection was closing.
                self.state.close(None);
                TransportError::closing("the instance closed the connection before the request", e)
            } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()) {
                // Refused unprocessed: by the stream, or by the GOAWAY it was above.
                TransportError::not_sent("the instance refused the request unprocessed", e)
            } else {
                TransportError::sent(self, "the request failed", e)
            }
        })?;
        Ok(response.map(|recv| RecvBody::new(recv, body_status, cancel)))
    }
}

/// Whether `error` is the instance closing the connection gracefully (a `GOAWAY` without an
/// error: its connection got old, or it is stopping), which is no fault of the instance.
fn is_graceful_close(error: &h2::Error) -> bool {
    error.is_go_away() && error.is_remote() && error.reason() == Some(h2::Reason::NO_ERROR)
}

/// A request's head, as the transport sends it.
pub(super) struct Head {
    pub(super) method: http::Method,
    pub(super) path: PathAndQuery,
    pub(super) headers: http::HeaderMap,
}

/// A request's body, as far as it could be read when the call was made
/// (`replay::read_now`).
pub(super) enum Payload {
    /// All of it (every unary call's): sent with the head, and again by a later attempt.
    Complete(Bytes),
    /// What was read, then the rest as it comes: sent by a task of its own, once.
    Streaming(Body),
}

/// Removes what HTTP/2 forbids in a request (RFC 9113 §8.2.2): headers about the connection,
/// which a caller may have copied from an HTTP/1 request or a layer may have added. hyper
/// drops them too; h2 would refuse the whole request, and the caller's mistake would look like
/// the instance's failure.
fn strip_connection_headers(headers: &mut http::HeaderMap) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
}

/// Sends a streaming request body as it comes ([`Pump`]); resets the stream if the body fails
/// or the caller gives up on the response.
async fn pipe(body: Body, stream: h2::SendStream<Bytes>, mut canceled: tokio::sync::oneshot::Receiver<()>) {
    let mut pump = Pump::new(body, stream, false);
    let sent = std::future::poll_fn(|cx| {
        if Pin::new(&mut canceled).poll(cx).is_ready() {
            return Poll::Ready(Err(h2::Reason::CANCEL));
        }
        if let Poll::Ready(reset) = pump.stream().poll_reset(cx) {
            return Poll::Ready(Err(reset.unwrap_or(h2::Reason::CANCEL)));
        }
        match ready!(pump.poll(cx)) {
            Pumped::Sent => Poll::Ready(Ok(())),
            Pumped::BodyFailed(_) | Pumped::StreamGone => Poll::Ready(Err(h2::Reason::CANCEL)),
        }
    })
    .await;
    if let Err(reason) = sent {
        pump.stream().send_reset(reason);
    }
}

/// A response body as h2 receives it; it holds what stops a streaming request body's sending.
pub(super) type RecvBody = crate::http2::body::RecvBody<Option<tokio::sync::oneshot::Sender<()>>>;

/// The status of a call whose response broke off: a lost connection is `Unavailable`, as
/// gRPC reports transport failures; a reset stream is what its reason says, as tonic maps it.
fn body_status(error: h2::Error) -> tonic::Status {
    if error.is_io() || (error.is_go_away() && error.reason() != Some(h2::Reason::NO_ERROR) && error.is_remote()) {
        return tonic::Status::unavailable(format!("the connection to the instance was lost: {error}"));
    }
    tonic::Status::from_error(Box::new(error))
}

/// The connection's task: drives h2's connection and keeps it alive.
struct Driver {
    connection: h2::client::Connection<Tracked, Bytes>,
    keepalive: Option<KeepAlive>,
    state: Arc<ConnState>,
    in_flight: Arc<AtomicUsize>,
    address: Arc<str>,
    /// The link's count of `too_many_pings`.
    calm: Arc<AtomicU32>,
    /// Whether the last poll only yielded.
    yielded: bool,
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Woken (a caller queued a request, or the peer sent something) while other calls are
        // in flight, the task first lets the worker's other ready tasks run: callers that
        // queue requests meanwhile are written with this one in a single syscall, and
        // responses that arrive meanwhile are read together. (A wake from a caller otherwise
        // runs the task next, to write one request per syscall.) With one call in flight there
        // is nothing to batch, and the yield would only cost a wake-up of an idle worker.
        // Measured in process: +7% calls/s at 16 in flight, +12% at 64, -7% at 1 unless skipped.
        if !this.yielded && this.in_flight.load(Ordering::Relaxed) > 1 {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        this.state.read_this_poll.store(false, Ordering::Relaxed);
        if let Poll::Ready(result) = Pin::new(&mut this.connection).poll(cx) {
            if let Err(error) = result {
                if error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                    // grpc-go's "too_many_pings": the next connections ping half as often.
                    let _ = this.calm.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |calm| {
                        (calm < MAX_CALM).then_some(calm + 1)
                    });
                    tracing::warn!(instance = %this.address, %error, "the instance closed the connection for too many pings; pinging it less often");
                } else {
                    tracing::debug!(instance = %this.address, %error, "connection ended");
                }
            }
            this.state.close(None);
            return Poll::Ready(());
        }
        if let Some(keepalive) = &mut this.keepalive
            && keepalive.poll(cx, &this.state, &this.in_flight).is_ready()
        {
            tracing::debug!(instance = %this.address, "no answer to a keep-alive ping; closing the connection");
            // Dropping the connection fails the calls on it.
            this.state
                .close(Some("the instance did not answer a keep-alive ping in time"));
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// HTTP/2 keep-alive while calls are in flight: the shared [`Pinger`], pinging only when a
/// call is in flight, nothing was read for `interval`, and the instance allows it.
struct KeepAlive {
    pinger: Pinger,
    interval: Duration,
    timeout: Duration,
    /// Whether the instance is [`Pings::Limited`].
    limited: bool,
    /// The peer's HEADERS and DATA frames counted when the last ping went.
    frames_at_ping: u64,
    /// Pings sent since the peer last sent a HEADERS or DATA frame.
    quiet_pings: u32,
    last_ping: Option<tokio::time::Instant>,
}

impl KeepAlive {
    /// Ready when a ping went unanswered for the timeout: the connection is dead.
    fn poll(&mut self, cx: &mut Context<'_>, state: &ConnState, in_flight: &AtomicUsize) -> Poll<()> {
        loop {
            match ready!(self.pinger.poll(cx)) {
                Event::Unanswered => return Poll::Ready(()),
                Event::Answered => state.last_read_ms.store(now_ms(), Ordering::Relaxed),
                Event::Due => {
                    // Polled again whenever a call starts: h2 wakes this task to send it.
                    if in_flight.load(Ordering::Relaxed) == 0 {
                        return Poll::Pending;
                    }
                    let now = now_ms();
                    let due = state.last_read_ms.load(Ordering::Relaxed) + self.interval.as_millis().max(1) as u64;
                    let instant = tokio::time::Instant::now();
                    if now < due {
                        self.pinger.wait_until(instant + Duration::from_millis(due - now));
                        continue;
                    }
                    if !self.may_ping(state, instant) {
                        // Quiet too long for a limited instance's patience: looked at again
                        // when the interval has passed, by when it may have spoken.
                        self.pinger.wait_until(instant + self.interval);
                        continue;
                    }
                    if !self.pinger.ping(self.timeout) {
                        return Poll::Pending;
                    }
                    self.quiet_pings += 1;
                    self.last_ping = Some(instant);
                }
            }
        }
    }

    /// Whether a ping now stays within what the instance allows.
    fn may_ping(&mut self, state: &ConnState, now: tokio::time::Instant) -> bool {
        let frames = state.stream_frames.load(Ordering::Relaxed);
        if frames != self.frames_at_ping {
            // The peer spoke since the last ping: the next one is forgiven.
            self.frames_at_ping = frames;
            self.quiet_pings = 0;
        }
        !self.limited
            || self.quiet_pings < QUIET_PINGS
            || self
                .last_ping
                .is_some_and(|last| now.duration_since(last) >= STOCK_MIN_PING_INTERVAL)
    }
}

/// The connection's byte stream, noting when the peer was last heard from.
struct Tracked {
    io: Io,
    state: Arc<ConnState>,
    /// Told when the peer is first heard from.
    heard: Option<tokio::sync::oneshot::Sender<()>>,
    /// Whether the write h2 is attempting was put off once already.
    put_off: bool,
    frames: FrameScan,
}

impl Tracked {
    /// Whether to put off, once, a write h2 attempts in the same poll as it read something,
    /// letting the worker's other ready tasks run first. The read woke callers (it held their
    /// responses) whose next requests then go out in the same syscall, and so does the answer
    /// to a PING read with them, which would otherwise go alone and wake the instance for
    /// nothing: a grpc-go server pings about once a round trip. Measured (BENCHMARKS.md):
    /// against three grpc-go servers at 16 in flight this client's writes per call fell from
    /// 0.73 to 0.48, and the servers' reads per call from 0.88 to 0.68 (0.66 under grpc-go's).
    fn put_off(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state.read_this_poll.load(Ordering::Relaxed) && !self.put_off {
            self.put_off = true;
            cx.waker().wake_by_ref();
            return true;
        }
        self.put_off = false;
        false
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut frames = 0;
            this.frames.scan(&buf.filled()[before..], |head| {
                // What a stock gRPC server's ping policy counts as the connection in use.
                if matches!(head.kind, kind::HEADERS | kind::DATA) {
                    frames += 1;
                }
            });
            if frames > 0 {
                this.state.stream_frames.fetch_add(frames, Ordering::Relaxed);
            }
            this.state.read_this_poll.store(true, Ordering::Relaxed);
            this.state.last_read_ms.store(now_ms(), Ordering::Relaxed);
            if let Some(heard) = this.heard.take() {
                let _ = heard.send(());
            }
        }
        read
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.put_off(cx) {
            return Poll::Pending;
        }
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.put_off(cx) {
            return Poll::Pending;
        }
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(super) struct ConnectFailed {
    what: String,
    source: Option<BoxError>,
}

impl ConnectFailed {
    fn new(what: &str, source: impl Into<BoxError>) -> Self {
        Self {
            what: what.to_owned(),
            source: Some(source.into()),
        }
    }

    fn timed_out(limit: Duration) -> Self {
        Self {
            what: format!("connecting took longer than {limit:?}"),
            source: None,
        }
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl StdError for ConnectFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// A connect failure shared by every caller that waited on the connect.
#[derive(Debug)]
struct SharedConnectFailed(Arc<ConnectFailed>);

impl fmt::Display for SharedConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for SharedConnectFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// How an attempt failed in the transport.
#[derive(Debug)]
pub struct TransportError {
    kind: Kind,
    source: Option<BoxError>,
    detail: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// No connection could be made.
    Connect,
    /// The request certainly never reached the instance.
    NotSent(&'static str),
    /// The request never reached the instance, which was closing the connection gracefully.
    Closing(&'static str),
    /// The request may have reached the instance.
    Sent(&'static str),
}

impl TransportError {
    pub(super) fn not_sent(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::NotSent(what),
            source: Some(source.into()),
            detail: None,
        }
    }

    fn closing(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Closing(what),
            source: Some(source.into()),
            detail: None,
        }
    }

    fn sent(connection: &Connection, what: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Sent(what),
            source: Some(source.into()),
            detail: connection.state.reason.get().copied(),
        }
    }

    /// Whether the request certainly never reached the instance, so sending it to another
    /// cannot run it twice: no connection could be made, the connection would not take it, or
    /// the instance refused it unprocessed (`REFUSED_STREAM`, or above a `GOAWAY`'s last
    /// stream).
    pub fn never_sent(&self) -> bool {
        !matches!(self.kind, Kind::Sent(_))
    }

    /// Whether the request never reached the instance because the instance was closing the
    /// connection gracefully (a `GOAWAY` without an error): nothing is wrong with the instance,
    /// and a new connection to it may take the call.
    pub fn connection_closing(&self) -> bool {
        matches!(self.kind, Kind::Closing(_))
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Connect => f.write_str("no connection to the instance")?,
            Kind::NotSent(what) | Kind::Closing(what) | Kind::Sent(what) => f.write_str(what)?,
        }
        if let Some(detail) = self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_pinged_freely_only_if_its_entry_says_so() {
        let info = |metadata: Option<&str>| {
            let info = ServiceInfo::new("s", "127.0.0.1:1");
            match metadata {
                Some(value) => info.with_metadata(MIN_PING_INTERVAL_KEY, value),
                None => info,
            }
        };
        assert_eq!(Pings::of(&info(Some("0"))), Pings::Welcome(Duration::ZERO));
        assert_eq!(Pings::of(&info(Some("30000"))), Pings::Welcome(Duration::from_secs(30)));
        assert_eq!(Pings::of(&info(None)), Pings::Limited);
        assert_eq!(Pings::of(&info(Some("soon"))), Pings::Limited, "junk is no permission");
    }

    #[test]
    fn connection_headers_are_stripped_and_te_trailers_kept() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("connection", "close"),
            ("keep-alive", "5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        strip_connection_headers(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        headers.insert("te", "gzip".parse().unwrap());
        strip_connection_headers(&mut headers);
        assert!(!headers.contains_key("te"), "te other than trailers goes");
    }
}
