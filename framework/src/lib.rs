//! gRPC microservices on tonic that find each other through a service registry.
//!
//! A server built with [`App`] binds, serves, and registers itself in a [`Registry`] under a
//! lease it keeps alive; clients build a [`ServiceChannel`] that watches the registry and
//! balances calls over the live instances on the client side, with no proxy in between.
//!
//! Nothing happens behind the application's back: an App reads no config file or
//! environment unless given [`Config::load`], installs no logger ([`trace::init_logging`]
//! is there for binaries), runs no governor unless configured, and never closes the registry
//! it was given.
//!
//! ```no_run
//! # use jovian::{App, GrpcServer, Registry};
//! # async fn demo(registry: impl Registry + Clone) -> Result<(), jovian::Error> {
//! // server
//! let app = App::new().registry(registry.clone()).serve(GrpcServer::new("greeter") /* .add_service(...) */);
//! let running = app.start().await?;
//! // client, anywhere that sees the same registry
//! let channel = jovian::ClientBuilder::new(registry).build("greeter").await?;
//! // GreeterClient::new(channel).say_hello(...).await?;
//! running.stop().await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod config;
mod durations;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod governor;
mod http2;
mod instances;
mod lifecycle;
pub mod metrics;
mod observe;
pub mod registry;
pub mod sd;
mod server;
/// The traits whose methods callers use: `use jovian::prelude::*;` brings them into scope
/// (`registry.register(..)`, `registry.watch(..)`).
pub mod prelude {
    pub use crate::{Discovery, Registrar, Registry};
}
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use app::{App, Running, ShutdownHandle, Stage};
pub use client::{ClientBuilder, ClientOptions, ServiceChannel};
pub use config::Config;
pub use error::{BoxError, Error, Result};
pub use instances::{Change, Instances, InstancesPublisher, InstancesWatch};
pub use registry::{Discovery, MetricsTarget, Registrar, Registry};
pub use server::{GrpcServer, LayeredService, ServerTls};
pub use service::{InvalidEntry, MAX_ENTRY_BYTES, MIN_PING_INTERVAL_KEY, ServiceInfo};
