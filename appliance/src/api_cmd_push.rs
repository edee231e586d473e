//! `appliance push ...`: push installs of the mobility agent through the daemon's API
//! (`/api/v1/push-jobs`), and following their jobs. SSH secrets are read from files and go only into
//! the request body.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::api_client::ApiClient;
use crate::api_cmd::{print_json, read_password_file, segment, table, text};
use crate::cli::{PushArgs, PushVia};

/// How often `--wait` asks for the job.
pub const POLL: Duration = Duration::from_secs(1);
/// A private key file larger than this is no key (the API takes at most 64 KiB of JSON).
pub(crate) const MAX_KEY_FILE: u64 = 64 << 10;

/// Where a guest login comes from on the command line: secret files, or a stored credential.
pub struct LoginFiles<'a> {
    pub key_file: Option<&'a std::path::Path>,
    pub key_passphrase_file: Option<&'a std::path::Path>,
    pub password_file: Option<&'a std::path::Path>,
    pub credential: Option<&'a str>,
}

fn read_key_file(path: &std::path::Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading the key file {}", path.display()))?
        .len();
    if size > MAX_KEY_FILE {
        anyhow::bail!(
            "the key file {} is larger than 64 KiB: is it a private key?",
            path.display()
        );
    }
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    if key.trim().is_empty() {
        anyhow::bail!("the key file {} is empty", path.display());
    }
    Ok(key)
}

/// The API's `auth` object, secrets read from their files; `None` when nothing was given.
/// Push jobs, protect requests and stored credentials all send this shape.
pub fn auth_body(login: &LoginFiles<'_>) -> anyhow::Result<Option<Value>> {
    Ok(Some(
        match (login.key_file, login.password_file, login.credential) {
            (None, None, None) => return Ok(None),
            (None, None, Some(id)) => json!({"kind": "credential", "id": id}),
            (Some(key_file), None, None) => {
                let passphrase = login
                    .key_passphrase_file
                    .map(read_password_file)
                    .transpose()?;
                json!({"kind": "private_key", "private_key": read_key_file(key_file)?,
                    "passphrase": passphrase})
            }
            (None, Some(password_file), None) => {
                json!({"kind": "password", "password": read_password_file(password_file)?})
            }
            _ => {
                anyhow::bail!("give exactly one of --key-file, --password-file and --credential")
            }
        },
    ))
}

/// The body of `POST /api/v1/push-jobs` for `operation` (`install`, `upgrade`, `uninstall`),
/// with the secrets read from their files.
pub fn push_request(args: &PushArgs, operation: &str) -> anyhow::Result<Value> {
    let auth = auth_body(&args.login.files())?
        .context("give one of --key-file, --password-file and --credential")?;
    let mut body = json!({
        "operation": operation,
        "username": args.login.user.as_deref().unwrap_or_default(),
        "auth": auth,
        "vm": args.vm,
        "disks": args.disks,
        "host_key": args.host_key,
        "prefix": args.prefix,
        "appliance_addr": args.appliance_addr,
        "interval_secs": args.interval_secs,
    });
    match args.via.unwrap_or_default() {
        PushVia::Ssh => {
            let host = args
                .host
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--host is required over SSH"))?;
            body["host"] = json!(host);
            body["port"] = json!(args.port);
        }
        PushVia::VmwareTools => {
            if args.host.is_some() || args.host_key.is_some() || args.port != 22 {
                anyhow::bail!(
                    "--host, --port and --host-key do not apply with --via vmware-tools: the guest \
                     is reached through the vCenter of --vm"
                );
            }
            if args.login.key_file.is_some() {
                anyhow::bail!("VMware Tools logs in with a password: give --password-file");
            }
            body["via"] = json!("vmware_tools");
        }
    }
    Ok(body)
}

fn describe(job: &Value) -> String {
    if text(job, "via") == "vmware_tools" {
        return format!(
            "{} as {} for vm {} through VMware Tools",
            text(job, "operation"),
            text(job, "username"),
            text(job, "vm")
        );
    }
    format!(
        "{} to {}@{}:{} for vm {}",
        text(job, "operation"),
        text(job, "username"),
        text(job, "host"),
        job["port"],
        text(job, "vm")
    )
}

fn is_finished(job: &Value) -> bool {
    matches!(text(job, "state"), "succeeded" | "failed" | "cancelled")
}

/// Ok when the job succeeded, else an error naming how it ended (the command exits non-zero).
fn outcome(job: &Value) -> anyhow::Result<()> {
    let id = text(job, "id");
    match text(job, "state") {
        "succeeded" => Ok(()),
        "failed" => anyhow::bail!(
            "push job {id} failed: {} ({})",
            text(&job["error"], "message"),
            text(&job["error"], "code")
        ),
        other => anyhow::bail!("push job {id} ended {other}"),
    }
}

/// The lines of `log` after `last` (all of them when `last` is gone: older lines were dropped).
fn new_lines<'a>(log: &'a [Value], last: Option<&str>) -> &'a [Value] {
    let Some(last) = last else { return log };
    match log.iter().rposition(|l| l.as_str() == Some(last)) {
        Some(at) => &log[at + 1..],
        None => log,
    }
}

/// Polls the job until it ends, writing each new log line to `out` as it appears; returns the
/// finished job.
pub async fn follow(
    api: &ApiClient,
    id: &str,
    poll: Duration,
    out: &mut impl Write,
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/push-jobs/{}", segment(id));
    let mut last: Option<String> = None;
    loop {
        let job: Value = api.get(&path).await?;
        let log = job["log"].as_array().cloned().unwrap_or_default();
        for line in new_lines(&log, last.as_deref()) {
            writeln!(out, "  {}", line.as_str().unwrap_or_default())?;
        }
        out.flush()?;
        if let Some(line) = log.last().and_then(Value::as_str) {
            last = Some(line.to_string());
        }
        if is_finished(&job) {
            return Ok(job);
        }
        tokio::time::sleep(poll).await;
    }
}

/// `push install|upgrade|uninstall`: starts the job; with `wait`, follows it to its end.
pub async fn push_start(
    api: &ApiClient,
    body: &Value,
    wait: bool,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let job: Value = api.post("/api/v1/push-jobs", body).await?;
    let id = text(&job, "id").to_string();
    if !wait {
        if json {
            return print_json(out, &job);
        }
        writeln!(
            out,
            "push job {id} queued: {}; follow it with `appliance push jobs show {id}`",
            describe(&job)
        )?;
        return Ok(());
    }
    let job = if json {
        // The log goes to stderr so stdout stays one JSON document.
        let job = follow(api, &id, POLL, &mut std::io::stderr().lock()).await?;
        print_json(out, &job)?;
        job
    } else {
        writeln!(out, "push job {id}: {}", describe(&job))?;
        let job = follow(api, &id, POLL, out).await?;
        writeln!(out, "{}", summary(&job))?;
        job
    };
    outcome(&job)
}

/// One line on how a job ended (or stands).
fn summary(job: &Value) -> String {
    let mut line = format!("push job {} {}", text(job, "id"), text(job, "state"));
    if let Some(agent) = job["agent_id"].as_str() {
        line.push_str(&format!(": agent {agent}"));
    }
    if let Some(service) = job["service"].as_str() {
        line.push_str(&format!(", running as {service}"));
    }
    if job["error"].is_object() {
        line.push_str(&format!(
            ": {} ({})",
            text(&job["error"], "message"),
            text(&job["error"], "code")
        ));
    }
    line
}

fn job_rows(jobs: &[Value]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            vec![
                text(j, "id").to_string(),
                text(j, "operation").to_string(),
                format!("{}@{}:{}", text(j, "username"), text(j, "host"), j["port"]),
                text(j, "vm").to_string(),
                text(j, "state").to_string(),
                j["agent_id"].as_str().unwrap_or("-").to_string(),
                j["error"]["code"].as_str().unwrap_or("-").to_string(),
                text(j, "created_at").to_string(),
            ]
        })
        .collect()
}

pub async fn jobs_list(api: &ApiClient, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let jobs = api.get_all("/api/v1/push-jobs").await?;
    if json {
        return print_json(out, &jobs);
    }
    if jobs.is_empty() {
        writeln!(out, "no push jobs: start one with `appliance push install`")?;
        return Ok(());
    }
    table(
        out,
        &[
            "ID", "OP", "TARGET", "VM", "STATE", "AGENT", "ERROR", "CREATED",
        ],
        &job_rows(&jobs),
    )
}

/// A job with its log, for a person.
fn write_job(job: &Value, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "push job {}: {}", text(job, "id"), describe(job))?;
    writeln!(
        out,
        "state: {} (attempts {})  requested by {} at {}",
        text(job, "state"),
        job["attempts"],
        text(job, "requested_by"),
        text(job, "created_at")
    )?;
    for (label, key) in [
        ("agent", "agent_id"),
        ("service", "service"),
        ("arch", "arch"),
        ("os", "os"),
        ("host key", "host_key"),
        ("finished", "finished_at"),
    ] {
        if let Some(value) = job[key].as_str() {
            writeln!(out, "{label}: {value}")?;
        }
    }
    if job["error"].is_object() {
        writeln!(
            out,
            "error: {} ({}{})",
            text(&job["error"], "message"),
            text(&job["error"], "code"),
            if job["error"]["retryable"].as_bool() == Some(true) {
                ", retryable"
            } else {
                ""
            }
        )?;
    }
    writeln!(out, "log:")?;
    for line in job["log"].as_array().into_iter().flatten() {
        writeln!(out, "  {}", line.as_str().unwrap_or_default())?;
    }
    Ok(())
}

pub async fn job_show(
    api: &ApiClient,
    id: &str,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let job: Value = api
        .get(&format!("/api/v1/push-jobs/{}", segment(id)))
        .await?;
    if json {
        return print_json(out, &job);
    }
    write_job(&job, out)
}

pub async fn job_cancel(api: &ApiClient, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let job: Value = api
        .post(
            &format!("/api/v1/push-jobs/{}/cancel", segment(id)),
            &json!({}),
        )
        .await?;
    writeln!(
        out,
        "cancelling push job {id} ({}): it stops between two steps; the guest may be partly \
         changed, so run the install or the uninstall again",
        text(&job, "state")
    )?;
    Ok(())
}

/// A host as a path segment: escaped, but IPv6 colons kept (they are valid in a path).
fn host_segment(host: &str) -> String {
    segment(host).replace("%3A", ":")
}

pub async fn forget_host_key(
    api: &ApiClient,
    host: &str,
    port: u16,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    api.delete(&format!(
        "/api/v1/push-host-keys/{}/{port}",
        host_segment(host)
    ))
    .await?;
    writeln!(
        out,
        "forgot the host key of {host}:{port}: the next push job trusts the key it is shown"
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "api_cmd_push_tests.rs"]
mod tests;
