//! A server's listener: accepts connections and serves each in a task of its own, until told to
//! stop.
//!
//! Stopping is in two steps, as the App's shutdown is: `stop` closes the listener and asks every
//! connection to finish its calls and close (a GOAWAY); `cut_off` then ends whatever is left,
//! since each connection's reads and writes fail from then on (see [`CutOff`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpIncoming};

use super::ServerConfig;
use super::connection::{self, CallService, ConnectionSettings, HANDSHAKE_TIMEOUT};
use super::cutoff::CutOff;
use crate::Error;

/// How a server's connections are made and set up.
pub(crate) struct Listening {
    pub(crate) listener: TcpListener,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) connections: ConnectionSettings,
}

/// Serves `service` on the listener until `stop` fires and every call has finished (or
/// `cut_off` ended them). The task's error is the listener failing.
pub(crate) fn serve<S: CallService>(
    listening: Listening,
    service: S,
    stop: CancellationToken,
    cut_off: CancellationToken,
) -> JoinHandle<io::Result<()>> {
    tokio::spawn(async move {
        let Listening {
            listener,
            tcp_keepalive,
            tls,
            connections,
        } = listening;
        let connections = Arc::new(connections);
        let tasks = TaskTracker::new();
        let mut incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(tcp_keepalive);
        let accepted = loop {
            let stream = tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                accepted = incoming.next() => match accepted {
                    Some(Ok(stream)) => stream,
                    Some(Err(error)) if !breaks_the_listener(&error) => {
                        tracing::debug!(%error, "accepting a connection failed");
                        // Out of file descriptors or memory: give what holds them time to go.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Some(Err(error)) => break Err(error),
                    None => break Ok(()),
                },
            };
            let io = CutOff::new(stream, &cut_off);
            let (service, connections, stop, calls) =
                (service.clone(), Arc::clone(&connections), stop.clone(), tasks.clone());
            match tls.clone() {
                None => {
                    let info = io.connect_info();
                    tasks.spawn(async move { connection::serve(io, service, info, &connections, stop, calls).await });
                }
                Some(acceptor) => {
                    tasks.spawn(async move {
                        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io));
                        // Nor does one still in its TLS handshake hold a stop up.
                        let handshaken = tokio::select! {
                            biased;
                            () = stop.cancelled() => return tracing::debug!("the server stops before the TLS handshake finished"),
                            handshaken = handshake => handshaken,
                        };
                        let io = match handshaken {
                            Ok(Ok(io)) => io,
                            Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => return tracing::debug!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                        };
                        let info = io.connect_info();
                        connection::serve(io, service, info, &connections, stop, calls).await
                    });
                }
            }
        };
        // No new connections from here on, even while the ones there finish.
        drop(incoming);
        tasks.close();
        tasks.wait().await;
        accepted
    })
}

/// Whether an accept error means the listener itself is unusable. Every other one is about one
/// connection (aborted, refused by a firewall) or a passing shortage (out of file descriptors or
/// memory), and the listener goes on.
fn breaks_the_listener(error: &io::Error) -> bool {
    // By the platform's own numbers: std gives most of these no `ErrorKind` of their own.
    #[cfg(unix)]
    if let Some(code) = error.raw_os_error() {
        return [
            libc::EBADF,
            libc::EFAULT,
            libc::EINVAL,
            libc::ENOTSOCK,
            libc::EOPNOTSUPP,
        ]
        .contains(&code);
    }
    matches!(error.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported)
}

/// Streams a client may open at once on one connection, unless configured: hyper's server's.
/// Unlimited (h2's own default), one connection opening streams that never end could take a
/// server's memory (200,000 of them took 1.9 GiB in 15 s).
pub(crate) const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 200;

/// How long a connection may go without a call open, unless configured.
pub(crate) const DEFAULT_MAX_CONNECTION_IDLE: Duration = Duration::from_secs(5 * 60);

impl ServerConfig {
    /// The HTTP/2 settings of every connection, as hyper's server defaults them where unset;
    /// `server` names the section in errors.
    pub(crate) fn connections(&self, server: &str) -> Result<ConnectionSettings, Error> {
        if self.concurrency_limit_per_connection == Some(0) {
            return Err(Error::Config {
                key: format!("servers.{server}.concurrency_limit_per_connection"),
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        let mut h2 = h2::server::Builder::new();
        h2.initial_window_size(self.initial_stream_window_size.unwrap_or(1024 * 1024))
            .initial_connection_window_size(self.initial_connection_window_size.unwrap_or(1024 * 1024))
            .max_frame_size(self.max_frame_size.unwrap_or(16 * 1024))
            .max_header_list_size(self.max_header_list_size.unwrap_or(16 * 1024))
            .max_send_buffer_size(400 * 1024)
            .max_local_error_reset_streams(Some(1024));
        h2.max_concurrent_streams(self.max_concurrent_streams.unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS));
        Ok(ConnectionSettings {
            h2,
            concurrency_limit: self.concurrency_limit_per_connection,
            max_idle: Some(self.max_connection_idle.unwrap_or(DEFAULT_MAX_CONNECTION_IDLE)),
            inline_calls: self.inline_calls.unwrap_or(false),
            keepalive: self.http2_keepalive_interval.map(|interval| {
                (
                    interval,
                    self.http2_keepalive_timeout.unwrap_or(Duration::from_secs(20)),
                )
            }),
            max_age: self.max_connection_age,
            max_age_grace: self.max_connection_age_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_the_listener_itself_stop_accepting() {
        assert!(!breaks_the_listener(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        assert!(breaks_the_listener(&io::Error::from(io::ErrorKind::InvalidInput)));
        #[cfg(unix)]
        {
            // Out of file descriptors passes; a closed or non-listening socket does not.
            assert!(!breaks_the_listener(&io::Error::from_raw_os_error(libc::EMFILE)));
            assert!(!breaks_the_listener(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
            assert!(breaks_the_listener(&io::Error::from_raw_os_error(libc::EBADF)));
            assert!(breaks_the_listener(&io::Error::from_raw_os_error(libc::EINVAL)));
            assert!(breaks_the_listener(&io::Error::from_raw_os_error(libc::ENOTSOCK)));
        }
    }
}
