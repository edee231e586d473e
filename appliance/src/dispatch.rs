//! What each command does: the glue between the command line and the modules.

use std::io::Write;

use crate::cli::{AgentsCommand, Cli, Command, PassphraseCommand, PointsCommand, VaultArgs};
use crate::config::Config;
use crate::vault_access::VaultLocation;
use crate::{agents_cmd, daemon, logging, points_cmd, secrets, tls, vault_access};

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Run(args) => {
            if let Some(format) = args.log_format {
                cfg.log_format = format;
            }
            drop(stdout);
            logging::init(cfg.log_format, logging::DEFAULT_FILTER)?;
            // The data path's actors need an actix System around them.
            actix_rt::System::new().block_on(daemon::run(cfg))
        }
        Command::Passphrase(PassphraseCommand::Show) => {
            let passphrase = secrets::read_registration_passphrase(&cfg.data_dir)?;
            writeln!(stdout, "{passphrase}")?;
            Ok(())
        }
        Command::Fingerprint => {
            admin_logging(&cfg)?;
            let tls = tls::ApplianceTls::load_or_create(&cfg.data_dir, &cfg.server_names)?;
            writeln!(stdout, "{}", tls.ca_fingerprint())?;
            Ok(())
        }
        Command::Agents(AgentsCommand::List { json }) => {
            admin_logging(&cfg)?;
            agents_cmd::list(&cfg.data_dir, json, &mut stdout)
        }
        Command::Agents(AgentsCommand::Revoke { id }) => {
            admin_logging(&cfg)?;
            agents_cmd::revoke(&cfg.data_dir, &id, &mut stdout)
        }
        Command::Points(PointsCommand::List(args)) => {
            admin_logging(&cfg)?;
            let loc = vault_location(&cfg, &args.vault)?;
            admin_runtime()?.block_on(async {
                let vault = vault_access::open_vault_readonly(&loc).await?;
                points_cmd::list(&vault, args.json, &mut stdout).await
            })
        }
        Command::Restore(args) => {
            admin_logging(&cfg)?;
            let loc = vault_location(&cfg, &args.vault)?;
            admin_runtime()?.block_on(async {
                let vault = vault_access::open_vault_readonly(&loc).await?;
                points_cmd::restore(&vault, &args, &mut stdout).await
            })
        }
    }
}

fn vault_location(cfg: &Config, args: &VaultArgs) -> anyhow::Result<VaultLocation> {
    VaultLocation::resolve(
        cfg,
        args.url.as_deref(),
        args.vault_passphrase_file.as_deref(),
    )
}

fn admin_logging(cfg: &Config) -> anyhow::Result<()> {
    logging::init(cfg.log_format, logging::ADMIN_FILTER)
}

fn admin_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
