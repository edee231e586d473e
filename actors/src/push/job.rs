//! The install, upgrade and uninstall sequences. Each step is idempotent (it checks before it changes,
//! or replaces atomically), so a run that failed or was interrupted is simply run again.

use super::guest::{agent_binary, Guest};
use super::probe::{self, quote};
use super::script::{self, sq, Layout};
use super::{GuestTarget, InstallSpec, Log, Outcome, PushError, ServiceMode};

/// Installs (or repairs) the agent: binary, configuration, registration with the spec's enrollment
/// token, service, and a check that it runs.
pub async fn install(
    target: impl Into<GuestTarget>,
    spec: &InstallSpec,
    log: Log<'_>,
) -> Result<Outcome, PushError> {
    let target = target.into();
    script::check_spec(spec)?;
    let enrollment = spec
        .enrollment
        .as_ref()
        .ok_or_else(|| PushError::Invalid("an install needs an enrollment token".into()))?;
    let guest = Guest::open(&target, log).await?;
    let result = install_steps(&guest, spec, enrollment, log).await;
    guest.session.close().await;
    result
}

async fn install_steps(
    g: &Guest<'_>,
    spec: &InstallSpec,
    enrollment: &super::Enrollment,
    log: Log<'_>,
) -> Result<Outcome, PushError> {
    let layout = Layout::new(&spec.prefix);
    let (arch, os) = g.probe().await?;
    g.put_binary(&layout, &agent_binary(spec, arch)).await?;
    let detected = g
        .as_root("detect service", script::DETECT_SERVICE, None)
        .await?;
    let boot_tool = probe::report_value(&detected.stdout, "boot")
        .unwrap_or("none")
        .to_string();
    let mode = match spec.service {
        Some(forced) => forced,
        None => {
            let found = probe::report_value(&detected.stdout, "mode").and_then(ServiceMode::parse);
            let pid1 = probe::report_value(&detected.stdout, "pid1").unwrap_or("unknown");
            let mode = found.unwrap_or(ServiceMode::Detached);
            log(&format!(
                "service manager: {} (PID 1 is {})",
                mode.name(),
                quote(pid1)
            ));
            mode
        }
    };
    g.write(
        "config",
        &layout.env(),
        "0600",
        &script::env_file(spec, mode),
    )
    .await?;

    let marker = g
        .as_root_unchecked(
            "registration check",
            &format!(
                "[ -f {} ] && cat {}",
                sq(&layout.registration()),
                sq(&layout.marker())
            ),
            None,
        )
        .await?;
    if marker.success() && marker.stdout.trim() == enrollment.id {
        log(&format!(
            "registration: already done with enrollment {}",
            enrollment.id
        ));
    } else {
        g.write(
            "token",
            &layout.token(),
            "0600",
            &format!("{}\n", enrollment.token),
        )
        .await?;
        let register = format!(
            "{cmd}; rc=$?; rm -f {token}; [ $rc -eq 0 ] && printf '%s\\n' {id} > {marker}; exit $rc",
            cmd = script::register_command(&layout, spec),
            token = sq(&layout.token()),
            id = sq(&enrollment.id),
            marker = sq(&layout.marker()),
        );
        g.as_root("register", &register, None).await?;
        log(&format!(
            "registration: registered with {} using enrollment {}",
            spec.appliance_addr, enrollment.id
        ));
    }
    let agent_id = g.agent_id(&layout).await?;
    if let Some(id) = &agent_id {
        log(&format!("agent id {id}"));
    }
    g.start(
        &layout,
        mode,
        &boot_tool,
        &script::run_command(&layout, spec),
    )
    .await?;
    Ok(Outcome {
        host_key: g.session.host_key().to_string(),
        arch: Some(arch),
        os,
        service: Some(mode),
        agent_id,
    })
}

/// Replaces the binary with the one for the guest's architecture and restarts the agent the way it
/// was installed. Configuration and registration stay.
pub async fn upgrade(
    target: impl Into<GuestTarget>,
    spec: &InstallSpec,
    log: Log<'_>,
) -> Result<Outcome, PushError> {
    let target = target.into();
    script::check_prefix(&spec.prefix)?;
    let guest = Guest::open(&target, log).await?;
    let result = upgrade_steps(&guest, spec, log).await;
    guest.session.close().await;
    result
}

async fn upgrade_steps(
    g: &Guest<'_>,
    spec: &InstallSpec,
    log: Log<'_>,
) -> Result<Outcome, PushError> {
    let layout = Layout::new(&spec.prefix);
    let (arch, os) = g.probe().await?;
    let mode = g.installed_mode(&layout).await?.ok_or_else(|| {
        PushError::Invalid(format!(
            "the agent is not installed under {}: install it first",
            layout.prefix
        ))
    })?;
    g.put_binary(&layout, &agent_binary(spec, arch)).await?;
    let restart = match mode {
        ServiceMode::Systemd => format!("systemctl restart {}", script::UNIT_NAME),
        ServiceMode::InitScript => format!("{} restart", sq(script::INIT_PATH)),
        ServiceMode::Detached => format!("{} restart", sq(&layout.ctl())),
    };
    g.as_root("restart", &restart, None).await?;
    log(&format!("service: {} restarted", mode.name()));
    g.verify_running(&layout, mode, "restart").await?;
    Ok(Outcome {
        host_key: g.session.host_key().to_string(),
        arch: Some(arch),
        os,
        service: Some(mode),
        agent_id: g.agent_id(&layout).await?,
    })
}

/// Stops the agent however it was started, removes its service files and everything under the
/// prefix. Uninstalling what is not installed succeeds.
pub async fn uninstall(
    target: impl Into<GuestTarget>,
    prefix: &str,
    log: Log<'_>,
) -> Result<Outcome, PushError> {
    let target = target.into();
    script::check_prefix(prefix)?;
    let guest = Guest::open(&target, log).await?;
    let result = uninstall_steps(&guest, prefix, log).await;
    guest.session.close().await;
    result
}

async fn uninstall_steps(g: &Guest<'_>, prefix: &str, log: Log<'_>) -> Result<Outcome, PushError> {
    let layout = Layout::new(prefix);
    let out = g
        .as_root("uninstall", &script::uninstall_script(&layout), None)
        .await?;
    let agent_id = probe::report_value(&out.stdout, "agent").map(str::to_string);
    let removed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("removed="))
        .collect();
    let service = removed.iter().find_map(|r| ServiceMode::parse(r));
    match service {
        Some(mode) => log(&format!(
            "stopped the agent ({}) and removed its service and files under {prefix}",
            mode.name()
        )),
        None => log(&format!(
            "no agent service was installed under {prefix}; removed what was left"
        )),
    }
    if let Some(id) = &agent_id {
        log(&format!(
            "agent {id} is uninstalled; revoke it on the appliance unless it comes back"
        ));
    }
    Ok(Outcome {
        host_key: g.session.host_key().to_string(),
        arch: None,
        os: None,
        service,
        agent_id,
    })
}
