//! Calls the Greeter through the registry and prints which instance answered each call.
//! Balancing, filters, deadline and retries come from `[clients.<service>]` of the jovian
//! config (`jovian.toml`, `JOVIAN_CLIENTS__<SERVICE>__*`).
//!
//! `greeter-client --registry etcd --etcd-endpoints 127.0.0.1:2379 --calls 10`

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use jovian::ClientBuilder;
use jovian_examples::cli::RegistryArgs;
use jovian_examples::{GreeterClient, HelloRequest, replying_address};

#[derive(Parser)]
#[command(about = "Call the Greeter through the registry")]
struct Args {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The service name to call.
    #[arg(long, default_value = "greeter")]
    service: String,
    /// How many calls to make.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Pause between calls, in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// The name to greet.
    #[arg(long, default_value = "world")]
    name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jovian::trace::init_logging();
    let args = Args::parse();
    let config = jovian::Config::load()?;
    let registry = args.registry.connect_with(&config).await?;
    let options = config.client(&args.service)?;
    let channel = ClientBuilder::new(registry)
        .options(options)
        .build(&args.service)
        .await?;
    let mut client = GreeterClient::new(channel);
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for call in 1..=args.calls {
        let request = HelloRequest {
            name: args.name.clone(),
        };
        match client.say_hello(request).await {
            Ok(reply) => {
                let message = reply.into_inner().message;
                println!("call {call}: {message}");
                *answered.entry(replying_address(&message).to_owned()).or_default() += 1;
            }
            Err(status) => {
                println!("call {call}: failed: {} {}", status.code(), status.message());
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    for (instance, calls) in &answered {
        println!("{instance}: {calls} calls");
    }
    println!("{} ok, {failed} failed", args.calls - failed);
    if failed > 0 {
        anyhow::bail!("{failed} of {} calls failed", args.calls);
    }
    Ok(())
}
