//! One etcd request under a deadline, and what its failure means.
//!
//! Deadlines are per call: etcd-client's channel-wide timeout would also cut off the long-lived
//! watch and keep-alive streams.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::Client;
use jovian::Error;

/// Why an etcd call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer within the deadline (etcd down, frozen, or unreachable).
    Timeout {
        /// The deadline.
        deadline: Duration,
        /// What the last attempt said, if any attempt failed outright.
        last_error: Option<String>,
    },
    /// etcd or the transport answered with an error.
    Etcd(etcd_client::Error),
}

/// Runs `call` until it succeeds or fails for good, all within `deadline`.
///
/// etcd-client balances over the members with tonic's balance channel, which keeps a dead
/// member in rotation, so a request may land on it and fail with `Unavailable` without ever
/// reaching etcd. Such failures (and a leader election in progress) are retried: every
/// operation the registry makes is idempotent in effect (puts of the same value, deletes,
/// reads, a lease grant that at worst leaves a spare lease to expire).
pub(crate) async fn within<T, F, Fut>(deadline: Duration, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut last_error = None;
    let attempts = async {
        loop {
            match call().await {
                Err(error) if is_transient(&error) => {
                    last_error = Some(error.to_string());
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(deadline, attempts).await {
        Ok(result) => result.map_err(CallError::Etcd),
        Err(_) => Err(CallError::Timeout { deadline, last_error }),
    }
}

/// [`within`] for a call on `client`: each attempt gets its own clone, as etcd-client's calls
/// borrow the client mutably.
pub(crate) async fn with_client<T, F, Fut>(client: &Client, deadline: Duration, mut call: F) -> Result<T, CallError>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    within(deadline, || call(client.clone())).await
}

/// Runs one attempt of `call` with `deadline`, for calls on an open stream.
pub(crate) async fn once<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(CallError::Etcd),
        Err(_) => Err(CallError::Timeout {
            deadline,
            last_error: None,
        }),
    }
}

const RETRY_PAUSE: Duration = Duration::from_millis(25);

fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

impl CallError {
    /// etcd no longer knows the lease (expired, revoked, or its data was wiped).
    pub(crate) fn is_lease_not_found(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.message().contains("lease not found"))
    }

    /// The revision asked for was compacted away.
    pub(crate) fn is_compacted(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.message().contains("compacted"))
    }

    /// The answer was larger than the message size limit.
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.code() == tonic::Code::OutOfRange || status.message().contains("message length too large"))
    }

    /// etcd could not be reached or did not answer: trouble with etcd, not with the request.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            CallError::Timeout { .. } => true,
            CallError::Etcd(error) => is_transient(error),
        }
    }

    pub(crate) fn is_permission_denied(&self) -> bool {
        matches!(self, CallError::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.code() == tonic::Code::PermissionDenied || status.message().contains("permission denied"))
    }

    /// The error a caller of `operation` sees.
    pub(crate) fn into_error(self, operation: &'static str) -> Error {
        match &self {
            CallError::Timeout { deadline, last_error } => Error::RegistryTimeout {
                operation,
                after: *deadline,
                detail: last_error
                    .as_ref()
                    .map_or_else(|| "no answer".to_owned(), ToString::to_string),
            },
            CallError::Etcd(_) if self.is_permission_denied() => Error::PermissionDenied {
                operation,
                detail: self.to_string(),
            },
            CallError::Etcd(_) => Error::registry(operation, self.to_string()),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout {
                deadline,
                last_error: None,
            } => write!(f, "etcd did not answer within {deadline:?}"),
            CallError::Timeout {
                deadline,
                last_error: Some(last),
            } => {
                write!(f, "etcd did not answer within {deadline:?} (last attempt: {last})")
            }
            CallError::Etcd(error) if self.is_permission_denied() => write!(
                f,
                "{error}; the etcd user's role needs readwrite permission on the registry prefix"
            ),
            CallError::Etcd(error) => write!(f, "{error}"),
        }
    }
}
