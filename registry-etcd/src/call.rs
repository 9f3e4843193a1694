//! One etcd request under a deadline, and what its failure means.
//!
//! Deadlines are per call: etcd-client's channel-wide timeout would also cut off the long-lived
//! watch and keep-alive streams.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use jovian::Error;

/// Why an etcd call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer within the deadline (etcd down, frozen, or unreachable).
    Timeout(Duration),
    /// etcd or the transport answered with an error.
    Etcd(etcd_client::Error),
}

/// Runs `call` with `deadline`.
pub(crate) async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(CallError::Etcd),
        Err(_) => Err(CallError::Timeout(deadline)),
    }
}

impl CallError {
    /// etcd no longer knows the lease (expired, revoked, or its data was wiped).
    pub(crate) fn is_lease_not_found(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.message().contains("lease not found"))
    }

    pub(crate) fn is_permission_denied(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.code() == tonic::Code::PermissionDenied || status.message().contains("permission denied"))
    }

    /// The error a caller of `operation` sees.
    pub(crate) fn into_error(self, operation: &'static str) -> Error {
        Error::registry(operation, self.to_string())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout(deadline) => write!(f, "etcd did not answer within {deadline:?}"),
            CallError::Etcd(error) if self.is_permission_denied() => write!(
                f,
                "{error}; the etcd user's role needs readwrite permission on the registry prefix"
            ),
            CallError::Etcd(error) => write!(f, "{error}"),
        }
    }
}
