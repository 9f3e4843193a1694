//! HTTP/2 as both sides of a gRPC call use it: what the client (`client/transport.rs`) and the
//! server (`server/connection.rs`) would otherwise each write for themselves.
//!
//! - [`keepalive`]: the ping timer and the answer timeout (each side adds its own policy of
//!   when to ping);
//! - [`pump`]: a body sent on an h2 stream within its flow control, then its end or trailers;
//! - [`body`]: a body as h2 receives it;
//! - [`frames`]: frame boundaries followed through the bytes a connection reads or writes (the
//!   client's ping policy and the server's control-frame budget count them);
//! - [`grpc`] and [`deadline`]: what gRPC carries in HTTP/2 headers (`grpc-timeout`,
//!   `grpc-status`) and the deadlines read from them;
//! - [`tls`]: certificates and keys read from PEM files, with errors naming the config key.
//!
//! This layer knows h2, tonic's types and the error type, nothing of balancing, registries or
//! servers: `client` and `server` depend on it, never the other way.

pub(crate) mod body;
pub(crate) mod deadline;
pub(crate) mod frames;
pub(crate) mod grpc;
pub(crate) mod keepalive;
pub(crate) mod pump;
pub(crate) mod tls;
