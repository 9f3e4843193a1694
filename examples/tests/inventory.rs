//! The inventory example end to end in one process, on the in-memory registry: no etcd, no
//! config file, no environment. A Greeter and the inventory register in one store; a client
//! finds the inventory, which finds the Greeter.

use std::time::Duration;

use jovian::{App, ClientBuilder, Running};
use jovian_examples::inventory::{
    GREETER, GetItemRequest, Inventory, InventoryClient, ReserveRequest, SERVICE, inventory_server, request,
    reservations,
};
use jovian_examples::{Greeter, GreeterServer};
use jovian_registry_memory::MemoryStore;
use jovian_tests::greeters::Sleepy;
use tonic::Code;

const KEY: &str = "test-key";
const DEADLINE: Duration = Duration::from_secs(5);

/// Starts an inventory on `store`, calling the Greeter through a channel the App built, with
/// calls limited to `time_limit`.
async fn start_inventory(store: &MemoryStore, time_limit: Duration) -> Running {
    let app = App::new().registry(store.registry()).drain_delay(Duration::ZERO);
    let greeter = app.client(GREETER).await.expect("a channel to the greeter");
    let inventory = Inventory::new(greeter, Inventory::sample_stock());
    app.serve(inventory_server(inventory, KEY, time_limit))
        .start()
        .await
        .expect("the inventory starts")
}

async fn start_greeter<G: jovian_examples::proto::greeter_server::Greeter>(store: &MemoryStore, greeter: G) -> Running {
    App::new()
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(jovian::GrpcServer::new(GREETER).add_service(GreeterServer::new(greeter)))
        .start()
        .await
        .expect("the greeter starts")
}

async fn client(store: &MemoryStore) -> InventoryClient<jovian::ServiceChannel> {
    InventoryClient::new(ClientBuilder::new(store.registry()).build(SERVICE).await.unwrap())
}

fn get(id: &str, key: &str) -> tonic::Request<GetItemRequest> {
    request(GetItemRequest { id: id.into() }, key, DEADLINE).unwrap()
}

fn reserve(id: &str, quantity: u32, customer: &str, deadline: Duration) -> tonic::Request<ReserveRequest> {
    let message = ReserveRequest {
        id: id.into(),
        quantity,
        customer: customer.into(),
    };
    request(message, KEY, deadline).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserving_confirms_through_the_greeter_and_counts_in_the_apps_metric() {
    let store = MemoryStore::new();
    let greeter = start_greeter(&store, Greeter).await;
    let inventory = start_inventory(&store, Duration::from_secs(5)).await;
    let mut client = client(&store).await;

    let apple = client.get_item(get("apple", KEY)).await.unwrap().into_inner();
    assert_eq!((apple.name.as_str(), apple.available), ("Apple", 10));

    let reserved_before = reservations().with_label_values(&["reserved"]).get();
    let reservation = client
        .reserve(reserve("apple", 3, "Ada", DEADLINE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reservation.quantity, reservation.remaining), (3, 7));
    let greeter_address = greeter.local_addrs()[0].to_string();
    assert_eq!(
        reservation.confirmation,
        format!("Hello Ada from {greeter_address}"),
        "the confirmation is the Greeter's answer"
    );
    assert_eq!(
        reservations().with_label_values(&["reserved"]).get(),
        reserved_before + 1
    );
    assert!(
        jovian::metrics::render().contains("inventory_reservations_total{outcome=\"reserved\"}"),
        "the app's metric is served with jovian's"
    );

    let too_many = client.reserve(reserve("pear", 4, "Ada", DEADLINE)).await.unwrap_err();
    assert_eq!(too_many.code(), Code::FailedPrecondition, "{too_many:?}");
    let missing = client.get_item(get("kiwi", KEY)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    inventory.stop().await.unwrap();
    greeter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_api_key_are_turned_away_by_the_layer() {
    let store = MemoryStore::new();
    let greeter = start_greeter(&store, Greeter).await;
    let inventory = start_inventory(&store, Duration::from_secs(5)).await;
    let mut client = client(&store).await;

    let mut unsigned = tonic::Request::new(GetItemRequest { id: "apple".into() });
    unsigned.set_timeout(DEADLINE);
    let error = client.get_item(unsigned).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    let error = client.get_item(get("apple", "wrong")).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    client.get_item(get("apple", KEY)).await.expect("the right key passes");

    inventory.stop().await.unwrap();
    greeter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_dependency_ends_in_the_servers_time_limit_or_the_callers_deadline() {
    let store = MemoryStore::new();
    // Sleepy sleeps as many milliseconds as the name it greets, here the customer's.
    let greeter = start_greeter(&store, Sleepy).await;
    let inventory = start_inventory(&store, Duration::from_millis(200)).await;
    let mut client = client(&store).await;

    let error = client
        .reserve(reserve("apple", 1, "10000", DEADLINE))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(
        error.message().contains("time limit"),
        "the server's limit ended it: {error:?}"
    );

    let error = client
        .reserve(reserve("apple", 1, "10000", Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(
        !error.message().contains("time limit"),
        "the caller's deadline ended it: {error:?}"
    );

    let stock = client.get_item(get("apple", KEY)).await.unwrap().into_inner();
    assert_eq!(stock.available, 10, "reservations that were not confirmed took nothing");

    inventory.stop().await.unwrap();
    greeter.stop().await.unwrap();
}
