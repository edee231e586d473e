//! Command-line interface of the `appliance` binary: the daemon and its admin commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::LogFormat;

#[path = "cli_push.rs"]
mod push;
pub use push::{GuestLoginArgs, PushArgs, PushCommand, PushJobsCommand, PushVia};

#[path = "cli_credential.rs"]
pub mod credential;
pub use credential::CredentialCommand;

#[derive(Debug, Parser)]
#[command(
    name = "appliance",
    version,
    about = "Ferry disaster-recovery appliance: the daemon and its admin commands"
)]
pub struct Cli {
    /// Configuration file [default: ./appliance.toml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// API token for commands that talk to the daemon [default: <data dir>/admin-token]
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance daemon
    Run(RunArgs),
    /// Show the agent registration passphrase
    #[command(subcommand)]
    Passphrase(PassphraseCommand),
    /// Print the SHA-256 fingerprint of the appliance CA (agents pin it); creates the CA if missing
    Fingerprint,
    /// Show the running appliance: versions, setup, actors, counters
    Status {
        /// Print the API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List or revoke registered agents (through the daemon; directly when it is stopped)
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// List protected machines with state, RPO and throughput (through the daemon)
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Inspect recovery points (through the daemon; from the vault with --vault or when it is stopped)
    #[command(subcommand)]
    Points(PointsCommand),
    /// Create API tokens for automation (through the daemon)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a disk of a recovery point to a file (works while the daemon runs)
    Restore(RestoreArgs),
    /// Add or list the vCenters whose VMs the appliance discovers (through the daemon)
    #[command(subcommand)]
    Vcenter(VcenterCommand),
    /// List the VMs discovered in vCenters (through the daemon)
    #[command(subcommand)]
    Vms(VmsCommand),
    /// Install, upgrade or uninstall the mobility agent in a Linux guest over SSH (through the daemon)
    #[command(subcommand)]
    Push(PushCommand),
    /// Store named guest logins that push installs use by id (through the daemon)
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Apply the OVF environment (hostname, network, NTP, admin password) once, at first boot
    Firstboot(FirstbootArgs),
    /// Write the VM console's login banner: addresses, CA fingerprint, setup token or login URL
    ConsoleBanner(ConsoleBannerArgs),
}

#[derive(Debug, Args)]
pub struct ConsoleBannerArgs {
    /// Where agetty reads the banner from
    #[arg(long, value_name = "PATH", default_value = crate::console_banner::DEFAULT_ISSUE_FILE)]
    pub issue_file: PathBuf,
    /// Seconds to wait for the management listener before writing what is known
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct FirstbootArgs {
    /// Root of the file system to write into
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Read the OVF environment from this file instead of guestinfo and the CD-ROM
    #[arg(long, value_name = "FILE")]
    pub ovf_env: Option<PathBuf>,
    /// Leave the block devices alone: no CD-ROM mount, data disk or root growth (they only ever
    /// run when --root is /)
    #[arg(long)]
    pub no_devices: bool,
}

impl FirstbootArgs {
    /// Devices are the running system's: touching them for another root would be wrong.
    pub fn touches_devices(&self) -> bool {
        !self.no_devices && self.root == std::path::Path::new("/")
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Log line format [default: the configuration's log_format, else human]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Print the registration passphrase alone on one line
    Show,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List registered agents
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: it can no longer replicate until it registers again
    Revoke {
        /// The agent id (see `agents list`)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    /// List machines
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VcenterCommand {
    /// Add a vCenter: the appliance logs in with these before it keeps them
    Add {
        /// https://host[:port][/sdk]
        #[arg(long)]
        url: String,
        /// vCenter user name
        #[arg(long)]
        username: String,
        /// File holding the vCenter password (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// The vCenter certificate's SHA-256 or SHA-1 thumbprint (hex, colons optional)
        #[arg(long)]
        thumbprint: String,
        /// Print the API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List vCenters with their discovery health
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Change a vCenter's credential or accept its new certificate thumbprint
    Update {
        /// The vCenter id (see `vcenter list`)
        id: String,
        /// New user name
        #[arg(long)]
        username: Option<String>,
        /// File holding the new password
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The certificate thumbprint to trust from now on
        #[arg(long)]
        thumbprint: Option<String>,
    },
    /// Stop discovering a vCenter and forget its inventory
    Remove {
        /// The vCenter id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmsCommand {
    /// List discovered VMs
    List {
        /// Only the VMs of this vCenter id [default: every vCenter]
        #[arg(long, value_name = "ID")]
        vcenter: Option<String>,
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Enable protection of a discovered VM: push-install the agent into it over SSH
    Protect(Box<VmProtectArgs>),
    /// Forget that protection of a VM was asked for (the agent stays installed)
    Unprotect {
        /// The vCenter id (see `vcenter list`)
        #[arg(long, value_name = "ID")]
        vcenter: String,
        /// The VM's managed object id (see `vms list`), e.g. vm-42
        #[arg(long)]
        moref: String,
    },
}

/// Which VM to protect and how to reach its guest.
#[derive(Debug, Args)]
pub struct VmProtectArgs {
    /// The vCenter id (see `vcenter list`)
    #[arg(long, value_name = "ID")]
    pub vcenter: String,
    /// The VM's managed object id (see `vms list`), e.g. vm-42
    #[arg(long)]
    pub moref: String,
    /// How to reach the guest: ssh, or vmware_tools (through its vCenter; password only)
    #[arg(long, value_parser = ["ssh", "vmware_tools"])]
    pub via: Option<String>,
    #[command(flatten)]
    pub login: GuestLoginArgs,
    /// Guest address [default: the VM's first guest IPv4 address VMware Tools reports]
    #[arg(long)]
    pub host: Option<String>,
    /// SSH port [default: 22]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// A disk of the guest to protect (block device or image file); repeat for more
    #[arg(long = "disk", value_name = "DISK", required = true)]
    pub disks: Vec<String>,
    /// Pin the guest's host key [default: the key recorded by an earlier job, else the one shown]
    #[arg(long, value_name = "SHA256:...")]
    pub host_key: Option<String>,
    /// Seconds between the agent's replication passes [default: the agent's]
    #[arg(long, value_name = "SECS")]
    pub interval_secs: Option<u64>,
    /// Follow the install until it ends, printing its log; exit non-zero unless it succeeded
    #[arg(long)]
    pub wait: bool,
    /// Print the API's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print its secret (shown once)
    Create {
        /// What the token is for, e.g. vcenter-plugin
        #[arg(long)]
        name: String,
        /// The user it acts as [default: admin]
        #[arg(long)]
        user: Option<String>,
        /// Days until it expires [default: 90, at most 730]
        #[arg(long, value_name = "DAYS")]
        ttl_days: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PointsCommand {
    /// List recovery points, one line per machine, disk and point
    List(PointsListArgs),
}

/// Which vault to read. Without these flags, the vault of the configuration (and the data
/// dir's vault-passphrase file) is used.
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// Vault location (path, file://, az://, s3:// URL) instead of the configured one
    #[arg(long = "vault", value_name = "URL")]
    pub url: Option<String>,
    /// File holding the vault passphrase instead of the configured one
    #[arg(long, value_name = "FILE")]
    pub vault_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PointsListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Image format of a restored disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImageFormat {
    /// Plain disk image (sparse)
    Raw,
    /// Fixed VHD, as Azure takes
    Vhd,
    /// VMDK
    Vmdk,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Machine id
    #[arg(long, value_name = "M")]
    pub machine: String,
    /// Disk id
    #[arg(long, value_name = "D")]
    pub disk: String,
    /// Point id, or "latest" for the newest point holding that disk
    #[arg(long, value_name = "ID|latest")]
    pub point: String,
    /// Output file
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value_t = ImageFormat::Raw)]
    pub format: ImageFormat,
    /// Chunk fetches in flight [default: 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: Option<u16>,
    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub vault: VaultArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("appliance").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_config_and_log_format() {
        let cli = parse(&["run", "--config", "a.toml", "--log-format", "json"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.log_format, Some(LogFormat::Json));
        assert!(parse(&["run", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn agents_and_points_subcommands_parse() {
        let cli = parse(&["agents", "revoke", "abc"]).unwrap();
        assert!(
            matches!(cli.command, Command::Agents(AgentsCommand::Revoke { id }) if id == "abc")
        );
        let cli = parse(&["agents", "list", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Agents(AgentsCommand::List { json: true })
        ));
        let cli = parse(&[
            "points",
            "list",
            "--vault",
            "/v",
            "--vault-passphrase-file",
            "/p",
        ])
        .unwrap();
        let Command::Points(PointsCommand::List(args)) = cli.command else {
            panic!("not points list")
        };
        assert_eq!(args.vault.url.as_deref(), Some("/v"));
        assert_eq!(args.vault.vault_passphrase_file, Some(PathBuf::from("/p")));
        assert!(!args.json);
    }

    #[test]
    fn restore_requires_its_arguments() {
        let cli = parse(&[
            "restore",
            "--machine",
            "m",
            "--disk",
            "d",
            "--point",
            "latest",
            "--out",
            "x.vhd",
            "--format",
            "vhd",
        ])
        .unwrap();
        let Command::Restore(args) = cli.command else {
            panic!("not restore")
        };
        assert_eq!(args.format, ImageFormat::Vhd);
        assert_eq!(args.point, "latest");
        assert!(parse(&["restore", "--machine", "m", "--disk", "d", "--point", "p"]).is_err());
        let defaulted = parse(&[
            "restore",
            "--machine",
            "m",
            "--disk",
            "d",
            "--point",
            "p",
            "--out",
            "o",
        ])
        .unwrap();
        let Command::Restore(args) = defaulted.command else {
            panic!("not restore")
        };
        assert_eq!(args.format, ImageFormat::Raw);
    }

    #[test]
    fn vcenter_update_and_remove_parse() {
        let cli = parse(&["vcenter", "update", "vc1", "--thumbprint", "AA:BB"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Vcenter(VcenterCommand::Update { id, thumbprint: Some(t), username: None, password_file: None })
                if id == "vc1" && t == "AA:BB"
        ));
        let cli = parse(&["vcenter", "remove", "vc1"]).unwrap();
        assert!(
            matches!(cli.command, Command::Vcenter(VcenterCommand::Remove { id }) if id == "vc1")
        );
        assert!(parse(&["vcenter", "remove"]).is_err());
    }

    #[test]
    fn vcenter_and_vms_subcommands_parse() {
        let cli = parse(&[
            "vcenter",
            "add",
            "--url",
            "https://vc.example/sdk",
            "--username",
            "administrator@vsphere.local",
            "--password-file",
            "/p",
            "--thumbprint",
            "AA:BB",
        ])
        .unwrap();
        let Command::Vcenter(VcenterCommand::Add {
            url,
            password_file,
            json,
            ..
        }) = cli.command
        else {
            panic!("not vcenter add")
        };
        assert_eq!(url, "https://vc.example/sdk");
        assert_eq!(password_file, PathBuf::from("/p"));
        assert!(!json);
        // The password never goes on the command line.
        assert!(parse(&[
            "vcenter",
            "add",
            "--url",
            "u",
            "--username",
            "n",
            "--thumbprint",
            "t"
        ])
        .is_err());
        assert!(matches!(
            parse(&["vcenter", "list", "--json"]).unwrap().command,
            Command::Vcenter(VcenterCommand::List { json: true })
        ));
        let cli = parse(&["vms", "list", "--vcenter", "abc", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Vms(VmsCommand::List { vcenter: Some(v), json: true }) if v == "abc"
        ));
        assert!(matches!(
            parse(&["vms", "list"]).unwrap().command,
            Command::Vms(VmsCommand::List {
                vcenter: None,
                json: false
            })
        ));
    }

    #[test]
    fn console_banner_and_firstboot_parse() {
        let Command::ConsoleBanner(args) = parse(&["console-banner"]).unwrap().command else {
            panic!("not console-banner")
        };
        assert_eq!(
            args.issue_file,
            PathBuf::from("/run/issue.d/50-ferry.issue")
        );
        assert_eq!(args.wait, 120);
        let cli = parse(&["console-banner", "--issue-file", "/tmp/x", "--wait", "0"]).unwrap();
        let Command::ConsoleBanner(args) = cli.command else {
            panic!("not console-banner")
        };
        assert_eq!((args.issue_file, args.wait), (PathBuf::from("/tmp/x"), 0));
        assert!(parse(&["console-banner", "--wait", "-1"]).is_err());
        assert!(parse(&["console-banner", "--wait", "soon"]).is_err());

        let Command::Firstboot(args) = parse(&["firstboot"]).unwrap().command else {
            panic!("not firstboot")
        };
        assert!(args.touches_devices());
        let Command::Firstboot(args) = parse(&["firstboot", "--root", "/tmp/r"]).unwrap().command
        else {
            panic!("not firstboot")
        };
        assert!(
            !args.touches_devices(),
            "another root never touches this machine's disks"
        );
        let Command::Firstboot(args) = parse(&["firstboot", "--no-devices"]).unwrap().command
        else {
            panic!("not firstboot")
        };
        assert!(!args.touches_devices());
    }

    #[test]
    fn config_flag_is_accepted_before_the_subcommand_too() {
        let cli = parse(&["--config", "c.toml", "fingerprint"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
    }
}
