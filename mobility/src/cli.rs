//! Command line: `mobility register | run | status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::agent::{Agent, RunOptions};
use crate::register::{read_passphrase_file, register, RegisterOptions};
use crate::state::StateDir;
use crate::status;

#[derive(Debug, Parser)]
#[command(
    name = "mobility",
    version,
    about = "Ferry mobility agent: replicates this machine's disks to a Ferry appliance"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register with an appliance (once), using its registration passphrase and CA fingerprint.
    Register {
        /// The appliance's replication address, HOST:PORT (port 9443).
        #[arg(long, value_name = "HOST:PORT")]
        appliance: String,
        /// File holding the registration passphrase.
        #[arg(long, value_name = "FILE")]
        passphrase_file: PathBuf,
        /// SHA-256 fingerprint of the appliance CA certificate (hex; colons allowed).
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: String,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Name to register under (default: this machine's host name).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// This machine's BIOS UUID, for when the agent cannot read it itself (default: read from
        /// sysfs, which needs root on most systems; without it the appliance cannot tell which
        /// vCenter VM this is).
        #[arg(long, value_name = "UUID", value_parser = parse_bios_uuid)]
        bios_uuid: Option<String>,
    },
    /// Replicate disks to the appliance.
    Run {
        /// A disk (block device or image file) to protect; repeat for more.
        #[arg(long = "disk", value_name = "PATH", required = true)]
        disks: Vec<PathBuf>,
        /// One pass and bookmark; exit when the recovery point is durable, printing its id.
        #[arg(long)]
        once: bool,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Seconds between passes (without --once).
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        interval: u64,
        /// With --once: seconds to wait for the point to become durable.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        timeout: u64,
    },
    /// Show registration, disks and replication progress.
    Status {
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command. `run` without `--once` returns when SIGTERM/SIGINT arrives.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Register {
            appliance,
            passphrase_file,
            ca_fingerprint,
            state_dir,
            hostname,
            bios_uuid,
        } => {
            let opts = RegisterOptions {
                appliance,
                passphrase: read_passphrase_file(&passphrase_file)?,
                ca_fingerprint,
                state_dir,
                hostname,
                bios_uuid,
            };
            let reg = register(&opts).await?;
            println!(
                "registered as agent {} with appliance {}",
                reg.agent_id, reg.appliance
            );
            Ok(())
        }
        Command::Run {
            disks,
            once,
            state_dir,
            interval,
            timeout,
        } => {
            let mut opts = RunOptions::new(disks);
            opts.state_dir = state_dir;
            opts.once = once;
            opts.interval = Duration::from_secs(interval);
            opts.timeout = Duration::from_secs(timeout);
            let agent = Agent::new(opts)?;
            tokio::select! {
                r = agent.run() => {
                    agent.shutdown();
                    let point = r?;
                    println!("{point}");
                    Ok(())
                }
                sig = shutdown_signal() => {
                    agent.shutdown();
                    tracing::info!("{sig}: tracker flushed, stopping");
                    if once {
                        anyhow::bail!("{sig} before the recovery point became durable");
                    }
                    Ok(())
                }
            }
        }
        Command::Status { state_dir, json } => {
            let state = StateDir::open(state_dir.as_deref())?;
            let report = status::report(&state)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            Ok(())
        }
    }
}

/// `--bios-uuid`: refused at parse time, before anything is sent, when it is not a UUID.
fn parse_bios_uuid(text: &str) -> Result<String, crate::bios_uuid::BiosUuidError> {
    crate::bios_uuid::normalize(text)
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register_args(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "mobility",
            "register",
            "--appliance",
            "127.0.0.1:9443",
            "--passphrase-file",
            "pw",
            "--ca-fingerprint",
            "ab",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn bios_uuid_flag_is_normalized_or_refused() {
        let Command::Register { bios_uuid, .. } =
            register_args(&["--bios-uuid", "4C4C4544-0042-3510-8052-B4C04F4B4D32"])
                .unwrap()
                .command
        else {
            panic!("not register");
        };
        assert_eq!(
            bios_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4b4d32")
        );
        let Command::Register { bios_uuid, .. } = register_args(&[]).unwrap().command else {
            panic!("not register");
        };
        assert_eq!(bios_uuid, None, "absent: read from the machine at register");
        for bad in ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
            let err = register_args(&["--bios-uuid", bad]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
            assert!(err.to_string().contains("--bios-uuid"), "{err}");
        }
    }
}
