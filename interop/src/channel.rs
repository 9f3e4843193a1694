//! A jovian [`ServiceChannel`] to one interop server at `host:port`, as an application would
//! build it: over a fixed address (`jovian::registry::Static`), with the client's default options,
//! and TestService's streaming methods declared as such (a server-streaming call looks unary
//! from its request, and would get the unary default deadline).
//!
//! The only addition is [`ObserveResponsesLayer`], which records the compression flag of
//! response messages for calls that ask (the compression cases) and passes everything else
//! through untouched.

use jovian::metrics::GrpcType;
use jovian::registry::Static;
use jovian::{ClientBuilder, ServiceChannel};

use crate::SERVICE;
use crate::flags::ObserveResponsesLayer;

/// TestService's streaming methods and their types.
const STREAMING_METHODS: [(&str, GrpcType); 4] = [
    ("StreamingOutputCall", GrpcType::ServerStream),
    ("StreamingInputCall", GrpcType::ClientStream),
    ("FullDuplexCall", GrpcType::BidiStream),
    ("HalfDuplexCall", GrpcType::BidiStream),
];

/// A channel to one server.
pub struct InteropChannel {
    /// The channel calls go through.
    pub channel: ServiceChannel,
}

impl InteropChannel {
    /// A channel to the server at `host:port` (`host` a name or an IP address).
    pub async fn connect(host: &str, port: u16) -> jovian::Result<Self> {
        let address = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let mut builder = ClientBuilder::new(Static::new().service(SERVICE, [address])).layer(ObserveResponsesLayer);
        for (method, grpc_type) in STREAMING_METHODS {
            builder = builder.method_type(format!("/grpc.testing.TestService/{method}"), grpc_type);
        }
        let channel = builder.build(SERVICE).await?;
        Ok(Self { channel })
    }
}
