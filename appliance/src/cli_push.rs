//! `appliance push ...`: push installs of the mobility agent over SSH or through VMware Tools, through
//! the daemon.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// How the appliance reaches the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PushVia {
    /// SSH to --host
    #[default]
    Ssh,
    /// vSphere guest operations through the vCenter of --vm (vc-1/vm-42)
    VmwareTools,
}

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Install the agent, register it with a one-time token and start it as a service
    Install(PushArgs),
    /// Replace the agent binary and restart it
    Upgrade(PushArgs),
    /// Stop the agent and remove everything it installed
    Uninstall(PushArgs),
    /// Follow push jobs
    #[command(subcommand)]
    Jobs(PushJobsCommand),
    /// Forget a guest's recorded SSH host key (after it was reinstalled)
    ForgetHostKey {
        /// Guest host name or IP address, as the jobs named it
        #[arg(long)]
        host: String,
        /// SSH port
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
}

/// How to sign in to the guest, for push jobs and `vms protect`. Secrets are read from files, never
/// from the command line.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("auth").required(true).args(["key_file", "password_file", "credential"])))]
pub struct GuestLoginArgs {
    /// Guest user (root, or a user allowed to sudo without a password) [default: the credential's]
    #[arg(long, required_unless_present = "credential")]
    pub user: Option<String>,
    /// A stored guest login to use instead of --user and a secret file (see `credential list`)
    #[arg(long, value_name = "ID")]
    pub credential: Option<String>,
    /// File holding the SSH private key (OpenSSH or PEM)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// File holding the passphrase of an encrypted private key
    #[arg(
        long,
        value_name = "FILE",
        requires = "key_file",
        conflicts_with = "password_file"
    )]
    pub key_passphrase_file: Option<PathBuf>,
    /// File holding the guest user's password (one trailing newline is ignored)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl GuestLoginArgs {
    pub fn files(&self) -> crate::api_cmd_push::LoginFiles<'_> {
        crate::api_cmd_push::LoginFiles {
            key_file: self.key_file.as_deref(),
            key_passphrase_file: self.key_passphrase_file.as_deref(),
            password_file: self.password_file.as_deref(),
            credential: self.credential.as_deref(),
        }
    }
}

/// The guest and what to do there.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// How to reach the guest: over SSH (--host), or through VMware Tools via the vCenter of --vm
    /// [default: ssh]
    #[arg(long, value_enum)]
    pub via: Option<PushVia>,
    /// Guest host name or IP address, as the appliance reaches it (SSH only)
    #[arg(long, required_unless_present = "via")]
    pub host: Option<String>,
    /// SSH port
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    #[command(flatten)]
    pub login: GuestLoginArgs,
    /// The VM: a vCenter id and managed object id (vc-1/vm-42) or, over SSH, a free label
    #[arg(long)]
    pub vm: String,
    /// A disk of the guest to protect (block device or image file); repeat for more (install)
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<String>,
    /// Pin the guest's host key [default: the key recorded by an earlier job, else the one shown]
    #[arg(long, value_name = "SHA256:...")]
    pub host_key: Option<String>,
    /// Install folder on the guest [default: /opt/ferry-mobility]
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
    /// The appliance's replication address as the guest reaches it [default: agent_data_address]
    #[arg(long, value_name = "HOST:PORT")]
    pub appliance_addr: Option<String>,
    /// Seconds between the agent's replication passes [default: the agent's]
    #[arg(long, value_name = "SECS")]
    pub interval_secs: Option<u64>,
    /// Follow the job until it ends, printing its log; exit non-zero unless it succeeded (Ctrl-C
    /// stops following, not the job)
    #[arg(long)]
    pub wait: bool,
    /// Print the API's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PushJobsCommand {
    /// List push jobs, newest first
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a push job with its log
    Show {
        /// The job id (see `push jobs list`)
        id: String,
        /// Print the API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running push job
    Cancel {
        /// The job id
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("appliance").chain(args.iter().copied()))
    }

    #[test]
    fn push_subcommands_parse() {
        let cli = parse(&[
            "push",
            "install",
            "--host",
            "10.0.0.5",
            "--user",
            "root",
            "--key-file",
            "/k",
            "--vm",
            "vc-1/vm-42",
            "--disk",
            "/dev/sda",
            "--disk",
            "/dev/sdb",
            "--host-key",
            "SHA256:abc",
            "--wait",
        ])
        .unwrap();
        let Command::Push(PushCommand::Install(args)) = cli.command else {
            panic!("not push install")
        };
        assert_eq!(args.port, 22);
        assert_eq!(args.login.key_file, Some(PathBuf::from("/k")));
        assert_eq!(args.login.password_file, None);
        assert_eq!(args.disks, ["/dev/sda", "/dev/sdb"]);
        assert_eq!(args.host_key.as_deref(), Some("SHA256:abc"));
        assert!(args.wait && !args.json);
        let cli = parse(&[
            "push",
            "uninstall",
            "--host",
            "h",
            "--port",
            "2222",
            "--user",
            "u",
            "--password-file",
            "/p",
            "--vm",
            "v",
            "--prefix",
            "/opt/x",
        ])
        .unwrap();
        let Command::Push(PushCommand::Uninstall(args)) = cli.command else {
            panic!("not push uninstall")
        };
        assert_eq!(args.port, 2222);
        assert_eq!(args.login.password_file, Some(PathBuf::from("/p")));
        assert_eq!(args.prefix.as_deref(), Some("/opt/x"));
        assert!(args.disks.is_empty());
        assert!(matches!(
            parse(&["push", "jobs", "list", "--json"]).unwrap().command,
            Command::Push(PushCommand::Jobs(PushJobsCommand::List { json: true }))
        ));
        assert!(matches!(
            parse(&["push", "jobs", "show", "abc"]).unwrap().command,
            Command::Push(PushCommand::Jobs(PushJobsCommand::Show { id, json: false })) if id == "abc"
        ));
        assert!(matches!(
            parse(&["push", "jobs", "cancel", "abc"]).unwrap().command,
            Command::Push(PushCommand::Jobs(PushJobsCommand::Cancel { id })) if id == "abc"
        ));
        assert!(matches!(
            parse(&["push", "forget-host-key", "--host", "h"]).unwrap().command,
            Command::Push(PushCommand::ForgetHostKey { host, port: 22 }) if host == "h"
        ));
    }

    #[test]
    fn push_through_vmware_tools_needs_no_host() {
        let cli = parse(&[
            "push",
            "install",
            "--via",
            "vmware-tools",
            "--user",
            "root",
            "--password-file",
            "/p",
            "--vm",
            "vc-1/vm-42",
        ])
        .unwrap();
        let Command::Push(PushCommand::Install(args)) = cli.command else {
            panic!("not push install")
        };
        assert_eq!((args.via, args.host), (Some(PushVia::VmwareTools), None));
        assert!(parse(&[
            "push",
            "install",
            "--via",
            "telnet",
            "--user",
            "u",
            "--password-file",
            "/p",
            "--vm",
            "v"
        ])
        .is_err());
    }

    #[test]
    fn push_refuses_bad_command_lines() {
        let base = ["push", "install", "--host", "h", "--user", "u", "--vm", "v"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        // A way to log in is required, exactly one, and secrets come only from files.
        assert!(with(&[]).is_err());
        assert!(with(&["--key-file", "/k", "--password-file", "/p"]).is_err());
        assert!(with(&["--password", "x"]).is_err());
        assert!(with(&["--password-file", "/p", "--key-passphrase-file", "/q"]).is_err());
        assert!(with(&["--key-file", "/k", "--key-passphrase-file", "/q"]).is_ok());
        for port in ["0", "65536", "ssh"] {
            assert!(
                with(&["--key-file", "/k", "--port", port]).is_err(),
                "{port}"
            );
        }
        assert!(parse(&[
            "push",
            "install",
            "--user",
            "u",
            "--vm",
            "v",
            "--key-file",
            "/k"
        ])
        .is_err());
        assert!(parse(&[
            "push",
            "install",
            "--host",
            "h",
            "--vm",
            "v",
            "--key-file",
            "/k"
        ])
        .is_err());
        assert!(parse(&[
            "push",
            "upgrade",
            "--host",
            "h",
            "--user",
            "u",
            "--key-file",
            "/k"
        ])
        .is_err());
        assert!(parse(&["push", "jobs", "show"]).is_err());
        assert!(parse(&["push", "jobs", "cancel"]).is_err());
        assert!(parse(&["push", "reinstall"]).is_err());
    }
}
