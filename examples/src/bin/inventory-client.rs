//! Looks an item up in the inventory, and reserves some of it, each call with a deadline.
//!
//! `inventory-client --registry etcd --api-key secret --item apple --reserve 2 --customer Ada`

use std::time::Duration;

use clap::Parser;
use jovian::ClientBuilder;
use jovian_examples::cli::RegistryArgs;
use jovian_examples::inventory::{GetItemRequest, InventoryClient, ReserveRequest, SERVICE, request};

#[derive(Parser)]
#[command(about = "Look up and reserve items in the inventory")]
struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The API key the inventory expects.
    #[arg(long, env = "INVENTORY_API_KEY")]
    api_key: String,
    /// The item to look up.
    #[arg(long, default_value = "apple")]
    item: String,
    /// How many to reserve, if any.
    #[arg(long)]
    reserve: Option<u32>,
    /// Who reserves.
    #[arg(long, default_value = "world")]
    customer: String,
    /// The deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let args = Args::parse();
    let deadline = Duration::from_millis(args.deadline_ms);
    let registry = args.registry.connect().await?;
    let mut inventory = InventoryClient::new(ClientBuilder::new(registry).build(SERVICE).await?);

    let lookup = GetItemRequest { id: args.item.clone() };
    let item = inventory
        .get_item(request(lookup, &args.api_key, deadline)?)
        .await?
        .into_inner();
    println!("{} ({}): {} available", item.name, item.id, item.available);

    if let Some(quantity) = args.reserve {
        let reserve = ReserveRequest {
            id: args.item,
            quantity,
            customer: args.customer,
        };
        let reservation = inventory
            .reserve(request(reserve, &args.api_key, deadline)?)
            .await?
            .into_inner();
        println!(
            "reserved {} of {}, {} left: {}",
            reservation.quantity, reservation.id, reservation.remaining, reservation.confirmation
        );
    }
    Ok(())
}
