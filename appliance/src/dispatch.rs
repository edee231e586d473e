//! What each command does: the glue between the command line and the modules.

use std::io::Write;

use crate::api_client::ApiClient;
use crate::cli::{
    AgentsCommand, Cli, Command, MachinesCommand, PassphraseCommand, PointsCommand, PushCommand,
    PushJobsCommand, TokenCommand, VaultArgs, VcenterCommand, VmsCommand,
};
use crate::config::Config;
use crate::vault_access::VaultLocation;
use crate::{
    agents_cmd, api_cmd, api_cmd_push, daemon, logging, points_cmd, secrets, tls, vault_access,
};

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    let token_file = cli.token_file.as_deref();
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
        Command::Status { json } => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::status(&api, json, &mut stdout))
        }
        Command::Agents(AgentsCommand::List { json }) => {
            admin_logging(&cfg)?;
            let through_api = with_daemon(&cfg, token_file, |api| async move {
                api_cmd::agents_list(&api, json, &mut std::io::stdout().lock()).await
            })?;
            if through_api {
                return Ok(());
            }
            agents_cmd::list(&cfg.data_dir, json, &mut stdout)
        }
        Command::Agents(AgentsCommand::Revoke { id }) => {
            admin_logging(&cfg)?;
            let agent = id.clone();
            let through_api = with_daemon(&cfg, token_file, |api| async move {
                api_cmd::agents_revoke(&api, &agent, &mut std::io::stdout().lock()).await
            })?;
            if through_api {
                return Ok(());
            }
            agents_cmd::revoke(&cfg.data_dir, &id, &mut stdout)
        }
        Command::Machines(MachinesCommand::List { json }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::machines_list(&api, json, &mut stdout))
        }
        Command::Token(TokenCommand::Create {
            name,
            user,
            ttl_days,
        }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::token_create(
                &api,
                &name,
                user.as_deref(),
                ttl_days,
                &mut stdout,
            ))
        }
        Command::Points(PointsCommand::List(args)) => {
            admin_logging(&cfg)?;
            let explicit_vault =
                args.vault.url.is_some() || args.vault.vault_passphrase_file.is_some();
            if !explicit_vault {
                let json = args.json;
                let through_api = with_daemon(&cfg, token_file, |api| async move {
                    api_cmd::points_list(&api, json, &mut std::io::stdout().lock()).await
                })?;
                if through_api {
                    return Ok(());
                }
            }
            let loc = vault_location(&cfg, &args.vault)?;
            admin_runtime()?.block_on(async {
                let vault = vault_access::open_vault_readonly(&loc).await?;
                points_cmd::list(&vault, args.json, &mut stdout).await
            })
        }
        Command::Vcenter(VcenterCommand::Add {
            url,
            username,
            password_file,
            thumbprint,
            json,
        }) => {
            admin_logging(&cfg)?;
            let password = api_cmd::read_password_file(&password_file)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            let new = api_cmd::NewVcenterArgs {
                url: &url,
                username: &username,
                password: &password,
                thumbprint: &thumbprint,
            };
            admin_runtime()?.block_on(api_cmd::vcenter_add(&api, &new, json, &mut stdout))
        }
        Command::Vcenter(VcenterCommand::Update {
            id,
            username,
            password_file,
            thumbprint,
        }) => {
            admin_logging(&cfg)?;
            let password = password_file
                .as_deref()
                .map(api_cmd::read_password_file)
                .transpose()?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            let body = serde_json::json!({
                "username": username,
                "password": password,
                "thumbprint": thumbprint,
            });
            admin_runtime()?.block_on(api_cmd::vcenter_update(&api, &id, &body, &mut stdout))
        }
        Command::Vcenter(VcenterCommand::Remove { id }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::vcenter_remove(&api, &id, &mut stdout))
        }
        Command::Vcenter(VcenterCommand::List { json }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::vcenter_list(&api, json, &mut stdout))
        }
        Command::Vms(VmsCommand::List { vcenter, json }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::vms_list(
                &api,
                vcenter.as_deref(),
                json,
                &mut stdout,
            ))
        }
        Command::Vms(VmsCommand::Protect(args)) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            let body = api_cmd::protect_request(&args)?;
            admin_runtime()?.block_on(api_cmd::vms_protect(&api, &args, &body, &mut stdout))
        }
        Command::Vms(VmsCommand::Unprotect { vcenter, moref }) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(api_cmd::vms_unprotect(&api, &vcenter, &moref, &mut stdout))
        }
        Command::Push(command) => {
            admin_logging(&cfg)?;
            push(&cfg, token_file, command, &mut stdout)
        }
        Command::Credential(command) => {
            admin_logging(&cfg)?;
            let api = ApiClient::from_config(&cfg, token_file)?;
            admin_runtime()?.block_on(crate::cli::credential::run(&api, command, &mut stdout))
        }
        Command::Firstboot(args) => {
            admin_logging(&cfg)?;
            firstboot(&args, &mut stdout)
        }
        Command::ConsoleBanner(args) => {
            admin_logging(&cfg)?;
            crate::console_banner::run(
                &cfg,
                &args.issue_file,
                std::time::Duration::from_secs(args.wait),
                &mut stdout,
            )
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

/// `firstboot`: never fails for a bad or missing OVF environment (that means DHCP and the web
/// setup), only when the root file system cannot be written. The device steps (CD-ROM, data
/// disk, root growth) print their failures and go on: the appliance must come up reachable.
fn firstboot(args: &crate::cli::FirstbootArgs, out: &mut impl Write) -> anyhow::Result<()> {
    use crate::firstboot::devices;
    let paths = devices::SystemPaths::under(&args.root);
    let runner = devices::SystemRunner;
    // Every line goes to the console now and into the summary the console banner shows later.
    let mut lines = Vec::new();
    let found = match &args.ovf_env {
        Some(file) => Some(crate::firstboot::FoundEnvironment {
            source: file.display().to_string(),
            document: crate::firstboot::read_limited(file)?,
        }),
        None => {
            let guestinfo =
                crate::firstboot::read_guestinfo().filter(|text| !text.trim().is_empty());
            // The ISO is only looked for when guestinfo, vSphere's default transport, is empty.
            let mut iso = Vec::new();
            if guestinfo.is_none() && args.touches_devices() {
                let scan = devices::read_cdroms(&paths, &runner);
                lines.extend(scan.lines);
                iso = scan.found;
            }
            let cdroms = crate::firstboot::cdrom_mounts(&args.root);
            match crate::firstboot::find_environment(guestinfo.as_deref(), &iso, &cdroms) {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(%err, "the OVF environment on the CD-ROM cannot be read");
                    None
                }
            }
        }
    };
    let plan = crate::firstboot::plan_for(found.as_ref());
    if let crate::firstboot::Network::Dhcp { reason } = &plan.network {
        tracing::warn!(%reason, "first boot leaves the network on DHCP");
    }
    let applied = crate::firstboot::apply(&args.root, &plan);
    match &applied {
        Ok(written) => lines.extend(crate::firstboot::describe(&plan, written)),
        Err(err) => lines.push(format!("first boot could not write its files: {err}")),
    }
    if args.touches_devices() {
        // systemd set the host name from /etc/hostname before first boot wrote it.
        if let Some(hostname) = &plan.hostname {
            if let Err(err) = std::fs::write("/proc/sys/kernel/hostname", hostname) {
                lines.push(format!("hostname: not applied until the next boot: {err}"));
            }
        }
        match devices::prepare_data_disk(&paths, &runner) {
            Ok(more) => lines.extend(more),
            Err(err) => lines.push(format!("data disk: not prepared: {err}")),
        }
        match devices::grow_root(&paths, &runner) {
            Ok(line) => lines.push(line),
            Err(err) => lines.push(format!("root file system: not grown: {err}")),
        }
    }
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    if let Err(err) = crate::firstboot::write_summary(&args.root, &lines) {
        writeln!(out, "{err}")?;
    }
    // Without its files written first boot has not happened: the unit runs again next boot.
    applied?;
    Ok(())
}

/// `push ...`: every one goes through the daemon (the jobs run there).
fn push(
    cfg: &Config,
    token_file: Option<&std::path::Path>,
    command: PushCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (operation, args) = match command {
        PushCommand::Install(args) => ("install", args),
        PushCommand::Upgrade(args) => ("upgrade", args),
        PushCommand::Uninstall(args) => ("uninstall", args),
        PushCommand::Jobs(jobs) => {
            let api = ApiClient::from_config(cfg, token_file)?;
            let rt = admin_runtime()?;
            return match jobs {
                PushJobsCommand::List { json } => {
                    rt.block_on(api_cmd_push::jobs_list(&api, json, out))
                }
                PushJobsCommand::Show { id, json } => {
                    rt.block_on(api_cmd_push::job_show(&api, &id, json, out))
                }
                PushJobsCommand::Cancel { id } => {
                    rt.block_on(api_cmd_push::job_cancel(&api, &id, out))
                }
            };
        }
        PushCommand::ForgetHostKey { host, port } => {
            let api = ApiClient::from_config(cfg, token_file)?;
            return admin_runtime()?
                .block_on(api_cmd_push::forget_host_key(&api, &host, port, out));
        }
    };
    // Secrets are read before the daemon is asked anything, so a bad file fails fast.
    let body = api_cmd_push::push_request(&args, operation)?;
    let api = ApiClient::from_config(cfg, token_file)?;
    admin_runtime()?.block_on(api_cmd_push::push_start(
        &api, &body, args.wait, args.json, out,
    ))
}

/// Runs `call` against the daemon's API. `Ok(false)` when there is no daemon to ask (no admin token
/// yet, or nothing listening), so the caller can do the same work offline.
fn with_daemon<F, Fut>(
    cfg: &Config,
    token_file: Option<&std::path::Path>,
    call: F,
) -> anyhow::Result<bool>
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let token_path = token_file.map_or_else(
        || crate::api_client::admin_token_path(&cfg.data_dir),
        Into::into,
    );
    if !token_path.exists() {
        return Ok(false);
    }
    let api = ApiClient::from_config(cfg, token_file)?;
    match admin_runtime()?.block_on(call(api)) {
        Ok(()) => Ok(true),
        Err(err) if api_cmd::daemon_absent(&err) => Ok(false),
        Err(err) => Err(err),
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
