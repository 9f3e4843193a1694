//! gRPC's interop test suite on jovian: the `grpc.testing` client and server of the standard
//! cases (doc/interop-test-descriptions.md in grpc/grpc), built on the framework's public API,
//! and the harness that builds grpc-go's interop client and server to run them against.
//!
//! - [`service`]: the TestService a jovian server offers (`jovian-interop-server`).
//! - [`echo`]: the server layer that echoes metadata and reads each request message's
//!   compression flag, which tonic's handlers cannot see.
//! - [`flags`]: the body observer both sides use to see the compression flag of every gRPC
//!   message.
//! - [`channel`]: a jovian `ServiceChannel` to one `host:port`, with default options.
//! - [`cases`]: the client side of each case (`jovian-interop-client`).
//! - [`go`]: builds grpc-go's interop programs and h2spec into a cache outside the clone.

#![forbid(unsafe_code)]

pub mod cases;
pub mod channel;
pub mod echo;
pub mod flags;
pub mod go;
pub mod service;

/// Code generated from `proto/grpc/testing/*.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("grpc.testing");
}

/// The service name a jovian interop server registers under, and a client's channel follows.
pub const SERVICE: &str = "grpc.testing";
