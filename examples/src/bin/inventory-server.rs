//! The inventory server: registers itself, confirms reservations through the Greeter found in
//! the same registry, and runs until SIGINT or SIGTERM.
//!
//! `inventory-server --registry etcd --etcd-endpoints 127.0.0.1:2379 --api-key secret`
//! (start a `greeter-server` too). Settings not given as flags come from `jovian.toml` and
//! `JOVIAN_*`, e.g. `JOVIAN_GOVERNOR__ENABLED=true` for `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use jovian::{App, Config};
use jovian_examples::cli::RegistryArgs;
use jovian_examples::inventory::{GREETER, Inventory, inventory_server};

#[derive(Parser)]
#[command(about = "Serve the inventory and register it")]
struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The API key callers must send.
    #[arg(long, env = "INVENTORY_API_KEY")]
    api_key: String,
    /// Longest a call may run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    time_limit_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let args = Args::parse();
    let registry = args.registry.connect().await?;
    let app = App::from_config(Config::load()?)
        .name("inventory")
        .registry(registry.clone());
    let greeter = app.client(GREETER).await?;
    let inventory = Inventory::new(greeter, Inventory::sample_stock());
    let server =
        inventory_server(inventory, &args.api_key, Duration::from_millis(args.time_limit_ms)).bind(args.listen);
    let running = app.serve(server).start().await?;
    for info in running.registrations() {
        println!("serving {} on {}", info.name, info.address);
    }
    if let Some(governor) = running.governor_addr() {
        println!("metrics on http://{governor}/metrics");
    }
    running.wait().await?;
    registry.close().await?;
    println!("stopped");
    Ok(())
}
