//! Writing a [`Plan`] into a root file system. Every file is replaced atomically and a file the
//! plan no longer calls for is removed, so running twice (or after a power cut) ends the same.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::plan::{Network, Plan};
use super::FirstbootError;
use crate::files;

pub const HOSTNAME_FILE: &str = "etc/hostname";
/// Sorts before the image's 90-dhcp.network, so it wins when present.
pub const STATIC_NETWORK_FILE: &str = "etc/systemd/network/10-ferry-static.network";
pub const TIMESYNCD_FILE: &str = "etc/systemd/timesyncd.conf.d/ferry.conf";
/// Under /etc, not the data folder: first boot runs before the data disk is mounted there.
pub const ADMIN_PASSWORD_FILE: &str = "etc/ferry/firstboot-admin-password";
/// `APPLIANCE_*` overrides for the daemon (its unit reads this as an EnvironmentFile).
pub const ENV_FILE: &str = "etc/ferry/firstboot.env";
/// What was applied; its presence also stops the first-boot unit from running again.
pub const DONE_FILE: &str = "etc/ferry/firstboot.done";
/// What first boot did, line by line, for the console banner (never a secret).
pub const SUMMARY_FILE: &str = "etc/ferry/firstboot-summary.txt";

const CONFIG_FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The record in firstboot.done: the plan without the password, and which files were written.
#[derive(Serialize)]
struct DoneRecord<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    admin_password_set: bool,
    agent_data_address: Option<String>,
    files: Vec<String>,
}

/// Applies `plan` under `root` (`/` on the appliance). Returns the files written, relative to root.
pub fn apply(root: &Path, plan: &Plan) -> Result<Vec<String>, FirstbootError> {
    let mut written = Vec::new();
    let mut put = |rel: &str, contents: Option<String>, mode: u32| -> Result<(), FirstbootError> {
        let path = root.join(rel);
        match contents {
            Some(text) => {
                write(&path, text.as_bytes(), mode)?;
                written.push(format!("/{rel}"));
            }
            None => remove(&path)?,
        }
        Ok(())
    };

    // Without a hostname the image's own /etc/hostname stays: it is not ours to remove.
    if let Some(hostname) = &plan.hostname {
        put(
            HOSTNAME_FILE,
            Some(format!("{hostname}\n")),
            CONFIG_FILE_MODE,
        )?;
    }
    put(
        STATIC_NETWORK_FILE,
        static_network_unit(&plan.network),
        CONFIG_FILE_MODE,
    )?;
    put(TIMESYNCD_FILE, timesyncd_conf(&plan.ntp), CONFIG_FILE_MODE)?;
    put(
        ADMIN_PASSWORD_FILE,
        plan.admin_password.as_ref().map(|p| format!("{p}\n")),
        files::PRIVATE_FILE_MODE,
    )?;
    put(ENV_FILE, env_file(plan), CONFIG_FILE_MODE)?;

    let record = DoneRecord {
        plan,
        admin_password_set: plan.admin_password.is_some(),
        agent_data_address: plan.agent_data_address(),
        files: written.clone(),
    };
    let mut json = serde_json::to_string_pretty(&record).map_err(|e| FirstbootError::Write {
        path: root.join(DONE_FILE),
        source: io::Error::other(e),
    })?;
    json.push('\n');
    write(&root.join(DONE_FILE), json.as_bytes(), CONFIG_FILE_MODE)?;
    written.push(format!("/{DONE_FILE}"));
    Ok(written)
}

fn static_network_unit(network: &Network) -> Option<String> {
    let Network::Static {
        address,
        prefix,
        gateway,
        dns,
    } = network
    else {
        return None;
    };
    let mut unit = String::from(
        "# Written by ferry first boot from the OVF environment.\n[Match]\nType=ether\n\n[Network]\n",
    );
    unit.push_str(&format!("Address={address}/{prefix}\n"));
    if let Some(gateway) = gateway {
        unit.push_str(&format!("Gateway={gateway}\n"));
    }
    for server in dns {
        unit.push_str(&format!("DNS={server}\n"));
    }
    Some(unit)
}

fn timesyncd_conf(ntp: &[String]) -> Option<String> {
    if ntp.is_empty() {
        return None;
    }
    Some(format!(
        "# Written by ferry first boot from the OVF environment.\n[Time]\nNTP={}\n",
        ntp.join(" ")
    ))
}

fn env_file(plan: &Plan) -> Option<String> {
    let mut env = String::new();
    if let Some(address) = plan.agent_data_address() {
        env.push_str(&format!("APPLIANCE_AGENT_DATA_ADDRESS={address}\n"));
    }
    if plan.admin_password.is_some() {
        env.push_str(&format!(
            "APPLIANCE_ADMIN_PASSWORD_FILE=/{ADMIN_PASSWORD_FILE}\n"
        ));
    }
    (!env.is_empty()).then_some(env)
}

fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), FirstbootError> {
    let wrap = |source| FirstbootError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        files::create_dir_all(dir, DIR_MODE).map_err(wrap)?;
    }
    files::replace_file(path, contents, mode).map_err(wrap)
}

fn remove(path: &Path) -> Result<(), FirstbootError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FirstbootError::Write {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// Keeps the lines an administrator looks for on the console (what was applied, skipped or
/// formatted), not the list of files written.
pub fn write_summary(root: &Path, lines: &[String]) -> Result<(), FirstbootError> {
    let mut text: String = lines
        .iter()
        .filter(|line| !line.starts_with("wrote "))
        .map(|line| format!("{line}\n"))
        .collect();
    if text.is_empty() {
        text.push_str("nothing to report\n");
    }
    write(&root.join(SUMMARY_FILE), text.as_bytes(), CONFIG_FILE_MODE)
}
