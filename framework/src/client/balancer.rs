//! The instance set a [`ServiceChannel`](super::ServiceChannel) picks from, how snapshots update
//! it, and how one call is dispatched.
//!
//! Picks read an immutable candidate list through an atomic pointer: no lock on the call path.
//! Each snapshot is applied as what changed since the last one (O(changed), not O(N)):
//! instances whose entry is unchanged are not touched and keep their state (connection,
//! in-flight count, latency, ejection), re-announced ones keep the connection with fresh state,
//! new ones get a channel on their first call (so a client of a large service holds nothing
//! per instance it never calls), removed ones are dropped with their metric series.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::ServiceExt;
use tracing::Instrument;

use super::budget::RetryBudget;
use super::deadline;
use super::instance::Instance;
use super::options::{ClientOptions, ClientTls, HashKey, Policy};
use super::policy::{Picker, hash};
use super::replay::Outgoing;
use super::slots::{Chunked, Slots};
use crate::error::BoxError;
use crate::metrics::metrics;
use crate::observe::ObservedBody;
use crate::trace::{TRACEPARENT, TraceContext};
use crate::{Change, Discovery, Error, Instances, InstancesWatch, ServiceInfo};

pub(super) struct Balancer {
    service: Arc<str>,
    options: ClientOptions,
    tls: Option<ClientTlsConfig>,
    set: ArcSwap<InstanceSet>,
    sequence: AtomicU64,
    budget: RetryBudget,
    picks: prometheus::IntCounter,
    /// The updating side of `set`, used only by the task that follows the registry.
    updater: Mutex<Updater>,
}

/// One snapshot's worth of instances, ready to pick from.
struct InstanceSet {
    /// Every instance that passes the filter.
    admitted: Chunked<Arc<Instance>>,
    /// Those calls go to: the preferred zone's, or all when that zone has too few.
    candidates: Chunked<Arc<Instance>>,
    picker: Picker,
    registered: usize,
}

/// What the instance set was built from, kept to apply the next snapshot as a change.
struct Updater {
    applied: Instances,
    admitted: Slots<Arc<Instance>>,
    /// The admitted instances in the filter's preferred zone (none without a preference).
    local: Slots<Arc<Instance>>,
}

impl Balancer {
    pub(super) fn new(service: &str, options: ClientOptions) -> crate::Result<Arc<Self>> {
        let tls = options.connection.tls.as_ref().map(tls_config).transpose()?;
        let retry = &options.retry;
        let budget = RetryBudget::new(retry.budget_ratio, retry.budget_min_per_second);
        let set = InstanceSet::empty(&options.policy);
        let picks = metrics()
            .client_picks
            .with_label_values(&[service, options.policy.name()]);
        Ok(Arc::new(Self {
            service: service.into(),
            options,
            tls,
            set: ArcSwap::from_pointee(set),
            // A random start, so that short-lived clients do not all begin with the same instance.
            sequence: AtomicU64::new(rand::random::<u32>().into()),
            budget,
            picks,
            updater: Mutex::new(Updater {
                applied: Instances::new(service, 0),
                admitted: Slots::new(),
                local: Slots::new(),
            }),
        }))
    }

    pub(super) fn service(&self) -> &str {
        &self.service
    }

    pub(super) fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(super) fn len(&self) -> usize {
        self.set.load().candidates.len()
    }

    pub(super) fn instances(&self) -> Vec<ServiceInfo> {
        self.set.load().candidates.iter().map(|i| (*i.info).clone()).collect()
    }

    /// Each candidate with whether it is ejected, its calls in flight and its latency (µs).
    pub(super) fn instance_states(&self) -> Vec<(ServiceInfo, bool, usize, u64)> {
        let set = self.set.load();
        set.candidates
            .iter()
            .map(|i| ((*i.info).clone(), i.is_ejected(), i.in_flight(), i.latency_us()))
            .collect()
    }

    /// One pick exactly as a call makes it, without the call.
    pub(super) fn pick_once(&self, key: Option<&[u8]>) -> bool {
        self.set.load().pick(&self.sequence, key.map(hash), &[]).is_some()
    }

    pub(super) fn ejected(&self) -> Vec<ServiceInfo> {
        let set = self.set.load();
        set.admitted
            .iter()
            .filter(|i| i.is_ejected())
            .map(|i| (*i.info).clone())
            .collect()
    }

    /// Sends one call in a `grpc.client` span carrying its trace context, within its deadline,
    /// moving it to another instance when that is safe (see [`RetryPolicy`](super::RetryPolicy)).
    pub(super) async fn dispatch(&self, mut request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        // A `traceparent` the caller set (an interceptor, an OpenTelemetry layer) is theirs to
        // keep; otherwise the call continues the trace being served, or starts one.
        let given = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let context = match given {
            Some(given) => given,
            None => {
                let context = TraceContext::current().map_or_else(TraceContext::root, |c| c.child());
                if let Ok(value) = http::HeaderValue::from_str(&context.to_string()) {
                    request.headers_mut().insert(TRACEPARENT, value);
                }
                context
            }
        };
        let deadline = deadline::of(&request, self.options.timeout);
        let span = tracing::debug_span!(
            "grpc.client",
            service = %self.service,
            method = %request.uri().path(),
            trace_id = %context.trace_hex(),
            span_id = %context.span_hex(),
            instance = tracing::field::Empty,
            code = tracing::field::Empty,
        );
        self.send(request, deadline).instrument(span).await
    }

    async fn send(
        &self,
        request: http::Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<http::Response<Body>, BoxError> {
        let key = self.hash_key(&request);
        let idempotent = self.options.retry.is_idempotent(request.uri().path());
        self.budget.deposit();
        let (replayable, mut once) = match Outgoing::new(request) {
            Outgoing::Replayable(replayable) => (Some(replayable), None),
            Outgoing::Once(request) => (None, Some(request)),
        };
        let mut tried: Vec<Arc<Instance>> = Vec::new();
        let mut last_failure = None;
        loop {
            let set = self.set.load_full();
            let Some(instance) = set.pick(&self.sequence, key, &tried) else {
                // Failing fast completes without waiting on anything, so a caller retrying in a
                // loop would never yield: take from the task's budget like any I/O would.
                tokio::task::consume_budget().await;
                // Nothing left to try: say why the last attempt failed, not that none exist.
                return Err(last_failure.unwrap_or_else(|| self.unavailable(&set)).into());
            };
            let mut request = match &replayable {
                Some(replayable) => replayable.build(),
                None => once.take().expect("a request that cannot be replayed is sent once"),
            };
            if let Some(deadline) = deadline {
                // Each attempt tells the instance how much of the call's time is left.
                deadline::set_remaining(&mut request, deadline);
            }
            self.picks.inc();
            let span = tracing::Span::current();
            span.record("instance", instance.info.address.as_str());
            let started = Instant::now();
            let in_flight = instance.start_call();
            let channel = match instance.channel(|| self.connect(&instance.info)) {
                Ok(channel) => channel,
                Err(status) => return Err(status.into()),
            };
            let call = channel.oneshot(request);
            // `None`: the deadline passed first.
            let outcome = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), call).await.ok(),
                None => Some(call.await),
            };
            in_flight.finish(matches!(outcome, Some(Ok(_))));
            let error = match outcome {
                Some(Ok(response)) => return Ok(self.observe(response, instance, started, span)),
                Some(Err(error)) => Some(error),
                None => None,
            };
            let timed_out = error.as_ref().is_none_or(deadline::expired);
            let code = if timed_out { "DeadlineExceeded" } else { "Unavailable" };
            let labels = [&*self.service, instance.info.address.as_str(), code];
            metrics().client_calls.with_label_values(&labels).inc();
            instance
                .metrics(&self.service)
                .latency
                .observe(started.elapsed().as_secs_f64());
            let Some(error) = error.filter(|_| !timed_out) else {
                if instance.timed_out() >= self.options.ejection.after_timeouts {
                    self.eject(&set, &instance, &"calls timed out in a row");
                }
                return Err(Status::deadline_exceeded(format!(
                    "the call to `{}` did not finish within its deadline (last instance tried: {})",
                    self.service, instance.info.address
                ))
                .into());
            };
            let never_sent = never_reached_the_instance(&error);
            self.eject(&set, &instance, &error);
            // gRPC clients report a broken transport as UNAVAILABLE, and retry policies key on it.
            let failure = Status::unavailable(format!(
                "instance {} of `{}` failed: {}",
                instance.info.address,
                self.service,
                error_chain(&error)
            ));
            tried.push(instance);
            let may_retry = replayable.is_some()
                && tried.len() < self.options.retry.max_attempts
                && (never_sent || (idempotent && self.budget.withdraw()));
            if !may_retry {
                return Err(failure.into());
            }
            tracing::debug!(service = %self.service, %error, never_sent, "sending the call to another instance");
            last_failure = Some(failure);
        }
    }

    /// Counts and times the call when its response ends.
    fn observe(
        &self,
        response: http::Response<Body>,
        instance: Arc<Instance>,
        started: Instant,
        span: tracing::Span,
    ) -> http::Response<Body> {
        let service = Arc::clone(&self.service);
        ObservedBody::wrap(
            response,
            Box::new(move |code| {
                let series = instance.metrics(&service);
                match code {
                    "Ok" => series.ok.inc(),
                    other => {
                        let labels = [&*service, instance.info.address.as_str(), other];
                        metrics().client_calls.with_label_values(&labels).inc();
                    }
                }
                series.latency.observe(started.elapsed().as_secs_f64());
                span.record("code", code);
            }),
        )
    }

    /// Applies the watch's current snapshot, then every later one, until the watch ends. On
    /// its end the last instance set stays: registry trouble never empties a client.
    pub(super) fn follow(
        self: &Arc<Self>,
        mut watch: InstancesWatch,
        registry: Arc<dyn Discovery>,
    ) -> tokio::task::JoinHandle<()> {
        self.apply(&watch.current());
        let balancer = Arc::clone(self);
        tokio::spawn(async move {
            let _registry = registry;
            while let Ok(snapshot) = watch.changed().await {
                balancer.apply(&snapshot);
            }
            tracing::debug!(service = %balancer.service, "registry watch ended; keeping the last instance set");
        })
    }

    /// Applies what changed from the last snapshot applied to `snapshot`.
    fn apply(&self, snapshot: &Instances) {
        let mut updater = self.updater.lock().expect("balancer updater lock");
        let updater = &mut *updater;
        let previous = std::mem::replace(&mut updater.applied, snapshot.clone());
        let mut gone = Vec::new();
        for change in snapshot.changes_since(&previous) {
            match change {
                Change::Added(info) => self.admit(updater, info, None),
                Change::Removed(info) => gone.extend(updater.remove(&info.uri())),
                Change::Updated { new, .. } => {
                    // Re-announced or re-configured: fresh state, but the connection stays.
                    let old = updater.remove(&new.uri());
                    self.admit(updater, new, old.as_ref().and_then(|o| o.existing_channel()));
                    gone.extend(old.filter(|_| updater.admitted.get(&new.uri()).is_none()));
                }
            }
        }
        let filter = &self.options.filter;
        let local_enough = updater.local.len() >= filter.min_zone_instances.max(1);
        let chosen = match filter.zone.is_some() && local_enough {
            true => &updater.local,
            false => &updater.admitted,
        };
        let candidates = chosen.list().clone();
        tracing::debug!(
            service = %self.service,
            registered = snapshot.len(),
            candidates = candidates.len(),
            revision = snapshot.revision(),
            "instance set updated"
        );
        metrics()
            .client_instances
            .with_label_values(&[&self.service])
            .set(candidates.len() as i64);
        let picker = Picker::build(&self.options.policy, &candidates, chosen.max_weight());
        self.set.store(Arc::new(InstanceSet {
            admitted: updater.admitted.list().clone(),
            candidates,
            picker,
            registered: snapshot.len(),
        }));
        // Their series would otherwise stay forever: addresses churn, the metrics must not grow.
        for instance in gone {
            instance.forget_metrics(&self.service);
        }
    }

    /// Adds `info` to the instance set if the filter admits it and its address can be dialled.
    fn admit(&self, updater: &mut Updater, info: &Arc<ServiceInfo>, channel: Option<Channel>) {
        let filter = &self.options.filter;
        if !filter.admits(info) || !valid_address(info) {
            return;
        }
        let instance = Arc::new(Instance::new(Arc::clone(info), channel));
        if filter.zone.as_ref().is_some_and(|zone| *zone == info.zone) {
            updater.local.put(Arc::clone(&instance));
        }
        updater.admitted.put(instance);
    }

    /// A lazily connecting channel to `info`'s address, made on the instance's first call.
    fn connect(&self, info: &ServiceInfo) -> Result<Channel, Status> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{}", info.address))
            .map_err(|e| Status::internal(format!("instance {info} has an unusable address: {e}")))?;
        let connection = &self.options.connection;
        let mut endpoint = endpoint
            .connect_timeout(connection.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(connection.keepalive_interval)
            .keep_alive_timeout(connection.keepalive_timeout)
            .keep_alive_while_idle(false);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Status::internal(format!("cannot set up TLS to {info}: {e}")))?;
        }
        Ok(endpoint.connect_lazy())
    }

    /// Sets a failing instance aside for its back-off, unless it is the last one available or
    /// already set aside for this failure episode.
    fn eject(&self, set: &InstanceSet, instance: &Arc<Instance>, reason: &dyn std::fmt::Display) {
        let others = set
            .candidates
            .iter()
            .any(|c| !Arc::ptr_eq(c, instance) && !c.is_ejected());
        if !others {
            instance.failed_without_ejection();
            return;
        }
        let ejection = &self.options.ejection;
        if let Some(period) = instance.eject(ejection.base, ejection.max) {
            metrics()
                .client_ejections
                .with_label_values(&[&*self.service, instance.info.address.as_str()])
                .inc();
            tracing::info!(service = %self.service, instance = %instance.info.address, ?period, %reason, "instance ejected");
        }
    }

    fn hash_key(&self, request: &http::Request<Body>) -> Option<u64> {
        let Policy::ConsistentHash(source) = &self.options.policy else {
            return None;
        };
        match source {
            HashKey::Header(name) => request.headers().get(name).map(|v| hash(v.as_bytes())),
            HashKey::Custom(key) => key(request).map(|k| hash(&k)),
        }
    }

    fn unavailable(&self, set: &InstanceSet) -> Status {
        Status::unavailable(format!(
            "no available instance of service `{}` ({} registered, none {})",
            self.service, set.registered, self.options.filter
        ))
    }
}

impl Updater {
    /// Takes the instance at `uri` out of the set; returns it.
    fn remove(&mut self, uri: &str) -> Option<Arc<Instance>> {
        self.local.remove(uri);
        self.admitted.remove(uri)
    }
}

impl InstanceSet {
    fn empty(policy: &Policy) -> Self {
        Self {
            admitted: Chunked::new(),
            candidates: Chunked::new(),
            picker: Picker::build(policy, &Chunked::new(), 0),
            registered: 0,
        }
    }

    /// The policy's choice if it can take the call; else the policy's next choices; else the
    /// first that can in the policy's fallback order; else, as a last resort, an unusable one
    /// not yet tried for this call.
    ///
    /// Drawing again (rather than taking the next in order) spreads an unusable instance's
    /// share over the others as the policy spreads everything: round robin skipping a dead
    /// instance stays even instead of doubling the load on the dead one's neighbour. A hashed
    /// key keeps its stable clockwise fallback instead.
    fn pick(&self, sequence: &AtomicU64, key: Option<u64>, tried: &[Arc<Instance>]) -> Option<Arc<Instance>> {
        let n = self.candidates.len();
        if self.candidates.is_empty() {
            return None;
        }
        let untried = |i: &Arc<Instance>| !tried.iter().any(|t| Arc::ptr_eq(t, i));
        let takes = |i: &Arc<Instance>| i.is_usable() && untried(i);
        let first = self.picker.pick(&self.candidates, sequence, key);
        if takes(self.candidates.get(first)) {
            return Some(Arc::clone(self.candidates.get(first)));
        }
        let hashed = key.is_some() && matches!(self.picker, Picker::Hash(_));
        if !hashed {
            for _ in 1..n.min(MAX_DRAWS) {
                let next = self.candidates.get(self.picker.pick(&self.candidates, sequence, key));
                if takes(next) {
                    return Some(Arc::clone(next));
                }
            }
        }
        let order = self.picker.fallback_order(first, n, key);
        let usable = |last_resort: bool| {
            order
                .iter()
                .chain([&first])
                .map(|&i| self.candidates.get(i))
                .find(|c| untried(c) && (last_resort || c.is_usable()))
                .cloned()
        };
        usable(false).or_else(|| usable(true))
    }
}

/// Draws of the policy per call before scanning for any usable instance.
const MAX_DRAWS: usize = 16;

/// Whether `info`'s address can be dialled at all; others are skipped when a snapshot is applied.
fn valid_address(info: &ServiceInfo) -> bool {
    let valid = info
        .address
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.port_u16().is_some());
    if !valid {
        tracing::warn!(instance = %info, "skipping an instance whose address is not a valid host:port");
    }
    valid
}

/// Whether a failed call certainly never reached the instance, so sending it elsewhere cannot
/// run it twice: the connection could not be made, or it closed before the request was sent,
/// or the server refused the stream unprocessed.
fn never_reached_the_instance(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// An error and its causes, for a message that says what actually happened.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn tls_config(tls: &ClientTls) -> crate::Result<ClientTlsConfig> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config {
            key: format!("client.tls.{key}"),
            expected: "a readable PEM file".into(),
            found: format!("{}: {e}", path.display()),
        })
    };
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(Certificate::from_pem(read("ca", ca)?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}
