//! The interop client on jovian: runs one case over a `ServiceChannel` with the client's
//! default options, and exits non-zero saying what failed. Flags are grpc-go's interop
//! client's, so scripts that drive one drive the other.
//!
//! `jovian-interop-client --server_host 127.0.0.1 --server_port 10000 --test_case large_unary`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jovian_interop::cases::{COMPRESSION, STANDARD, is_case, run};
use jovian_interop::channel::InteropChannel;

/// How long a case may take in all: the longest case waits a few seconds at most, so a case
/// still running then is hung, and says so rather than hanging its caller.
const CASE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Run one of gRPC's interop cases with a jovian client")]
struct Args {
    /// The server's host name or IP address.
    #[arg(long = "server_host", default_value = "localhost")]
    server_host: String,
    /// The server's port.
    #[arg(long = "server_port", default_value_t = 10000)]
    server_port: u16,
    /// The case to run.
    #[arg(long = "test_case", default_value = "large_unary")]
    test_case: String,
    /// TLS is not supported; accepted so that scripts can pass `--use_tls=false`.
    #[arg(long = "use_tls", default_value_t = false, action = clap::ArgAction::Set)]
    use_tls: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    jovian::trace::init_logging();
    let args = Args::parse();
    if args.use_tls {
        eprintln!("--use_tls=true is not supported");
        return ExitCode::FAILURE;
    }
    if !is_case(&args.test_case) {
        eprintln!(
            "unknown test case {:?}; the cases are {}",
            args.test_case,
            [STANDARD, COMPRESSION].concat().join(", ")
        );
        return ExitCode::FAILURE;
    }
    let channel = match InteropChannel::connect(&args.server_host, args.server_port).await {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!(
                "cannot make a channel to {}:{}: {error}",
                args.server_host, args.server_port
            );
            return ExitCode::FAILURE;
        }
    };
    match tokio::time::timeout(CASE_LIMIT, run(&args.test_case, &channel.channel)).await {
        Ok(Ok(())) => {
            println!("{}: passed", args.test_case);
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("{}: FAILED: {error:#}", args.test_case);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{}: FAILED: still running after {CASE_LIMIT:?}", args.test_case);
            ExitCode::FAILURE
        }
    }
}
