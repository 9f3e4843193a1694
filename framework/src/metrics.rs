//! The process's Prometheus metrics, served by the governor at `/metrics`.
//!
//! One registry per process, as in every Go framework of this kind: servers, clients and
//! registries all count into it, and applications add their own through [`registry`].
//!
//! Servers keep the family go-grpc-prometheus (grpc-ecosystem) defines, so dashboards and
//! alerts written for Go services work unchanged:
//!
//! | metric | labels |
//! |---|---|
//! | `grpc_server_started_total` | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_handled_total` | `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code` |
//! | `grpc_server_handling_seconds` (histogram) | `grpc_type`, `grpc_service`, `grpc_method` |
//!
//! `grpc_service` and `grpc_method` split the call's path (`/helloworld.Greeter/SayHello` is
//! `helloworld.Greeter` and `SayHello`); `grpc_code` is the code's name as
//! [`grpc_code_name`] gives it (`OK`, `NotFound`, `Unavailable`, ...); `grpc_type` is
//! [`GrpcType`]. Label values are bounded whatever callers send: only methods the server
//! offers and that a call actually reached are labelled, and every other path is one
//! `unknown` series.

use std::sync::OnceLock;

use std::fmt;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric jovian keeps. A registry crate keeps its own (leases, watches, bad entries)
/// and registers them on [`registry()`], so one `/metrics` serves all of them.
pub struct Metrics {
    registry: Registry,
    /// `grpc_server_started_total`: calls that began, by type, service and method.
    pub server_started: IntCounterVec,
    /// `grpc_server_handled_total`: calls that ended, by type, service, method and code.
    pub server_handled: IntCounterVec,
    /// `grpc_server_handling_seconds`: how long calls took until they ended, by type, service
    /// and method.
    pub server_handling_seconds: HistogramVec,
    /// `grpc_client_started_total`: calls a client began, by gRPC type, service and method.
    pub client_started: IntCounterVec,
    /// `grpc_client_handled_total`: calls a client finished, by gRPC type, service, method and
    /// code, whatever instances and attempts it took.
    pub client_handled: IntCounterVec,
    /// `grpc_client_handling_seconds`: how long calls took until they finished, by gRPC type,
    /// service and method.
    pub client_handling_seconds: HistogramVec,
    /// `jovian_client_attempts_total`: attempts sent to each instance, by (jovian) service,
    /// instance and the attempt's gRPC code.
    pub client_attempts: IntCounterVec,
    /// `jovian_client_attempt_seconds`: how long attempts on each instance took, by service and
    /// instance.
    pub client_attempt_seconds: HistogramVec,
    /// `jovian_client_picks_total`: instances picked for an attempt, by service and policy.
    pub client_picks: IntCounterVec,
    /// `jovian_client_ejections_total`: instances ejected after failures, by service and
    /// instance.
    pub client_ejections: IntCounterVec,
    /// `jovian_client_instances`: instances a client may call, by service.
    pub client_instances: IntGaugeVec,
    /// Registry operations, by registry kind, operation and result (`ok` or `error`).
    pub registry_operations: IntCounterVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The process's Prometheus registry: register an application's own collectors here and the
/// governor's `/metrics` serves them beside jovian's.
///
/// ```
/// let orders = prometheus::IntCounter::new("orders_total", "Orders taken.").unwrap();
/// jovian::metrics::registry().register(Box::new(orders.clone())).unwrap();
/// orders.inc();
/// assert!(jovian::metrics::render().contains("orders_total 1"));
/// ```
pub fn registry() -> &'static Registry {
    &metrics().registry
}

/// Everything in the Prometheus text exposition format.
pub fn render() -> String {
    let families = metrics().registry.gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
}

/// Every gRPC status code's name, indexed by the code's number, as [`grpc_code_name`] gives it.
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// A gRPC status code's name as a metric label: the names grpc-go gives codes
/// (`codes.Code.String()`), which go-grpc-prometheus puts in `grpc_code`, so a dashboard's
/// `grpc_code!="OK"` or `grpc_code="Unavailable"` means the same for jovian and Go services.
///
/// ```
/// use jovian::metrics::grpc_code_name;
///
/// assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
/// assert_eq!(grpc_code_name(tonic::Code::NotFound), "NotFound");
/// assert_eq!(grpc_code_name(tonic::Code::Cancelled), "Canceled");
/// ```
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    // `tonic::Code` is numbered as gRPC numbers codes, 0 to 16, and so is the table.
    GRPC_CODE_NAMES[code as usize]
}

/// The kind of a gRPC method, the `grpc_type` label: `unary`, `client_stream`,
/// `server_stream` or `bidi_stream`, as go-grpc-prometheus writes it.
///
/// A call does not say what kind of method it calls, and tonic's generated code does not tell
/// either. A server takes every method for unary unless told otherwise with
/// `GrpcServer::method_type`; a client takes a call whose
/// request was complete when it was made for unary and any other for bidi-streaming, unless
/// told otherwise with `ClientBuilder::method_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcType {
    /// One request, one response.
    #[default]
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl GrpcType {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ClientStream => "client_stream",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
        }
    }
}

impl fmt::Display for GrpcType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One method's series of a go-grpc-prometheus family (`*_started_total`, `*_handled_total`,
/// `*_handling_seconds`), resolved once: a call then counts without a label lookup (hashing
/// every label value and locking the family), which profiling showed on every server call.
/// The `handled` series of a code is resolved the first time a call ends with it, so only
/// codes that happened are exported, as before.
pub(crate) struct MethodSeries {
    labels: [String; 3],
    /// `*_started_total` of the method.
    pub(crate) started: IntCounter,
    /// `*_handling_seconds` of the method.
    pub(crate) handling: Histogram,
    handled_family: &'static IntCounterVec,
    handled: [OnceLock<IntCounter>; 17],
}

impl MethodSeries {
    /// The server's series of the method `service`/`method` of type `grpc_type`.
    pub(crate) fn server(grpc_type: &str, service: &str, method: &str) -> Self {
        let m = metrics();
        Self::new(
            [grpc_type, service, method],
            &m.server_started,
            &m.server_handling_seconds,
            &m.server_handled,
        )
    }

    /// A client's series of the method `service`/`method` of type `grpc_type`.
    pub(crate) fn client(grpc_type: GrpcType, service: &str, method: &str) -> Self {
        let m = metrics();
        Self::new(
            [grpc_type.as_str(), service, method],
            &m.client_started,
            &m.client_handling_seconds,
            &m.client_handled,
        )
    }

    fn new(
        labels: [&str; 3],
        started: &'static IntCounterVec,
        handling: &'static HistogramVec,
        handled: &'static IntCounterVec,
    ) -> Self {
        Self {
            started: started.with_label_values(&labels),
            handling: handling.with_label_values(&labels),
            handled_family: handled,
            handled: Default::default(),
            labels: labels.map(str::to_owned),
        }
    }

    /// The `grpc_type`, `grpc_service` and `grpc_method` label values.
    pub(crate) fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    /// The `*_handled_total` series of calls that ended with `code`.
    pub(crate) fn handled(&self, code: tonic::Code) -> &IntCounter {
        // `tonic::Code` is numbered 0 to 16, as the array is.
        self.handled[code as usize].get_or_init(|| {
            let [grpc_type, service, method] = self.labels();
            self.handled_family
                .with_label_values(&[grpc_type, service, method, grpc_code_name(code)])
        })
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(family.clone()))
                .expect("metric registered once");
            family
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let family = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(family.clone()))
                .expect("metric registered once");
            family
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let family = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(family.clone()))
                .expect("metric registered once");
            family
        };
        Self {
            server_started: counter(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            server_handled: counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            server_handling_seconds: histogram(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            client_started: counter(
                "grpc_client_started_total",
                "Total number of RPCs started on the client.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            client_handled: counter(
                "grpc_client_handled_total",
                "Total number of RPCs completed by the client, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            client_handling_seconds: histogram(
                "grpc_client_handling_seconds",
                "Histogram of response latency (seconds) of the gRPC until it is finished by the application.",
                &["grpc_type", "grpc_service", "grpc_method"],
            ),
            client_attempts: counter(
                "jovian_client_attempts_total",
                "Attempts a client sent to each instance, by the attempt's gRPC code.",
                &["service", "instance", "grpc_code"],
            ),
            client_attempt_seconds: histogram(
                "jovian_client_attempt_seconds",
                "Latency of the attempts a client sent to each instance.",
                &["service", "instance"],
            ),
            client_picks: counter(
                "jovian_client_picks_total",
                "Instances picked for an attempt.",
                &["service", "policy"],
            ),
            client_ejections: counter(
                "jovian_client_ejections_total",
                "Instances ejected after failures.",
                &["service", "instance"],
            ),
            client_instances: gauge("jovian_client_instances", "Instances a client may call.", &["service"]),
            registry_operations: counter(
                "jovian_registry_operations_total",
                "Registry operations.",
                &["registry", "operation", "result"],
            ),
            registry,
        }
    }

    /// Counts one registry operation.
    pub fn registry_operation<T, E>(&self, registry: &str, operation: &str, result: &Result<T, E>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.registry_operations
            .with_label_values(&[registry, operation, outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_go_name() {
        for number in 0..17 {
            let code = tonic::Code::from_i32(number);
            assert_eq!(code as i32, number, "tonic numbers codes as gRPC does");
            let name = grpc_code_name(code);
            assert_eq!(GRPC_CODE_NAMES[number as usize], name);
        }
        assert_eq!(grpc_code_name(tonic::Code::Unavailable), "Unavailable");
        assert_eq!(grpc_code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
    }
}
