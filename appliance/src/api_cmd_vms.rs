//! `appliance vms protect|unprotect`: enable protection of a discovered VM (a push install of the
//! agent, followed by the VM's protection state) through the daemon.

use std::io::Write;

use anyhow::Context;
use serde_json::{json, Value};

use super::{print_json, segment, text};
use crate::api_client::ApiClient;
use crate::api_cmd_push::{auth_body, follow, POLL};
use crate::cli::VmProtectArgs;

/// The body of `POST /api/v1/vcenters/{id}/vms/{moref}/protect`, secrets read from their files.
pub fn protect_request(args: &VmProtectArgs) -> anyhow::Result<Value> {
    let auth = auth_body(&args.login.files())?
        .context("give one of --key-file, --password-file and --credential")?;
    let mut body = json!({
        "username": args.login.user.as_deref().unwrap_or_default(),
        "auth": auth,
        "host": args.host,
        "port": args.port,
        "host_key": args.host_key,
        "disks": args.disks,
        "interval_secs": args.interval_secs,
    });
    // Left out unless given: the API's default is SSH.
    if let Some(via) = &args.via {
        body["via"] = json!(via);
    }
    Ok(body)
}

fn vm_path(vcenter: &str, moref: &str) -> String {
    format!(
        "/api/v1/vcenters/{}/vms/{}",
        segment(vcenter),
        segment(moref)
    )
}

/// `vms protect`: starts the install; with `wait`, follows its log and then shows the VM's
/// protection (non-zero exit unless it is protected).
pub async fn vms_protect(
    api: &ApiClient,
    args: &VmProtectArgs,
    body: &Value,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let path = vm_path(&args.vcenter, &args.moref);
    let started: Value = api.post(&format!("{path}/protect"), body).await?;
    let job = &started["job"];
    let id = text(job, "id").to_string();
    if !args.wait {
        if args.json {
            return print_json(out, &started);
        }
        writeln!(
            out,
            "installing the agent into {} over SSH at {}:{} (push job {id}); follow it with \
             `appliance push jobs show {id}`",
            args.moref,
            text(job, "host"),
            job["port"],
        )?;
        return Ok(());
    }
    if args.json {
        // The log goes to stderr so stdout stays one JSON document.
        follow(api, &id, POLL, &mut std::io::stderr().lock()).await?;
    } else {
        writeln!(out, "push job {id} installs the agent into {}:", args.moref)?;
        follow(api, &id, POLL, out).await?;
    }
    let vm: Value = api.get(&path).await?;
    let protection = &vm["protection"];
    if args.json {
        print_json(out, &vm)?;
    } else {
        writeln!(out, "{}", protection_line(&vm))?;
    }
    match protection["state"].as_str() {
        Some("protected") => Ok(()),
        _ => anyhow::bail!("{} is not protected", text(&vm, "name")),
    }
}

/// One line on a VM's protection.
fn protection_line(vm: &Value) -> String {
    let p = &vm["protection"];
    let mut line = format!("{}: {}", text(vm, "name"), text(p, "state"));
    if let Some(agent) = p["agent_id"].as_str() {
        line.push_str(&format!(", agent {agent}"));
    }
    if let Some(error) = p["error"].as_str() {
        line.push_str(&format!(": {error}"));
    }
    line
}

/// `vms unprotect`.
pub async fn vms_unprotect(
    api: &ApiClient,
    vcenter: &str,
    moref: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    api.delete(&format!("{}/protect", vm_path(vcenter, moref)))
        .await?;
    writeln!(
        out,
        "forgot the protection request of {moref}; an installed agent keeps replicating \
         (uninstall it with `appliance push uninstall`)"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::api_cmd_push::MAX_KEY_FILE;
    use crate::cli::{Cli, Command, VmsCommand};

    fn args_of(argv: &[&str]) -> VmProtectArgs {
        let mut full = vec!["appliance", "vms", "protect"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Vms(VmsCommand::Protect(args)) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_stored_credential_needs_no_user_or_secret_file() {
        let args = args_of(&[
            "--vcenter",
            "vc1",
            "--moref",
            "vm-42",
            "--credential",
            "c1",
            "--disk",
            "/dev/sda",
        ]);
        let body = protect_request(&args).unwrap();
        assert_eq!(body["auth"], json!({"kind": "credential", "id": "c1"}));
        assert_eq!(body["username"], "");
        // Neither a user nor any way to log in: clap refuses it.
        let none = Cli::try_parse_from([
            "appliance",
            "vms",
            "protect",
            "--vcenter",
            "vc1",
            "--moref",
            "vm-42",
        ]);
        assert!(none.is_err());
    }

    #[test]
    fn the_body_carries_the_secret_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "s3cret word\n").unwrap();
        let args = args_of(&[
            "--vcenter",
            "vc1",
            "--moref",
            "vm-42",
            "--user",
            "root",
            "--password-file",
            password.to_str().unwrap(),
            "--disk",
            "/dev/sda",
        ]);
        let body = protect_request(&args).unwrap();
        assert_eq!(
            body["auth"],
            json!({"kind": "password", "password": "s3cret word"})
        );
        assert_eq!(
            body["host"],
            Value::Null,
            "the appliance picks the VM's address"
        );
        assert_eq!(body["disks"], json!(["/dev/sda"]));
        assert!(body.get("via").is_none());

        let key = dir.path().join("key");
        std::fs::write(&key, "  \n").unwrap();
        let args = args_of(&[
            "--vcenter",
            "vc1",
            "--moref",
            "vm-42",
            "--user",
            "root",
            "--key-file",
            key.to_str().unwrap(),
            "--disk",
            "/dev/sda",
            "--host",
            "10.0.0.9",
        ]);
        let err = protect_request(&args).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&key, vec![b'k'; (MAX_KEY_FILE + 1) as usize]).unwrap();
        assert!(protect_request(&args).is_err());
        std::fs::remove_file(&key).unwrap();
        assert!(protect_request(&args).is_err(), "a missing key file");
    }

    #[test]
    fn bad_command_lines_are_refused() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["appliance", "vms", "protect"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full)
        };
        let base = ["--vcenter", "vc1", "--moref", "vm-1", "--user", "root"];
        // No secret, two secrets, no disk, port 0.
        assert!(parse(&[&base[..], &["--disk", "/dev/sda"]].concat()).is_err());
        assert!(parse(
            &[
                &base[..],
                &["--disk", "d", "--key-file", "k", "--password-file", "p"]
            ]
            .concat()
        )
        .is_err());
        assert!(parse(&[&base[..], &["--password-file", "p"]].concat()).is_err());
        assert!(parse(
            &[
                &base[..],
                &["--password-file", "p", "--disk", "d", "--port", "0"]
            ]
            .concat()
        )
        .is_err());
        assert!(
            Cli::try_parse_from(["appliance", "vms", "unprotect", "--vcenter", "vc1"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "appliance",
            "vms",
            "unprotect",
            "--vcenter",
            "v",
            "--moref",
            "m"
        ])
        .is_ok());
    }

    #[test]
    fn protection_lines_name_the_agent_or_the_error() {
        let vm = json!({"name": "web", "protection": {"state": "protected", "agent_id": "a1"}});
        assert_eq!(protection_line(&vm), "web: protected, agent a1");
        let vm = json!({"name": "db", "protection": {"state": "failed", "error": "timeout: no"}});
        assert_eq!(protection_line(&vm), "db: failed: timeout: no");
        assert_eq!(vm_path("a b", "vm-1"), "/api/v1/vcenters/a%20b/vms/vm-1");
    }
}
