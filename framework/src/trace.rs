//! Trace context that travels with calls, as W3C `traceparent` gRPC metadata.
//!
//! A server call continues the trace of the `traceparent` it receives (or starts one); a client
//! call made while serving continues the server call's trace and sends its own `traceparent`.
//! A client call outside any served call starts a trace only when a subscriber records its
//! span: an unrecorded trace id is one nobody could look up, and the header would cost every
//! server on every call (its server starts a trace instead). So a recorded client span and the
//! server span of one call share a trace id. The ids are recorded on the `grpc.client` /
//! `grpc.server` tracing spans as `trace_id` and `span_id`.
//!
//! That is the built-in propagation, which needs nothing from the application. One that
//! already traces with OpenTelemetry (`tracing-opentelemetry`) or carries B3 headers installs
//! its own [`Propagator`] with [`set_propagator`], once, at start: then a server hands each
//! call's headers and its `grpc.server` span to the propagator to connect the span to the
//! caller's trace, and a client hands the `grpc.client` span and the outgoing headers to it to
//! write the context the next process continues. The built-in ids are then not made.
//!
//! Either way a request that already carries a `traceparent` when it reaches the client (set
//! by an interceptor, say) is sent with it unchanged.
//!
//! jovian only emits `tracing` events and spans (at `debug`, target `jovian`); where they go is
//! the application's choice. [`init_logging`] is the usual one for a service binary.

use std::fmt;
use std::sync::OnceLock;

use rand::Rng;

/// The metadata key trace context travels under.
pub const TRACEPARENT: &str = "traceparent";

/// Carries trace context across calls for an application that traces with something else
/// than jovian's built-in ids, OpenTelemetry most often. Install it with [`set_propagator`].
///
/// With `tracing-opentelemetry`, connecting jovian's spans to OpenTelemetry's traces takes
/// OpenTelemetry's own propagator and a few lines (the `opentelemetry`, `opentelemetry_sdk`
/// and `tracing-opentelemetry` crates; `tests/tests/trace_otel.rs` in jovian's repository runs
/// this through real calls):
///
/// ```ignore
/// use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
/// use tracing_opentelemetry::OpenTelemetrySpanExt;
///
/// struct Otel(TraceContextPropagator);
///
/// impl jovian::trace::Propagator for Otel {
///     fn extract(&self, headers: &http::HeaderMap, span: &tracing::Span) {
///         let _ = span.set_parent(self.0.extract(&Headers(headers)));
///     }
///     fn inject(&self, span: &tracing::Span, headers: &mut http::HeaderMap) {
///         self.0.inject_context(&span.context(), &mut HeadersMut(headers));
///     }
/// }
/// // Headers / HeadersMut: `Extractor` / `Injector` over `http::HeaderMap`.
///
/// jovian::trace::set_propagator(Otel(TraceContextPropagator::new())).unwrap();
/// ```
pub trait Propagator: Send + Sync + 'static {
    /// Called by a server for each call, with the call's request headers and the `grpc.server`
    /// span made for it, before the handler runs in that span: connect the span to the trace
    /// the headers carry, if any.
    fn extract(&self, headers: &http::HeaderMap, span: &tracing::Span);

    /// Called by a client for each call that does not carry a `traceparent` already, with the
    /// call's `grpc.client` span and its request headers, before the first attempt: write the
    /// span's context for the server to continue. Every attempt of the call sends the same.
    fn inject(&self, span: &tracing::Span, headers: &mut http::HeaderMap);
}

static PROPAGATOR: OnceLock<Box<dyn Propagator>> = OnceLock::new();

/// Installs the process's [`Propagator`], replacing jovian's built-in ids for every server and
/// client from then on. It can be set once; a second call returns [`PropagatorAlreadySet`]
/// and changes nothing.
pub fn set_propagator(propagator: impl Propagator) -> Result<(), PropagatorAlreadySet> {
    PROPAGATOR.set(Box::new(propagator)).map_err(|_| PropagatorAlreadySet)
}

/// The installed propagator, or `None` for the built-in propagation.
pub(crate) fn propagator() -> Option<&'static dyn Propagator> {
    PROPAGATOR.get().map(|p| p.as_ref())
}

/// [`set_propagator`] was called before: the process keeps the first propagator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropagatorAlreadySet;

impl fmt::Display for PropagatorAlreadySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a trace propagator is already set; set it once, when the program starts")
    }
}

impl std::error::Error for PropagatorAlreadySet {}

/// A trace id and the id of the current span in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace (16 bytes).
    pub trace_id: u128,
    /// The span within it (8 bytes).
    pub span_id: u64,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: rng.random::<u128>().max(1),
            span_id: rng.random::<u64>().max(1),
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: rand::rng().random::<u64>().max(1),
        }
    }

    /// The context of the server call this task is serving, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `future` with this as the current context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Reads a `traceparent` value (`00-<trace id>-<span id>-<flags>`).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
        Some(Self { trace_id, span_id })
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value, sampled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

/// The log filter [`init_logging`] uses when `RUST_LOG` is unset: `info`, but only errors from
/// `h2`, which warns once per misbehaving stream or connection of a peer (a rapid-reset flood
/// made ~700 lines a second): a peer must not decide how much a server logs. jovian reports
/// what a connection's peer did wrong at `debug`, and counts what matters in its metrics.
pub const DEFAULT_LOG_FILTER: &str = "info,h2=error";

/// Logs to stderr at the level `RUST_LOG` says (default [`DEFAULT_LOG_FILTER`]), as a service
/// binary usually wants; call it first thing in `main`. It does nothing when the program
/// already installed a global subscriber, so libraries and tests that set their own keep
/// theirs. jovian itself never installs one.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Fails only when a subscriber is already set, which is the caller's choice to keep.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let context = TraceContext::root();
        assert_eq!(TraceContext::parse(&context.to_string()), Some(context));
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceContext::parse(w3c).unwrap().trace_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf9-00f0-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
