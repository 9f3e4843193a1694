//! One client connection of a server, driven with `h2` directly.
//!
//! Each call runs in a task of its own, as hyper's server runs each request, so (unless
//! `inline_calls` is set, below) calls never wait for each other, and a handler that computes for seconds without awaiting holds up
//! neither its connection's other calls nor the answers to its pings and flow-control updates
//! (which would make a healthy instance look frozen to its clients).
//!
//! With `inline_calls`, the connection's own task runs each call as far as it goes at once
//! instead: for a call whose service answers without waiting (a unary handler that computes
//! its reply), the request is read, the service runs and the response is queued to h2 in the
//! poll that read the request, and every response that poll made goes out in one write; a
//! call that has to wait goes on in a task of its own. One call that runs inline for more than
//! [`SLOW_INLINE`] sends the connection's calls to tasks of their own for a while. Since the
//! connection's task batches the writes of calls in tasks, inline saves little even next to a
//! handler of a few microseconds, and costs on several busy connections (BENCHMARKS.md,
//! "Calls in tasks of their own"); and the first slow call still holds up everything else on
//! its connection while it runs.
//!
//! The connection also keeps itself alive (a ping every `http2_keepalive_interval`, closed when
//! one goes unanswered for `http2_keepalive_timeout`), ages out (`max_connection_age`, then
//! `max_connection_age_grace`), goes away when no call has been open on it for
//! `max_connection_idle` (to twice that), and stops gracefully when the server stops: a
//! GOAWAY, then the calls in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tower::limit::ConcurrencyLimit;
use tower::util::{Either, Oneshot};
use tower::{Service, ServiceExt};

use super::budget::Budgeted;
use crate::http2::body::RecvBody;
use crate::http2::grpc::end_with_status;
use crate::http2::keepalive::Steady;
use crate::http2::pump::{Pump, Pumped};

/// How long a client has to finish the TLS and HTTP/2 handshakes once connected.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An inline call that runs longer than this holds up the calls behind it for more than a
/// task of their own would cost them.
const SLOW_INLINE: Duration = Duration::from_micros(100);

/// How long a connection's calls run in tasks of their own after a slow inline call, before
/// inline is tried again.
const SPAWN_AFTER_SLOW: Duration = Duration::from_secs(1);

/// How long a connection closed for being idle has to finish closing gracefully.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What every connection of one server is set up with.
pub(crate) struct ConnectionSettings {
    pub(super) h2: h2::server::Builder,
    /// Calls served at once; more wait their turn.
    pub(super) concurrency_limit: Option<usize>,
    pub(super) keepalive: Option<(Duration, Duration)>,
    pub(super) max_age: Option<Duration>,
    pub(super) max_age_grace: Option<Duration>,
    /// How long a connection may have no call open before it is closed gracefully.
    pub(super) max_idle: Option<Duration>,
    /// Whether calls run in the connection's task as far as they go at once.
    pub(super) inline_calls: bool,
}

/// The service that answers calls: the server's services behind jovian's metrics and tracing.
pub(crate) trait CallService:
    Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> CallService for S where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// Serves HTTP/2 on `io` until the client goes, the connection fails or ages out, or `stop`
/// fires and the calls in flight are done. `connect_info` goes into every request's extensions
/// (tonic's `Request::remote_addr` and `peer_certs` read it). Calls that have to wait run in
/// tasks of `calls`.
pub(super) async fn serve<I, S, C>(
    io: I,
    service: S,
    connect_info: C,
    settings: &ConnectionSettings,
    stop: CancellationToken,
    calls: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    S: CallService,
    C: Clone + Send + Sync + 'static,
{
    let io = Budgeted::new(io);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, settings.h2.handshake::<_, Bytes>(io));
    // A client still in its handshake when the server stops has no call to finish: it is let
    // go at once, as hyper's server did, rather than holding the stop up until it finishes or
    // the shutdown deadline passes.
    let handshaken = tokio::select! {
        biased;
        () = stop.cancelled() => {
            tracing::debug!("the server stops before the client's HTTP/2 handshake finished; closing the connection");
            return;
        }
        handshaken = handshake => handshaken,
    };
    let connection = match handshaken {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("no HTTP/2 handshake within {HANDSHAKE_TIMEOUT:?}; closing the connection");
            return;
        }
    };
    let service = match settings.concurrency_limit {
        Some(limit) => Either::Left(ConcurrencyLimit::new(service, limit)),
        None => Either::Right(service),
    };
    let mut driver = Driver::new(connection, service, connect_info, settings, stop, calls);
    std::future::poll_fn(|cx| driver.poll(cx)).await;
}

/// The connection's task.
struct Driver<I, S, C> {
    connection: h2::server::Connection<I, Bytes>,
    service: S,
    connect_info: C,
    calls: TaskTracker,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    keepalive: Option<Steady>,
    /// When the connection is too old: first a graceful stop, then, after the grace, the end.
    aging: Option<Pin<Box<Sleep>>>,
    grace: Option<Duration>,
    aged: bool,
    /// Fires every `max_idle`: a connection that had no call open through a whole period goes.
    idle: Option<(Pin<Box<Sleep>>, Duration)>,
    /// Whether a call was open at some poll since `idle` last fired.
    busy: bool,
    inline_calls: bool,
    stopping: bool,
    /// Until when calls go to tasks of their own instead of running inline.
    spawn_until: Option<Instant>,
    /// Whether the last poll only yielded.
    yielded: bool,
    /// The streams accepted in one poll, run after every one of them is accepted so that their
    /// responses go out together.
    accepted: Vec<(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>)>,
}

impl<I, S, C> Driver<I, S, C>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: CallService,
    C: Clone + Send + Sync + 'static,
{
    fn new(
        mut connection: h2::server::Connection<I, Bytes>,
        service: S,
        connect_info: C,
        settings: &ConnectionSettings,
        stop: CancellationToken,
        calls: TaskTracker,
    ) -> Self {
        let keepalive = settings
            .keepalive
            .and_then(|(interval, timeout)| Some(Steady::new(connection.ping_pong()?, interval, timeout)));
        Self {
            connection,
            service,
            connect_info,
            calls,
            stop: Box::pin(stop.cancelled_owned()),
            keepalive,
            aging: settings.max_age.map(|age| Box::pin(tokio::time::sleep(age))),
            grace: settings.max_age_grace,
            aged: false,
            idle: settings.max_idle.map(|idle| (Box::pin(tokio::time::sleep(idle)), idle)),
            busy: false,
            inline_calls: settings.inline_calls,
            stopping: false,
            spawn_until: None,
            yielded: false,
            accepted: Vec::new(),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Woken while calls run in tasks of their own (most often by one of them queueing its
        // response), the task first lets the worker's other ready tasks run, so responses
        // queued meanwhile go out with this one in a single write.
        // One look at h2's streams per poll: it takes the connection's stream lock.
        let has_streams = self.connection.has_streams();
        if !self.inline_calls && !self.yielded && has_streams {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        if !self.stopping && self.stop.as_mut().poll(cx).is_ready() {
            self.stopping = true;
            self.connection.graceful_shutdown();
        }
        while let Some(aging) = &mut self.aging {
            if aging.as_mut().poll(cx).is_pending() {
                break;
            }
            if self.aged {
                tracing::debug!("the connection's age grace passed; closing it");
                return Poll::Ready(());
            }
            self.aged = true;
            if !self.stopping {
                self.stopping = true;
                self.connection.graceful_shutdown();
            }
            match self.grace {
                Some(grace) => aging.as_mut().reset(Instant::now() + grace),
                None => self.aging = None,
            }
        }
        if let Some(keepalive) = &mut self.keepalive
            && keepalive.poll(cx).is_ready()
        {
            tracing::debug!("no answer to a keep-alive ping; closing the connection");
            return Poll::Ready(());
        }
        self.busy |= has_streams;
        if let Some((sleep, period)) = &mut self.idle
            && sleep.as_mut().poll(cx).is_ready()
        {
            if self.busy {
                self.busy = false;
                sleep.as_mut().reset(Instant::now() + *period);
                let _ = sleep.as_mut().poll(cx);
            } else {
                tracing::debug!("no call on the connection for max_connection_idle; closing it gracefully");
                self.idle = None;
                if !self.stopping {
                    self.stopping = true;
                    self.connection.graceful_shutdown();
                }
                // A graceful close waits for the client to answer a ping; one that never
                // does is closed anyway after a grace.
                self.aged = true;
                let mut grace = Box::pin(tokio::time::sleep(IDLE_CLOSE_GRACE));
                let _ = grace.as_mut().poll(cx);
                self.aging = Some(grace);
            }
        }
        loop {
            loop {
                match self.connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok(stream))) => self.accepted.push(stream),
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(%error, "connection failed");
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if self.accepted.is_empty() {
                return Poll::Pending;
            }
            // Run now, each as far as it goes; the next `poll_accept` writes what they sent.
            if !self.inline_calls || self.spawn_until.is_some_and(|until| Instant::now() < until) {
                for (request, respond) in self.accepted.drain(..) {
                    self.calls
                        .spawn(Call::new(request, respond, &self.service, &self.connect_info));
                }
                continue;
            }
            self.spawn_until = None;
            let mut started = Instant::now();
            // In the order they came; those left after a slow one go to tasks next time round.
            self.accepted.reverse();
            while let Some((request, respond)) = self.accepted.pop() {
                let mut call = Box::pin(Call::new(request, respond, &self.service, &self.connect_info));
                if call.as_mut().poll(cx).is_pending() {
                    self.calls.spawn(call);
                }
                let now = Instant::now();
                if now - started > SLOW_INLINE {
                    self.spawn_until = Some(now + SPAWN_AFTER_SLOW);
                    break;
                }
                started = now;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// One call: the service's answer, then its body sent within the stream's flow control.
    /// Dropped (the handler with it) when the client resets the stream or the connection ends.
    struct Call<S: Service<http::Request<Body>>> {
        #[pin]
        answer: Option<Oneshot<S, http::Request<Body>>>,
        respond: Option<h2::server::SendResponse<Bytes>>,
        // When the caller's `grpc-timeout` runs out; timed only once the answer has to wait.
        deadline: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
        sending: Option<Sending>,
    }
}

impl<S: CallService> Call<S> {
    fn new<C: Clone + Send + Sync + 'static>(
        request: http::Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
        service: &S,
        connect_info: &C,
    ) -> Self {
        let deadline = crate::http2::deadline::of(request.headers(), None).map(Instant::from_std);
        let mut request = request.map(|recv| Body::new(RecvBody::new(recv, request_body_status, ())));
        request.extensions_mut().insert(connect_info.clone());
        Self {
            answer: Some(service.clone().oneshot(request)),
            respond: Some(respond),
            deadline,
            timer: None,
            sending: None,
        }
    }
}

impl<S: CallService> Future for Call<S> {
    type Output = ();

    /// A handler that panics fails its own call with `INTERNAL`, and nothing else: the call
    /// may be running inline in the connection's task, which carries every other call of the
    /// connection.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.as_mut().run(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                self.panicked(&*panic);
                Poll::Ready(())
            }
        }
    }
}

impl<S: CallService> Call<S> {
    /// Ends a call whose handler (or response body) panicked: the handler is dropped and the
    /// client told `INTERNAL`.
    fn panicked(self: Pin<&mut Self>, panic: &(dyn std::any::Any + Send)) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        tracing::error!(
            panic = message,
            "a call's handler panicked; failing the call with INTERNAL"
        );
        let mut this = self.project();
        let status = tonic::Status::internal("the server's handler for this call panicked");
        // What is left of the handler may panic again as it is dropped.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.answer.set(None)));
        *this.timer = None;
        if let Some(respond) = this.respond.take() {
            let _ = Sending::start(respond, status.into_http(), None);
        } else if let Some(mut sending) = this.sending.take() {
            sending.fail(&status);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(sending)));
        }
    }

    fn run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(answer) = this.answer.as_mut().as_pin_mut() {
            let response = match answer.poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => {
                    let respond = this.respond.as_mut().expect("held until answered");
                    if respond.poll_reset(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    let Some(deadline) = *this.deadline else {
                        return Poll::Pending;
                    };
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    ready!(timer.as_mut().poll(cx));
                    tonic::Status::deadline_exceeded("the call's deadline (grpc-timeout) passed on the server")
                        .into_http()
                }
            };
            this.answer.set(None);
            // The deadline goes on for the response's body: a stream that outlives it ends
            // with DEADLINE_EXCEEDED too.
            let timer = this.timer.take();
            let deadline = this.deadline.map(|deadline| (deadline, timer));
            let respond = this.respond.take().expect("held until answered");
            match Sending::start(respond, response, deadline) {
                Some(sending) => *this.sending = Some(sending),
                None => return Poll::Ready(()),
            }
        }
        match this.sending {
            Some(sending) => sending.poll(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A response body on its way ([`Pump`]; its first chunk goes at once), ended early when the
/// client resets the stream or the call's deadline passes.
struct Sending {
    pump: Pump,
    /// The call's deadline, and its timer once the body has had to wait.
    deadline: Option<(Instant, Option<Pin<Box<Sleep>>>)>,
}

impl Sending {
    /// Sends the response head; `None` when that was all (a trailers-only response) or the
    /// stream is gone.
    fn start(
        mut respond: h2::server::SendResponse<Bytes>,
        response: http::Response<Body>,
        deadline: Option<(Instant, Option<Pin<Box<Sleep>>>)>,
    ) -> Option<Self> {
        let (parts, body) = response.into_parts();
        let end = body.is_end_stream();
        let stream = match respond.send_response(http::Response::from_parts(parts, ()), end) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "the response could not be sent");
                return None;
            }
        };
        (!end).then(|| Self {
            pump: Pump::new(body, stream, true),
            deadline,
        })
    }

    /// Ends the response with `status` in its trailers.
    fn fail(&mut self, status: &tonic::Status) {
        end_with_status(self.pump.stream(), status);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.pump.poll(cx) {
            Poll::Ready(Pumped::Sent | Pumped::StreamGone) => Poll::Ready(()),
            // tonic's bodies end in trailers with the status; a body that fails instead fails
            // the call with what it said.
            Poll::Ready(Pumped::BodyFailed(status)) => {
                self.fail(&status);
                Poll::Ready(())
            }
            Poll::Pending => self.pending(cx),
        }
    }

    /// While waiting on the body or on send window: over when the client resets the stream,
    /// or when the call's deadline passes.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pump.stream().poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some((deadline, timer)) = &mut self.deadline {
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*deadline)));
            if timer.as_mut().poll(cx).is_ready() {
                self.fail(&tonic::Status::deadline_exceeded(
                    "the call's deadline (grpc-timeout) passed on the server",
                ));
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// What a request body's h2 error is to the service reading it.
fn request_body_status(error: h2::Error) -> tonic::Status {
    tonic::Status::from_error(Box::new(error))
}
