// tests/orders.rs
use std::time::Duration;

use jovian::{App, ClientBuilder, GrpcServer};
use jovian_first_service::helloworld::greeter_server::{Greeter, GreeterServer};
use jovian_first_service::helloworld::{HelloReply, HelloRequest};
use jovian_first_service::proto::GetOrderRequest;
use jovian_first_service::proto::orders_client::OrdersClient;
use jovian_first_service::proto::orders_server::OrdersServer;
use jovian_first_service::{MyOrders, watch};
use jovian_registry_memory::MemoryStore;
use tonic::{Code, Request, Response, Status};

struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let message = format!("Hello {}", request.into_inner().name);
        Ok(Response::new(HelloReply { message }))
    }
}

#[tokio::test]
async fn an_order_comes_with_a_greeting_and_its_watch_ends_when_the_server_stops() {
    let store = MemoryStore::new(); // in-process, with etcd's lease semantics: no etcd needed
    let greeter = App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO) // a test's clients need no time to move on
        .serve(GrpcServer::new("greeter").add_service(GreeterServer::new(Hello)))
        .start()
        .await
        .unwrap();
    let app = App::new().registry(store.registry()).drain_delay(Duration::ZERO);
    let orders = MyOrders {
        greeter: app.client("greeter").await.unwrap(),
        stop: app.shutdown_handle(),
        lookups: prometheus::IntCounter::new("lookups", "Lookups.").unwrap(),
    };
    let running = app
        .serve(GrpcServer::new("orders").add_service(OrdersServer::new(orders)))
        .start()
        .await
        .unwrap();

    let channel = ClientBuilder::new(store.registry()).build("orders").await.unwrap();
    let order = OrdersClient::new(channel)
        .get_order(GetOrderRequest { id: "42".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.greeting, "Hello 42");

    let mut updates = watch(store.registry(), "42").await.unwrap();
    assert_eq!(updates.message().await.unwrap().unwrap().status, "in transit");
    running.stop().await.unwrap(); // a routine stop: Ok, although a stream was open
    let ended = loop {
        match updates.message().await {
            Ok(Some(_)) => continue, // updates sent before the stop
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    greeter.stop().await.unwrap();
}
