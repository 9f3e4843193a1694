//! Greeter implementations that let tests see what happened on the wire.

use std::time::Duration;

use jovian::GrpcServer;
use jovian_examples::proto::greeter_server::{Greeter, GreeterServer};
use jovian_examples::{HelloReply, HelloRequest};
use tonic::{Request, Response, Status};

/// Replies `{local address} {client's address}`, so a test can tell which instance answered
/// and over which client connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerEcho;

#[tonic::async_trait]
impl Greeter for PeerEcho {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let local = request.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let remote = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        Ok(Response::new(HelloReply {
            message: format!("{local} {remote}"),
        }))
    }
}

/// Answers like the example Greeter, after sleeping as many milliseconds as the request's name
/// says (`"250"` sleeps 250 ms; anything else answers at once).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sleepy;

#[tonic::async_trait]
impl Greeter for Sleepy {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let local = request.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let name = request.into_inner().name;
        if let Ok(ms) = name.parse::<u64>() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello {name} from {local}"),
        }))
    }
}

/// A [`Sleepy`] Greeter that tells `started` each time a call reaches it, so a test can wait
/// until a call is certainly in flight on the server instead of sleeping and hoping.
#[derive(Clone, Debug, Default)]
pub struct Announcing {
    /// Notified once per call, as the handler starts (a permit is kept if nobody waits yet).
    pub started: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl Greeter for Announcing {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.started.notify_one();
        Sleepy.say_hello(request).await
    }
}

/// Starts `server` in an App registered in `store`, with no governor and no drain delay, as
/// tests want it: stopped at once.
pub async fn serve(store: &jovian_registry_memory::MemoryStore, server: GrpcServer) -> jovian::Running {
    jovian::App::new()
        .registry(store.registry())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await
        .expect("the test server starts")
}

/// A server offering `greeter` as service `name`.
pub fn server<G: Greeter>(name: &str, greeter: G) -> GrpcServer {
    GrpcServer::new(name).add_service(GreeterServer::new(greeter))
}
