//! A Greeter server that registers itself and runs until SIGINT or SIGTERM.
//!
//! `greeter-server --registry etcd --etcd-endpoints 127.0.0.1:2379 --listen 127.0.0.1:0`

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use jovian_examples::cli::RegistryArgs;

#[derive(Parser)]
#[command(about = "Serve the Greeter and register it")]
struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The service name to register under.
    #[arg(long, default_value = "greeter")]
    service: String,
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The host:port to register instead of the bound address.
    #[arg(long)]
    advertise: Option<String>,
    /// The zone to register.
    #[arg(long, default_value = "")]
    zone: String,
    /// How long to keep serving after unregistering, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let args = Args::parse();
    let registry = args.registry.connect().await?;
    let zone = args.zone.clone();
    let mut server = jovian_examples::greeter_server(&args.service)
        .bind(args.listen)
        .map_info(|info| info.with_zone(zone));
    if let Some(advertise) = &args.advertise {
        server = server.advertise(advertise.clone());
    }
    // Operators configure the server through jovian.toml and JOVIAN_*; the flags win.
    let running = jovian::App::from_config(jovian::Config::load()?)
        .name("greeter-server")
        .registry(registry)
        .drain_delay(Duration::from_millis(args.drain_ms))
        .serve(server)
        .start()
        .await?;
    for info in running.registrations() {
        println!("serving {} on {}", info.name, info.address);
    }
    running.wait().await?;
    println!("stopped");
    Ok(())
}
