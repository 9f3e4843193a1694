//! The Greeter service shared by the examples and the tests, the inventory example (a service
//! that calls the Greeter), and the command-line plumbing the example binaries share.

#![forbid(unsafe_code)]

pub mod cli;
pub mod inventory;

use tonic::{Request, Response, Status};

/// Code generated from `proto/helloworld.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("helloworld");
}

pub use proto::greeter_client::GreeterClient;
pub use proto::greeter_server::GreeterServer;
pub use proto::{HelloReply, HelloRequest};

/// Answers `Hello {name} from {address}`, where `address` is the listener the call came in on,
/// so a client can see which instance served it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greeter;

#[tonic::async_trait]
impl proto::greeter_server::Greeter for Greeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let address = request
            .local_addr()
            .map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
        let message = format!("Hello {} from {address}", request.into_inner().name);
        Ok(Response::new(HelloReply { message }))
    }
}

/// A jovian server offering the Greeter as service `name`.
pub fn greeter_server(name: &str) -> jovian::GrpcServer {
    jovian::GrpcServer::new(name).add_service(GreeterServer::new(Greeter))
}

/// The address part of a Greeter reply (`Hello x from ADDRESS`).
pub fn replying_address(message: &str) -> &str {
    message.rsplit(" from ").next().unwrap_or(message)
}
