//! `jovianctl`: see the crate documentation (`jovian_cli`) or `jovianctl --help`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jovian_cli::Cli::parse();
    match jovian_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jovianctl: {error}");
            ExitCode::FAILURE
        }
    }
}
