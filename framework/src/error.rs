//! The one error type of jovian. Each message says what went wrong and what to do about it.

use std::net::SocketAddr;

use crate::service::InvalidEntry;

/// A boxed error from a lower layer (etcd client, transport).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in jovian.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry was closed; create a new one to register or watch again.
    #[error("the registry is closed; create a new registry to register or watch again")]
    Closed,

    /// No registry endpoint answered.
    #[error(
        "cannot reach the registry at {endpoints}: {reason}; check that it is running and that the endpoints are right"
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the last attempt said.
        reason: String,
    },

    /// Clients were asked of an App that has no registry to find services in.
    #[error(
        "this App has no registry to find services in; give it one with App::registry, or give the \
         service fixed addresses with [clients.NAME] addresses"
    )]
    NoRegistry,

    /// The registry did not answer within the request timeout.
    #[error(
        "registry {operation} timed out after {after:?}: {detail}; the registry may be overloaded or cut off (raise registry.request_timeout if it is just slow)"
    )]
    RegistryTimeout {
        /// What was being done (`register`, `list`, ...).
        operation: &'static str,
        /// The request timeout that ran out.
        after: std::time::Duration,
        /// What the registry said last, if anything.
        detail: String,
    },

    /// The registry refused the operation: the registry user lacks a permission.
    #[error("registry {operation} was refused: {detail}")]
    PermissionDenied {
        /// What was being done (`register`, `list`, ...).
        operation: &'static str,
        /// The registry's answer and the permission needed.
        detail: String,
    },

    /// A registry operation failed.
    #[error("registry {operation} failed: {source}")]
    Registry {
        /// What was being done (`register`, `list`, ...).
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },

    /// A [`ServiceInfo`](crate::ServiceInfo) cannot be registered as it is.
    #[error("cannot register {service}: {source}")]
    InvalidServiceInfo {
        /// The service (and address) concerned.
        service: String,
        /// What is wrong with it.
        #[source]
        source: InvalidEntry,
    },

    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}; is the port in use or the address not local?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },

    /// A configuration value is missing or of the wrong shape.
    #[error("config key `{key}`: expected {expected}, found {found}")]
    Config {
        /// The key, dotted (`registry.ttl`).
        key: String,
        /// What the key takes.
        expected: String,
        /// What was there.
        found: String,
    },

    /// A server failed while serving.
    #[error("server `{server}` failed: {source}")]
    Serve {
        /// The server's service name.
        server: String,
        /// The transport's error.
        #[source]
        source: BoxError,
    },

    /// A lifecycle hook failed.
    #[error("{stage} hook failed: {source}")]
    Hook {
        /// The stage the hook ran at.
        stage: crate::lifecycle::Stage,
        /// The hook's error.
        #[source]
        source: BoxError,
    },

    /// A second SIGINT or SIGTERM arrived while stopping, so the stop was cut short: calls
    /// still running were cut off and registrations left to expire with their lease.
    #[error("stopping was interrupted by a second signal; calls still in flight were cut off")]
    Interrupted,

    /// The shutdown deadline passed with calls still running; they were cut off.
    #[error("graceful stop did not finish within {0:?}; raise the shutdown deadline if calls legitimately run longer")]
    ShutdownDeadline(std::time::Duration),
}

impl Error {
    /// Wraps a backend failure of `operation`.
    pub fn registry(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Registry {
            operation,
            source: source.into(),
        }
    }
}

/// `Result` with jovian's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
