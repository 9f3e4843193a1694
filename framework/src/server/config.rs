//! A server's settings: what the config's `[servers.NAME]` section says and
//! `GrpcServer::configure` sets, the code's settings winning. Owned by the server, which reads
//! them; the config module only reads them from outside (and re-exports the type as
//! `jovian::config::ServerConfig`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ServerTls;
use crate::durations::optional_duration;

/// One server: its listener, TLS, and the HTTP/2 and connection settings of its connections.
///
/// Every field is optional: `None` takes the default (for the HTTP/2 settings, hyper's server's,
/// which tonic's server runs on: 1 MiB windows, 16 KiB frames and header lists).
/// The same settings can be made in code with [`GrpcServer::configure`](super::GrpcServer::configure)
/// and its other builders; those win over the config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Interface to listen on (default 127.0.0.1).
    pub host: Option<IpAddr>,
    /// Port (default 0: a free one).
    pub port: Option<u16>,
    /// The `host:port` to register instead of the bound address.
    pub advertise: Option<String>,
    /// Serve TLS with these files (`[servers.NAME.tls]`: `cert`, `key`, `client_ca`).
    pub tls: Option<ServerTls>,
    /// The zone to register, for zone-preferring clients.
    pub zone: Option<String>,
    /// The region to register.
    pub region: Option<String>,
    /// The weight to register, for weighted balancing (default 100; 0 takes no calls).
    pub weight: Option<u32>,
    /// The release version to register, for clients that select one.
    pub version: Option<String>,
    /// The traffic group to register, for clients that select one.
    pub group: Option<String>,
    /// The deployment to register: clients that select none never see other deployments.
    pub deployment: Option<String>,
    /// The run mode to register (free-form, e.g. `prod`).
    pub mode: Option<String>,
    /// Labels to register (`[servers.NAME.metadata]`, string values).
    pub metadata: BTreeMap<String, String>,
    /// Calls served at once on one connection; more wait their turn.
    pub concurrency_limit_per_connection: Option<usize>,
    /// HTTP/2 streams (calls) a client may open at once on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`; default 200, as hyper's server and grpc-go's
    /// clients expect: a client that opens more waits for a stream to end).
    pub max_concurrent_streams: Option<u32>,
    /// Close a connection gracefully (GOAWAY, then the connection ends) once it has had no
    /// call open for this long (default 5 minutes; grpc-go's `MaxConnectionIdle`): a client
    /// that connects and never calls holds nothing for long. Clients connect again on their
    /// next call.
    #[serde(with = "optional_duration")]
    pub max_connection_idle: Option<Duration>,
    /// Run each call in the connection's own task as far as it goes before giving it a task
    /// of its own (default off). On handlers that answer in microseconds it saves a little
    /// server CPU on one busy connection and costs some on several (BENCHMARKS.md, "Calls in
    /// tasks of their own": 16.6 vs 17.2 µs per call at 1 × 16 streams, 14.8 vs 10.4 at 4 × 16);
    /// and a handler that computes for long without awaiting then holds up its connection's
    /// other calls, pings and flow control while it does.
    pub inline_calls: Option<bool>,
    /// Ping every connection this often (HTTP/2 keep-alive); off when unset.
    #[serde(with = "optional_duration")]
    pub http2_keepalive_interval: Option<Duration>,
    /// Close a connection whose ping goes unanswered this long (default 20 s).
    #[serde(with = "optional_duration")]
    pub http2_keepalive_timeout: Option<Duration>,
    /// TCP keep-alive on accepted connections; off when unset.
    #[serde(with = "optional_duration")]
    pub tcp_keepalive: Option<Duration>,
    /// Close connections gracefully once they are this old, so clients spread over new
    /// instances; never when unset.
    #[serde(with = "optional_duration")]
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, how long calls still running get before the connection is
    /// closed anyway.
    #[serde(with = "optional_duration")]
    pub max_connection_age_grace: Option<Duration>,
    /// The HTTP/2 stream window, in bytes.
    pub initial_stream_window_size: Option<u32>,
    /// The HTTP/2 connection window, in bytes.
    pub initial_connection_window_size: Option<u32>,
    /// The largest HTTP/2 frame accepted, in bytes.
    pub max_frame_size: Option<u32>,
    /// The largest header list (metadata) accepted, in bytes.
    pub max_header_list_size: Option<u32>,
    /// The largest request message accepted, in bytes as sent; a larger one fails the call
    /// with `RESOURCE_EXHAUSTED` before it is read. tonic's generated servers have their own
    /// limit too (4 MiB unless raised with `max_decoding_message_size`), which still applies.
    pub max_request_message_bytes: Option<usize>,
}

impl ServerConfig {
    /// Writes the registration fields that are set into `info`, where `info` (what the code
    /// made with [`GrpcServer::map_info`](super::GrpcServer::map_info)) still has the
    /// default: the code's values win, as for every other setting. Metadata merges, the
    /// code's labels winning.
    pub(crate) fn register_into(&self, info: &mut crate::ServiceInfo) {
        let fill = |field: &mut String, value: &Option<String>| {
            if field.is_empty()
                && let Some(value) = value
            {
                field.clone_from(value);
            }
        };
        fill(&mut info.zone, &self.zone);
        fill(&mut info.region, &self.region);
        fill(&mut info.version, &self.version);
        fill(&mut info.group, &self.group);
        fill(&mut info.deployment, &self.deployment);
        fill(&mut info.mode, &self.mode);
        if info.weight == crate::ServiceInfo::default().weight
            && let Some(weight) = self.weight
        {
            info.weight = weight;
        }
        for (key, value) in &self.metadata {
            info.metadata.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }

    /// These settings, with every one left unset taken from `fallback`.
    pub(crate) fn or(&self, fallback: &ServerConfig) -> ServerConfig {
        ServerConfig {
            host: self.host.or(fallback.host),
            port: self.port.or(fallback.port),
            advertise: self.advertise.clone().or_else(|| fallback.advertise.clone()),
            tls: self.tls.clone().or_else(|| fallback.tls.clone()),
            zone: self.zone.clone().or_else(|| fallback.zone.clone()),
            region: self.region.clone().or_else(|| fallback.region.clone()),
            weight: self.weight.or(fallback.weight),
            version: self.version.clone().or_else(|| fallback.version.clone()),
            group: self.group.clone().or_else(|| fallback.group.clone()),
            deployment: self.deployment.clone().or_else(|| fallback.deployment.clone()),
            mode: self.mode.clone().or_else(|| fallback.mode.clone()),
            metadata: {
                let mut metadata = fallback.metadata.clone();
                metadata.extend(self.metadata.clone());
                metadata
            },
            concurrency_limit_per_connection: self
                .concurrency_limit_per_connection
                .or(fallback.concurrency_limit_per_connection),
            max_concurrent_streams: self.max_concurrent_streams.or(fallback.max_concurrent_streams),
            max_connection_idle: self.max_connection_idle.or(fallback.max_connection_idle),
            inline_calls: self.inline_calls.or(fallback.inline_calls),
            http2_keepalive_interval: self.http2_keepalive_interval.or(fallback.http2_keepalive_interval),
            http2_keepalive_timeout: self.http2_keepalive_timeout.or(fallback.http2_keepalive_timeout),
            tcp_keepalive: self.tcp_keepalive.or(fallback.tcp_keepalive),
            max_connection_age: self.max_connection_age.or(fallback.max_connection_age),
            max_connection_age_grace: self.max_connection_age_grace.or(fallback.max_connection_age_grace),
            initial_stream_window_size: self.initial_stream_window_size.or(fallback.initial_stream_window_size),
            initial_connection_window_size: self
                .initial_connection_window_size
                .or(fallback.initial_connection_window_size),
            max_frame_size: self.max_frame_size.or(fallback.max_frame_size),
            max_header_list_size: self.max_header_list_size.or(fallback.max_header_list_size),
            max_request_message_bytes: self.max_request_message_bytes.or(fallback.max_request_message_bytes),
        }
    }
}
