// src/lib.rs
pub mod proto {
    tonic::include_proto!("orders");
}
pub mod helloworld {
    tonic::include_proto!("helloworld");
}

use std::pin::Pin;
use std::time::Duration;

use helloworld::HelloRequest;
use helloworld::greeter_client::GreeterClient;
use jovian::{ServiceChannel, ShutdownHandle};
use proto::{GetOrderRequest, Order};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct MyOrders {
    pub greeter: ServiceChannel, // a channel to the Greeter service
    pub stop: ShutdownHandle,    // says when the App is stopping
    pub lookups: prometheus::IntCounter,
}

#[tonic::async_trait]
impl proto::orders_server::Orders for MyOrders {
    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        self.lookups.inc();
        let id = request.into_inner().id;
        let mut hello = Request::new(HelloRequest { name: id.clone() });
        hello.set_timeout(Duration::from_secs(1)); // every unary call has a deadline (5 s by default)
        let greeting = GreeterClient::new(self.greeter.clone())
            .say_hello(hello)
            .await?
            .into_inner()
            .message;
        Ok(Response::new(Order {
            id,
            status: "packed".into(),
            greeting,
        }))
    }

    type WatchOrderStream = Pin<Box<dyn Stream<Item = Result<Order, Status>> + Send>>;

    async fn watch_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Self::WatchOrderStream>, Status> {
        let id = request.into_inner().id;
        let stop = self.stop.clone();
        let (updates, stream) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                let update = tokio::select! {
                    _ = every.tick() => Ok(Order { id: id.clone(), status: "in transit".into(), greeting: String::new() }),
                    // Unregistered and drained: clients have moved on. End the stream with a
                    // status its client retries on another instance, so the stop ends in time.
                    () = stop.drained() => Err(Status::unavailable("the server is stopping; watch again")),
                };
                let last = update.is_err();
                if updates.send(update).await.is_err() || last {
                    break; // the client went away, or the stream has ended
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        ))))
    }
}

pub async fn watch(registry: impl jovian::Discovery, id: &str) -> anyhow::Result<tonic::Streaming<Order>> {
    let channel = jovian::ClientBuilder::new(registry)
        // A server-streaming method looks unary from its request: declare it, or its calls
        // get the unary deadline (5 s) and end there.
        .method_type("/orders.Orders/WatchOrder", jovian::metrics::GrpcType::ServerStream)
        .build("orders")
        .await?;
    let mut orders = proto::orders_client::OrdersClient::new(channel);
    Ok(orders
        .watch_order(GetOrderRequest { id: id.into() })
        .await?
        .into_inner())
}
