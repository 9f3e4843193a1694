//! The interop server on jovian: an `App` serving TestService on the given port, with the
//! in-memory registry (nothing else needs to find it), until SIGINT or SIGTERM.
//!
//! `jovian-interop-server --port 10000`

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use jovian::{App, GrpcServer};
use jovian_interop::SERVICE;
use jovian_interop::echo::EchoLayer;
use jovian_interop::service::test_service;
use jovian_registry_memory::MemoryRegistry;

#[derive(Parser)]
#[command(about = "Serve gRPC's interop TestService on jovian")]
struct Args {
    /// The port to listen on.
    #[arg(long, default_value_t = 10000)]
    port: u16,
    /// The address to listen on (grpc-go's server listens on every one).
    #[arg(long = "host", default_value = "0.0.0.0")]
    host: IpAddr,
    /// TLS is not supported; accepted so that scripts can pass `--use_tls=false`.
    #[arg(long = "use_tls", default_value_t = false, action = clap::ArgAction::Set)]
    use_tls: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let args = Args::parse();
    anyhow::ensure!(!args.use_tls, "--use_tls=true is not supported");
    let server = GrpcServer::new(SERVICE)
        .bind(SocketAddr::new(args.host, args.port))
        .layer(EchoLayer)
        .add_service(test_service());
    let running = App::new()
        .registry(MemoryRegistry::new())
        .drain_delay(Duration::ZERO)
        .serve(server)
        .start()
        .await?;
    println!("interop server listening on {}", running.local_addrs()[0]);
    running.wait().await?;
    Ok(())
}
