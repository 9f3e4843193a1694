//! The inventory example: a service that is also a client of another service.
//!
//! It shows, on the documented API only, what a real service needs besides its handlers:
//!
//! - **Calling another service.** Reserving asks the Greeter for the confirmation text,
//!   through a [`ServiceChannel`] the App builds (`app.client("greeter")`), so the channel
//!   follows the App's registry and its `[clients.greeter]` settings.
//! - **Server layers.** [`inventory_server`] puts an API key check (tonic's
//!   `InterceptorLayer`), a concurrency limit and a time limit per call (tower's) in front of
//!   the service with [`GrpcServer::layer`].
//! - **Its own metric.** `inventory_reservations_total{outcome}` is registered in
//!   [`jovian::metrics::registry`], so the governor's `/metrics` serves it beside
//!   `grpc_server_handled_total`.
//! - **Deadlines.** Callers give every call one with [`request`]; the call fails with
//!   `DEADLINE_EXCEEDED` when no answer came in time, wherever it got stuck.
//!
//! `inventory-server` and `inventory-client` run it; `tests/inventory.rs` runs it in one
//! process on the in-memory registry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jovian::{GrpcServer, ServiceChannel};
use prometheus::{IntCounterVec, Opts};
use tonic::{Request, Response, Status};

use crate::{GreeterClient, HelloRequest};

/// Code generated from `proto/inventory.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("inventory");
}

pub use proto::inventory_client::InventoryClient;
pub use proto::inventory_server::InventoryServer;
pub use proto::{GetItemRequest, Item, Reservation, ReserveRequest};

/// The service name the inventory registers under.
pub const SERVICE: &str = "inventory";
/// The service the inventory calls to confirm reservations.
pub const GREETER: &str = "greeter";
/// The metadata key callers put their API key under.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Calls served at once; more wait for a turn.
pub const MAX_CONCURRENT_CALLS: usize = 64;

/// A stock of items, kept in memory.
pub struct Inventory {
    stock: Mutex<BTreeMap<String, Item>>,
    greeter: ServiceChannel,
}

impl Inventory {
    /// An inventory holding `items`, confirming reservations through `greeter`.
    pub fn new(greeter: ServiceChannel, items: impl IntoIterator<Item = Item>) -> Self {
        let stock = items.into_iter().map(|item| (item.id.clone(), item)).collect();
        Self {
            stock: Mutex::new(stock),
            greeter,
        }
    }

    /// A few items to start with.
    pub fn sample_stock() -> Vec<Item> {
        [("apple", "Apple", 10), ("pear", "Pear", 3), ("plum", "Plum", 0)]
            .into_iter()
            .map(|(id, name, available)| Item {
                id: id.into(),
                name: name.into(),
                available,
            })
            .collect()
    }

    fn stock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Item>> {
        // A handler that panicked mid-update leaves counts that are still whole numbers.
        self.stock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[tonic::async_trait]
impl proto::inventory_server::Inventory for Inventory {
    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        let id = request.into_inner().id;
        let item = self.stock().get(&id).cloned();
        item.map(Response::new).ok_or_else(|| no_such_item(&id))
    }

    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        let ReserveRequest { id, quantity, customer } = request.into_inner();
        if quantity == 0 {
            return Err(Status::invalid_argument("reserve a quantity of at least 1"));
        }
        if !self.stock().contains_key(&id) {
            return Err(no_such_item(&id));
        }
        // Confirm first: a reservation nobody could confirm is not taken off the stock.
        let confirmation = GreeterClient::new(self.greeter.clone())
            .say_hello(HelloRequest { name: customer })
            .await
            .map_err(|status| {
                Status::unavailable(format!(
                    "cannot confirm the reservation: the greeter answered {:?}: {}",
                    status.code(),
                    status.message()
                ))
            })?
            .into_inner()
            .message;
        let mut stock = self.stock();
        let item = stock.get_mut(&id).ok_or_else(|| no_such_item(&id))?;
        if item.available < quantity {
            reservations().with_label_values(&["refused"]).inc();
            return Err(Status::failed_precondition(format!(
                "only {} of {id} left, {quantity} asked for",
                item.available
            )));
        }
        item.available -= quantity;
        reservations().with_label_values(&["reserved"]).inc();
        Ok(Response::new(Reservation {
            id,
            quantity,
            remaining: item.available,
            confirmation,
        }))
    }
}

fn no_such_item(id: &str) -> Status {
    Status::not_found(format!("no item {id:?} in the inventory"))
}

/// `inventory_reservations_total{outcome="reserved"|"refused"}`, registered in jovian's
/// registry the first time it is used, so `/metrics` serves it.
pub fn reservations() -> &'static IntCounterVec {
    static RESERVATIONS: OnceLock<IntCounterVec> = OnceLock::new();
    RESERVATIONS.get_or_init(|| {
        let counter = IntCounterVec::new(
            Opts::new(
                "inventory_reservations_total",
                "Reservations asked for, by outcome (reserved, refused).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        jovian::metrics::registry()
            .register(Box::new(counter.clone()))
            .expect("registered once, here");
        for outcome in ["reserved", "refused"] {
            counter.with_label_values(&[outcome]);
        }
        counter
    })
}

/// The inventory as a jovian server: callers must send `api_key` as [`API_KEY_HEADER`]; at
/// most [`MAX_CONCURRENT_CALLS`] calls are served at once; a call running longer than
/// `time_limit` ends with `DEADLINE_EXCEEDED`.
pub fn inventory_server(inventory: Inventory, api_key: &str, time_limit: Duration) -> GrpcServer {
    let api_key: Arc<str> = api_key.into();
    let check_api_key = move |request: Request<()>| {
        let sent = request.metadata().get(API_KEY_HEADER).and_then(|v| v.to_str().ok());
        match sent {
            Some(sent) if sent == &*api_key => Ok(request),
            Some(_) => Err(Status::permission_denied("the API key is not valid")),
            None => Err(Status::unauthenticated(format!("send an API key as {API_KEY_HEADER}"))),
        }
    };
    // Registered now, so /metrics shows the counter at 0 before the first reservation.
    reservations();
    // Outermost first: unauthenticated calls are turned away before they wait for a turn.
    GrpcServer::new(SERVICE)
        .layer(tonic::service::InterceptorLayer::new(check_api_key))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT_CALLS))
        .layer(tower::timeout::TimeoutLayer::new(time_limit))
        .add_service(InventoryServer::new(inventory))
}

/// `message` as a request carrying `api_key` and a deadline `deadline` from now.
pub fn request<T>(message: T, api_key: &str, deadline: Duration) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(API_KEY_HEADER, api_key.parse()?);
    request.set_timeout(deadline);
    Ok(request)
}
