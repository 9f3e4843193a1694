//! One call through a [`ServiceChannel`](super::ServiceChannel): its trace context and
//! deadline, the pick of an instance for each attempt, the attempt itself, the move to another
//! instance when that is safe (see [`RetryPolicy`](super::RetryPolicy)), and the metrics and
//! span of the call when it ends.
//!
//! The path is made to cost little: the caller's headers are copied once per attempt (so a
//! later attempt can send them again) into a map sized for the headers the channel adds; the
//! `traceparent` is written without formatting machinery; `grpc-timeout` values are made once
//! per millisecond; metric series are resolved once per method and instance; and the response
//! body that reports the call's end is the only wrapper around h2's stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::balancer::{Balancer, error_chain};
use super::instance::{InFlight, Instance};
use super::layer::{Attempt, ConnectionError, InstanceService};
use super::metrics::MethodName;
use super::replay;
use super::transport::{Head, Payload, RecvBody, TransportError};
use crate::error::BoxError;
use crate::http2::deadline;
use crate::http2::grpc::GRPC_TIMEOUT;
use crate::metrics::{GrpcType, MethodSeries, grpc_code_name};
use crate::trace::{TRACEPARENT, TraceContext, propagator};

const USER_AGENT: HeaderValue = HeaderValue::from_static(concat!("jovian/", env!("CARGO_PKG_VERSION")));

/// The `traceparent` header's name, made once.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);

/// Headers a later attempt needs that fit here are copied without allocating.
const FEW: usize = 4;

/// A call as the channel keeps it across attempts.
pub(super) struct Call {
    method: http::Method,
    path: http::uri::PathAndQuery,
    /// The caller's headers, for the first attempt.
    headers: Option<HeaderMap>,
    /// A copy of the caller's headers for the attempts after the first, if there may be any.
    saved: Saved,
    extensions: http::Extensions,
    body: Option<Payload>,
    /// The trace context the channel made, when the caller sent no `traceparent`.
    trace: Option<TraceContext>,
    key: Option<u64>,
    deadline: Option<Instant>,
    method_metrics: &'static MethodSeries,
}

/// The caller's headers, kept for another attempt.
enum Saved {
    None,
    Few([Option<(HeaderName, HeaderValue)>; FEW]),
    Many(HeaderMap),
}

impl Saved {
    fn of(headers: &HeaderMap) -> Self {
        if headers.len() > FEW {
            return Saved::Many(headers.clone());
        }
        let mut few: [Option<(HeaderName, HeaderValue)>; FEW] = Default::default();
        for (slot, (name, value)) in few.iter_mut().zip(headers) {
            *slot = Some((name.clone(), value.clone()));
        }
        Saved::Few(few)
    }

    /// The saved headers, in a map with room for `more`.
    fn restore(&self, more: usize) -> HeaderMap {
        match self {
            Saved::None => HeaderMap::with_capacity(more),
            Saved::Few(few) => {
                let mut headers = HeaderMap::with_capacity(FEW + more);
                for (name, value) in few.iter().flatten() {
                    headers.append(name.clone(), value.clone());
                }
                headers
            }
            Saved::Many(many) => {
                let mut headers = HeaderMap::with_capacity(many.len() + more);
                for (name, value) in many {
                    headers.append(name.clone(), value.clone());
                }
                headers
            }
        }
    }
}

impl Call {
    /// The headers of one attempt: the caller's, the trace context, the time left.
    fn headers(&mut self) -> HeaderMap {
        let mut headers = match self.headers.take() {
            Some(headers) => headers,
            None => self.saved.restore(3),
        };
        if let Some(context) = &self.trace {
            headers.insert(TRACEPARENT_HEADER, traceparent_value(context));
        }
        if let Some(deadline) = self.deadline {
            // Each attempt tells the instance how much of the call's time is left.
            headers.insert(GRPC_TIMEOUT, deadline::remaining(deadline));
        }
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(http::header::USER_AGENT, USER_AGENT);
        }
        headers
    }

    /// The body of one attempt.
    fn payload(&mut self, last: bool) -> Payload {
        match &self.body {
            Some(Payload::Complete(data)) if !last => Payload::Complete(data.clone()),
            _ => self.body.take().unwrap_or(Payload::Complete(Bytes::new())),
        }
    }
}

/// Attempts a call may make again after an instance closed a connection gracefully under it,
/// on top of its `max_attempts`: a connection's age running out is nobody's failure.
const MAX_RECONNECTS: usize = 2;

/// How an attempt failed.
enum Failure {
    /// In the transport, or in a layer that did not answer with a status.
    Attempt {
        error: BoxError,
        never_sent: bool,
        /// Never sent because the instance was closing the connection gracefully.
        closing: bool,
    },
    /// A layer's own answer, for the caller as it is.
    Status(Status),
    /// The call's deadline passed.
    TimedOut,
}

impl Failure {
    /// The failure as the caller sees it when it came with the call's `deadline` passed: an
    /// instance that gave up as its copy of the deadline ran out (grpc-go's server resets the
    /// stream) can be heard before the client's own timer fires, and then the deadline is the
    /// news, and the instance is not to blame for a broken transport.
    fn after(self, deadline: Option<Instant>) -> Self {
        match self {
            Failure::Attempt { .. } if deadline.is_some_and(|d| Instant::now() >= d) => Failure::TimedOut,
            failure => failure,
        }
    }
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Self {
        Failure::Attempt {
            never_sent: error.never_sent(),
            closing: error.connection_closing(),
            error: Box::new(error),
        }
    }
}

/// One call's way through its attempts: what every attempt and the call's end need.
struct Run {
    started: Instant,
    method: &'static MethodSeries,
    span: tracing::Span,
    idempotent: bool,
    /// Whether the body is kept for another attempt.
    replayable: bool,
    max_attempts: usize,
    /// The instances that failed the call, not to be picked again.
    tried: Vec<Arc<Instance>>,
    reconnects: usize,
    /// The status the last failed attempt would have given the caller.
    last_failure: Option<Status>,
}

impl Run {
    fn start(balancer: &Balancer, call: &Call) -> Self {
        let method = call.method_metrics;
        method.started.inc();
        let replayable = matches!(call.body, Some(Payload::Complete(_)));
        let retry = &balancer.options.retry;
        Self {
            started: Instant::now(),
            method,
            span: tracing::Span::current(),
            idempotent: retry.is_idempotent(call.path.path()),
            replayable,
            max_attempts: if replayable { retry.max_attempts.max(1) } else { 1 },
            tried: Vec::new(),
            reconnects: 0,
            last_failure: None,
        }
    }

    /// Counts and times a call that failed without a response; returns its status.
    fn end(&self, status: Status) -> BoxError {
        self.method.handled(status.code()).inc();
        self.method.handling.observe(self.started.elapsed().as_secs_f64());
        self.span.record("code", grpc_code_name(status.code()));
        status.into()
    }
}

/// What a call does after a failed attempt.
enum Next {
    /// Another attempt, on another instance or a new connection.
    Retry,
    /// Nothing more: the caller gets this.
    Fail(Status),
}

impl Balancer {
    /// Reads a call's trace context, deadline and method, and keeps its request for the
    /// attempts; returns it with the `grpc.client` span it is sent in.
    pub(super) fn prepare(&self, request: http::Request<Body>) -> (Call, tracing::Span) {
        let key = self.hash_key(&request);
        let (mut parts, body) = request.into_parts();
        let (span, trace) = match propagator() {
            Some(propagator) => {
                let span = tracing::debug_span!(
                    "grpc.client",
                    service = %self.service,
                    method = %parts.uri.path(),
                    instance = tracing::field::Empty,
                    code = tracing::field::Empty,
                );
                if !parts.headers.contains_key(TRACEPARENT_HEADER) {
                    propagator.inject(&span, &mut parts.headers);
                }
                (span, None)
            }
            None => builtin_client_span(&self.service, &parts),
        };
        let body = replay::read_now(body);
        let streaming = matches!(body, Payload::Streaming(_));
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let grpc_type = match self.method_types.get(path.path()) {
            Some(grpc_type) => *grpc_type,
            None if streaming => GrpcType::BidiStream,
            None => GrpcType::Unary,
        };
        let deadline = deadline::of(&parts.headers, self.default_timeout(path.path(), grpc_type));
        let generated = parts.extensions.get::<tonic::GrpcMethod<'static>>();
        let method_metrics = self.methods.get(
            grpc_type,
            &MethodName {
                path: path.path(),
                grpc: generated.map(|m| (m.service(), m.method())),
            },
        );
        // Copied before the first attempt takes them, if a later attempt may need them.
        let saved = match streaming || self.options.retry.max_attempts <= 1 {
            true => Saved::None,
            false => Saved::of(&parts.headers),
        };
        let call = Call {
            method: parts.method,
            path,
            headers: Some(parts.headers),
            saved,
            extensions: parts.extensions,
            body: Some(body),
            trace,
            key,
            deadline,
            method_metrics,
        };
        (call, span)
    }

    /// The deadline of a call to `path` that sets none: the method's own, else its type's.
    fn default_timeout(&self, path: &str, grpc_type: GrpcType) -> Option<std::time::Duration> {
        // Most channels have no method of their own: they do not pay for hashing the path.
        if !self.method_timeouts.is_empty()
            && let Some(timeout) = self.method_timeouts.get(path)
        {
            return Some(*timeout);
        }
        match grpc_type {
            GrpcType::Unary => self.options.timeout,
            _ => self.options.stream_timeout,
        }
    }

    /// Sends a prepared call, within its deadline, moving it to another instance when that is
    /// safe; to be run in the call's span.
    ///
    /// Each round is three steps: [`attempt`](Self::attempt) picks an instance and sends the
    /// call there, once; [`answered`](Self::answered) hands a response to the caller; after a
    /// failure [`decide`](Self::decide) counts it, ejects the instance if it is to blame, and
    /// says whether the call goes on to another attempt.
    pub(super) async fn send(self: Arc<Self>, mut call: Call) -> Result<http::Response<Body>, BoxError> {
        let mut run = Run::start(&self, &call);
        self.budget.deposit();
        loop {
            let picked = self.set.load().pick(&self.sequence, call.key, &run.tried);
            let Some(instance) = picked else {
                // Failing fast completes without waiting on anything, so a caller retrying in a
                // loop would never yield: take from the task's budget like any I/O would.
                tokio::task::consume_budget().await;
                // Nothing left to try: say why the last attempt failed, not that none exist.
                let status = match run.last_failure.take() {
                    Some(status) => status,
                    None => self.unavailable(&self.set.load()),
                };
                return Err(run.end(status));
            };
            let attempt_started = Instant::now();
            let in_flight = Arc::clone(&instance).start_call();
            match self.attempt(&instance, &mut call, &run).await {
                Ok(response) => return self.answered(run, in_flight, attempt_started, response, call.deadline),
                Err(failure) => {
                    drop(in_flight);
                    let failure = failure.after(call.deadline);
                    match self.decide(&mut run, instance, failure, attempt_started) {
                        Next::Retry => continue,
                        Next::Fail(status) => return Err(run.end(status)),
                    }
                }
            }
        }
    }

    /// One attempt of `call` on `instance`, through the application's layers if there are
    /// any, within the call's deadline.
    async fn attempt(
        &self,
        instance: &Arc<Instance>,
        call: &mut Call,
        run: &Run,
    ) -> Result<http::Response<Inner>, Failure> {
        let number = run.tried.len() + 1;
        let last = number >= run.max_attempts;
        let headers = call.headers();
        self.picks.inc();
        run.span.record("instance", instance.info.address.as_str());
        let deadline = call.deadline;
        let outcome = if self.layers.is_empty() {
            let attempt = self.direct_attempt(instance, call, headers, last);
            within(deadline, attempt)
                .await
                .map(|r| r.map(|response| response.map(Inner::H2)))
        } else {
            // Boxed: it is big, and only channels with layers pay for it.
            let attempt = Box::pin(self.layered_attempt(instance, call, headers, last, number));
            within(deadline, attempt)
                .await
                .map(|r| r.map(|response| response.map(Inner::Layered)))
        };
        outcome.unwrap_or(Err(Failure::TimedOut))
    }

    /// Hands a response to the caller, in a body that reports the call's end.
    fn answered(
        self: Arc<Self>,
        run: Run,
        in_flight: InFlight,
        attempt_started: Instant,
        response: http::Response<Inner>,
        deadline: Option<Instant>,
    ) -> Result<http::Response<Body>, BoxError> {
        let instance = &in_flight.instance;
        instance.succeeded(attempt_started.elapsed());
        if deadline.is_some_and(|d| Instant::now() >= d)
            && crate::http2::grpc::status(response.headers()) == Some(Code::Cancelled)
        {
            // The server's copy of the deadline ran out as the caller's did, and a tonic server
            // says so with Cancelled: the caller's deadline is the news.
            let status = Status::deadline_exceeded(format!(
                "the call to `{}` did not finish within its deadline (instance {} gave up too)",
                self.service, instance.info.address
            ));
            return Err(run.end(status));
        }
        let end = End {
            in_flight,
            method: run.method,
            started: run.started,
            attempt_started,
            span: run.span,
            balancer: self,
        };
        Ok(observe(response, end, deadline))
    }

    /// After a failed attempt on `instance`: counts it, blames the instance if the failure is
    /// its own, and says whether the call is tried again.
    fn decide(&self, run: &mut Run, instance: Arc<Instance>, failure: Failure, attempt_started: Instant) -> Next {
        let code = match &failure {
            Failure::TimedOut => Code::DeadlineExceeded,
            Failure::Status(status) => status.code(),
            Failure::Attempt { .. } => Code::Unavailable,
        };
        let series = instance.metrics(&self.service);
        series.latency.observe(attempt_started.elapsed().as_secs_f64());
        super::metrics::attempt_failed(&self.service, &instance.info.address, code);
        let (error, never_sent) = match failure {
            Failure::Status(status) => return Next::Fail(status),
            Failure::TimedOut => {
                self.timed_out(&instance);
                return Next::Fail(Status::deadline_exceeded(format!(
                    "the call to `{}` did not finish within its deadline (last instance tried: {})",
                    self.service, instance.info.address
                )));
            }
            Failure::Attempt {
                error, closing: true, ..
            } if run.replayable && run.reconnects < MAX_RECONNECTS => {
                // The instance closed its connection gracefully (it got old, or the instance
                // is stopping) before the request went: the instance may take it on a new
                // connection, and is not to blame.
                run.reconnects += 1;
                tracing::debug!(service = %self.service, %error, "sending the call again on a new connection");
                return Next::Retry;
            }
            Failure::Attempt { error, never_sent, .. } => (error, never_sent),
        };
        self.eject(&self.set.load(), &instance, &error);
        // gRPC clients report a broken transport as UNAVAILABLE, and retry policies key on it.
        let failure = Status::unavailable(format!(
            "instance {} of `{}` failed: {}",
            instance.info.address,
            self.service,
            error_chain(&*error)
        ));
        run.tried.push(instance);
        let may_retry =
            run.tried.len() < run.max_attempts && (never_sent || (run.idempotent && self.budget.withdraw()));
        if !may_retry {
            return Next::Fail(failure);
        }
        tracing::debug!(service = %self.service, %error, never_sent, "sending the call to another instance");
        run.last_failure = Some(failure);
        Next::Retry
    }

    /// One attempt straight on the instance's connection: one future, the connect (on a new
    /// connection only) and the response the only waits.
    async fn direct_attempt(
        &self,
        instance: &Instance,
        call: &mut Call,
        headers: HeaderMap,
        last: bool,
    ) -> Result<http::Response<RecvBody>, Failure> {
        let link = instance.link(&self.connector)?;
        let head = Head {
            method: call.method.clone(),
            path: call.path.clone(),
            headers,
        };
        Ok(link.call(head, call.payload(last)).await?)
    }

    /// Counts a call that ran out of time on `instance`, which is ejected after
    /// `ejection.after_timeouts` in a row: frozen instances that no ping catches (see
    /// `ConnectionOptions::keepalive_interval`) are caught here.
    fn timed_out(&self, instance: &Arc<Instance>) {
        if instance.timed_out() >= self.options.ejection.after_timeouts {
            self.eject(&self.set.load(), instance, &"calls timed out in a row");
        }
    }

    /// One attempt through the application's layers.
    async fn layered_attempt(
        &self,
        instance: &Arc<Instance>,
        call: &mut Call,
        headers: HeaderMap,
        last: bool,
        number: usize,
    ) -> Result<http::Response<Body>, Failure> {
        let service = instance
            .service(|| {
                let link = instance.link(&self.connector)?;
                let mut service = InstanceService::connection(Arc::clone(&instance.info), Arc::clone(link));
                for layer in self.layers.iter().rev() {
                    service = layer(service);
                }
                Ok(service)
            })
            .map_err(|error| Failure::Attempt {
                error,
                never_sent: true,
                closing: false,
            })?;
        let body = match call.payload(last) {
            Payload::Complete(data) => Body::new(http_body_util::Full::new(data)),
            Payload::Streaming(body) => body,
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = http::Uri::from(call.path.clone());
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = headers;
        *request.extensions_mut() = if last {
            std::mem::take(&mut call.extensions)
        } else {
            call.extensions.clone()
        };
        request
            .extensions_mut()
            .insert(Attempt::new(Arc::clone(&instance.info), number));
        service
            .oneshot(request)
            .await
            .map_err(|error| match error.downcast::<Status>() {
                Ok(status) => Failure::Status(*status),
                Err(error) => {
                    let transport = source_chain(&*error).find_map(|e| e.downcast_ref::<ConnectionError>());
                    Failure::Attempt {
                        never_sent: transport.is_some_and(ConnectionError::never_sent),
                        closing: transport.is_some_and(ConnectionError::connection_closing),
                        error,
                    }
                }
            })
    }
}

/// `future` until `deadline`; `None` when the deadline passed first. A plain function (no
/// `async`), so the future is the timed one alone, not it and the future it was made from.
fn within<F: Future>(deadline: Option<Instant>, future: F) -> impl Future<Output = Option<F::Output>> {
    match deadline {
        Some(deadline) => Either::Left(tokio::time::timeout_at(deadline.into(), future).map(Result::ok)),
        None => Either::Right(future.map(Some)),
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The `grpc.client` span of a call under jovian's own ids, and the context the channel made
/// for it. A `traceparent` the caller set (an interceptor, say) is theirs to keep and no
/// context is made. Otherwise the call continues the trace being served; outside a served
/// call it starts a trace only when its span is recorded. An unrecorded new trace is an id
/// nobody can ever look up, and its header costs every server on every call (7 µs of CPU for a
/// grpc-go server, BENCHMARKS.md); the server starts a trace of its own instead.
fn builtin_client_span(service: &str, parts: &http::request::Parts) -> (tracing::Span, Option<TraceContext>) {
    let span = tracing::debug_span!(
        "grpc.client",
        service = %service,
        method = %parts.uri.path(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        instance = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    let given = parts
        .headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let recorded = !span.is_disabled();
    let (context, made) = match given {
        Some(given) => (Some(given), false),
        None => match TraceContext::current() {
            Some(served) => (Some(served.child()), true),
            None => (recorded.then(TraceContext::root), true),
        },
    };
    if let Some(context) = context.filter(|_| recorded) {
        span.record("trace_id", tracing::field::display(context.trace_hex()));
        span.record("span_id", tracing::field::display(context.span_hex()));
    }
    (span, context.filter(|_| made))
}

/// A `traceparent` value for `context`, sampled; marked sensitive, so HTTP/2 header
/// compression sends it as a literal instead of filling the connection's table with values
/// that never repeat (and evicting the ones that do).
fn traceparent_value(context: &TraceContext) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    for (i, shift) in (0..32).rev().enumerate() {
        out[3 + i] = HEX[((context.trace_id >> (shift * 4)) & 0xf) as usize];
    }
    out[35] = b'-';
    for (i, shift) in (0..16).rev().enumerate() {
        out[36 + i] = HEX[((context.span_id >> (shift * 4)) & 0xf) as usize];
    }
    out[52..].copy_from_slice(b"-01");
    let mut value = HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value");
    value.set_sensitive(true);
    value
}

/// The response body of a call, as h2 gives it or as the layers do.
enum Inner {
    H2(RecvBody),
    Layered(Body),
    /// Dropped when the call's deadline passed: h2 resets the stream.
    TimedOut,
}

/// Reports the call's end: metrics, the span's code, the instance's in-flight count; and ends
/// the call when its deadline passes while the body or the trailers are awaited.
struct Observed {
    inner: Inner,
    end: Option<End>,
    /// The status of a trailers-only response, or what the HTTP status says.
    code: Option<Code>,
    deadline: Option<Instant>,
    /// Set once the body has had to wait, with a deadline.
    timer: Option<Pin<Box<Sleep>>>,
}

struct End {
    in_flight: InFlight,
    method: &'static MethodSeries,
    started: Instant,
    attempt_started: Instant,
    span: tracing::Span,
    balancer: Arc<Balancer>,
}

fn observe(response: http::Response<Inner>, end: End, deadline: Option<Instant>) -> http::Response<Body> {
    let code = crate::http2::grpc::status(response.headers()).or_else(|| http_code(response.status()));
    response.map(|inner| {
        let mut body = Observed {
            inner,
            end: Some(end),
            code,
            deadline,
            timer: None,
        };
        // A trailers-only response (or an HTTP error) has ended already.
        if body.code.is_some() && http_body::Body::is_end_stream(&body) {
            body.end(body.code);
        }
        Body::new(body)
    })
}

impl Observed {
    fn end(&mut self, code: Option<Code>) {
        let Some(end) = self.end.take() else {
            return;
        };
        let code = code.unwrap_or(Code::Unknown);
        end.method.handled(code).inc();
        end.method.handling.observe(end.started.elapsed().as_secs_f64());
        let instance = &end.in_flight.instance;
        let series = instance.metrics(&instance.info.name);
        match code {
            Code::Ok => series.ok.inc(),
            other => super::metrics::attempt_failed(&instance.info.name, &instance.info.address, other),
        }
        match code {
            Code::DeadlineExceeded => end.balancer.timed_out(instance),
            // The caller went away: nothing is known of the instance.
            Code::Cancelled => {}
            _ => instance.answered_in_time(),
        }
        series.latency.observe(end.attempt_started.elapsed().as_secs_f64());
        end.span.record("code", grpc_code_name(code));
    }

    /// Whether the call's deadline has passed, noting to be woken when it does.
    fn out_of_time(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        timer.as_mut().poll(cx).is_ready()
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = match &mut self.inner {
            Inner::H2(body) => Pin::new(body).poll_frame(cx),
            Inner::Layered(body) => Pin::new(body).poll_frame(cx),
            Inner::TimedOut => return Poll::Ready(None),
        };
        let Poll::Ready(polled) = polled else {
            if !self.out_of_time(cx) {
                return Poll::Pending;
            }
            // The instance sent the head but not the rest in time (a stalled or endless
            // body, or trailers that never come): the call ends as any timed-out call does.
            self.inner = Inner::TimedOut;
            let instance = self.end.as_ref().map(|end| end.in_flight.instance.info.address.clone());
            self.end(Some(Code::DeadlineExceeded));
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the call did not finish within its deadline (instance {} had not sent all of its response)",
                instance.unwrap_or_default()
            )))));
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = crate::http2::grpc::status(trailers).or(self.code);
                    self.end(code);
                }
            }
            Some(Err(status)) if self.deadline.is_some_and(|d| Instant::now() >= d) => {
                // The instance gave up on the call as its deadline passed (grpc-go's server
                // resets the stream), heard before this body's own timer fired: the caller's
                // deadline is the news, not how the instance said so.
                let status = Status::deadline_exceeded(format!(
                    "the call did not finish within its deadline (the instance ended it: {})",
                    status.message()
                ));
                self.inner = Inner::TimedOut;
                self.end(Some(Code::DeadlineExceeded));
                return Poll::Ready(Some(Err(status)));
            }
            Some(Err(status)) => self.end(Some(status.code())),
            None => {
                let code = self.code;
                self.end(code);
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H2(body) => body.is_end_stream(),
            Inner::Layered(body) => body.is_end_stream(),
            Inner::TimedOut => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.inner {
            Inner::H2(body) => body.size_hint(),
            Inner::Layered(body) => body.size_hint(),
            Inner::TimedOut => http_body::SizeHint::with_exact(0),
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // Abandoned before its end: the caller went away.
        self.end(Some(Code::Cancelled));
    }
}

/// The code a response without `grpc-status` has by its HTTP status, as gRPC maps them; none
/// for 200, whose status comes in the trailers.
fn http_code(status: http::StatusCode) -> Option<Code> {
    use http::StatusCode as S;
    Some(match status {
        S::OK => return None,
        S::BAD_REQUEST => Code::Internal,
        S::UNAUTHORIZED => Code::Unauthenticated,
        S::FORBIDDEN => Code::PermissionDenied,
        S::NOT_FOUND => Code::Unimplemented,
        S::TOO_MANY_REQUESTS | S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_attempt_heard_after_the_deadline_is_the_deadline() {
        use std::time::Duration;
        let broken = || Failure::Attempt {
            error: "stream error received: stream no longer needed".into(),
            never_sent: false,
            closing: false,
        };
        let passed = Instant::now() - Duration::from_millis(1);
        let ahead = Instant::now() + Duration::from_secs(60);
        assert!(matches!(broken().after(Some(passed)), Failure::TimedOut));
        assert!(matches!(broken().after(Some(ahead)), Failure::Attempt { .. }));
        assert!(matches!(broken().after(None), Failure::Attempt { .. }));
        // A layer's own status is the caller's answer, deadline or not.
        let status = Failure::Status(Status::cancelled("a layer said so"));
        assert!(matches!(status.after(Some(passed)), Failure::Status(_)));
    }

    #[test]
    fn traceparent_values_parse_back() {
        for _ in 0..100 {
            let context = TraceContext::root();
            let value = traceparent_value(&context);
            assert_eq!(value.to_str().unwrap(), context.to_string());
            assert_eq!(TraceContext::parse(value.to_str().unwrap()), Some(context));
        }
    }
}
