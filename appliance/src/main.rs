//! `appliance`: the Ferry appliance daemon (`appliance run`) and its admin commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = appliance::cli::Cli::parse();
    match appliance::dispatch::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
