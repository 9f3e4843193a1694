// src/main.rs
use jovian::metrics::GrpcType;
use jovian::{App, Config, GrpcServer};
use jovian_first_service::MyOrders;
use jovian_first_service::proto::orders_server::OrdersServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging(); // logging is the application's choice
    let config = Config::load()?; // jovian.toml + JOVIAN_* (only when asked)
    let registry = jovian_registry_etcd::from_config(&config).await?; // what [registry] describes
    let app = App::from_config(config).registry(registry);

    let lookups = prometheus::IntCounter::new("orders_lookups_total", "Orders looked up.")?;
    jovian::metrics::registry().register(Box::new(lookups.clone()))?;
    let orders = MyOrders {
        greeter: app.client("greeter").await?, // follows the registry and [clients.greeter]
        stop: app.shutdown_handle(),
        lookups,
    };
    let server = GrpcServer::new("orders")
        .layer(tower::limit::ConcurrencyLimitLayer::new(64)) // any tower layer
        .method_type("/orders.Orders/WatchOrder", GrpcType::ServerStream) // for its metrics
        .add_service(OrdersServer::new(orders));
    app.serve(server).run().await?; // until SIGINT/SIGTERM; Ok after a routine stop
    Ok(())
}
