//! A jovian [`ServiceChannel`] to one interop server at `host:port`, as an application would
//! build it: over a registry that holds that one address, with the client's default options,
//! and TestService's streaming methods declared as such (a server-streaming call looks unary
//! from its request, and would get the unary default deadline).
//!
//! The only addition is [`ObserveResponsesLayer`], which records the compression flag of
//! response messages for calls that ask (the compression cases) and passes everything else
//! through untouched.

use jovian::metrics::GrpcType;
use jovian::prelude::*;
use jovian::{ClientBuilder, ServiceChannel, ServiceInfo};
use jovian_registry_memory::{MemoryRegistry, MemoryStore};

use crate::SERVICE;
use crate::flags::ObserveResponsesLayer;

/// TestService's streaming methods and their types.
const STREAMING_METHODS: [(&str, GrpcType); 4] = [
    ("StreamingOutputCall", GrpcType::ServerStream),
    ("StreamingInputCall", GrpcType::ClientStream),
    ("FullDuplexCall", GrpcType::BidiStream),
    ("HalfDuplexCall", GrpcType::BidiStream),
];

/// A channel to one server, and the registry that keeps its one instance registered.
pub struct InteropChannel {
    /// The channel calls go through.
    pub channel: ServiceChannel,
    /// Holds the instance's lease: dropping it would let the entry expire.
    _registration: MemoryRegistry,
}

impl InteropChannel {
    /// A channel to the server at `host:port` (`host` a name or an IP address).
    pub async fn connect(host: &str, port: u16) -> jovian::Result<Self> {
        let store = MemoryStore::new();
        let registration = store.registry();
        let address = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        registration.register(&ServiceInfo::new(SERVICE, address)).await?;
        let mut builder = ClientBuilder::new(store.registry()).layer(ObserveResponsesLayer);
        for (method, grpc_type) in STREAMING_METHODS {
            builder = builder.method_type(format!("/grpc.testing.TestService/{method}"), grpc_type);
        }
        let channel = builder.build(SERVICE).await?;
        Ok(Self {
            channel,
            _registration: registration,
        })
    }
}
