//! A push job's task: wait for a slot, run attempts with backoff for retryable errors, wait for the
//! agent's registration (installs), record how it ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::push::{self, HostKeyPolicy, PushError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use futures::future::BoxFuture;

use super::{
    push_log, Live, Operation, Plan, PushJobError, PushJobState, PushJobs, HOST_KEYS_TREE,
    MAX_ATTEMPTS,
};
use crate::mgmt::MgmtError;
use crate::registry::IssuedEnrollment;
use crate::state::now_rfc3339;

/// One attempt, as the executor gets it.
pub(crate) struct Attempt {
    pub operation: Operation,
    pub target: push::GuestTarget,
    pub spec: push::InstallSpec,
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

#[cfg(test)]
impl Attempt {
    /// The SSH target, when the attempt goes over SSH.
    pub fn ssh(&self) -> Option<&push::Target> {
        match &self.target {
            push::GuestTarget::Ssh(t) => Some(t),
            push::GuestTarget::Tools(_) => None,
        }
    }
}

/// Runs one attempt. The real one is [`ssh_executor`] (SSH or VMware Tools, as the target says);
/// tests put in their own.
pub(crate) type Executor =
    Arc<dyn Fn(Attempt) -> BoxFuture<'static, Result<push::Outcome, PushError>> + Send + Sync>;

/// The executor that reaches guests over SSH or through VMware Tools.
pub(crate) fn ssh_executor() -> Executor {
    Arc::new(|a: Attempt| {
        Box::pin(async move {
            let log = &*a.log;
            match a.operation {
                Operation::Install => push::install(a.target, &a.spec, log).await,
                Operation::Upgrade => push::upgrade(a.target, &a.spec, log).await,
                Operation::Uninstall => push::uninstall(a.target, &a.spec.prefix, log).await,
            }
        })
    })
}

/// How often an install looks for the agent's registration.
const REGISTER_POLL: Duration = Duration::from_millis(250);

/// How a job ended.
pub(super) enum Ended {
    Succeeded,
    Failed(PushJobError),
    Cancelled,
}

fn internal(e: MgmtError) -> Ended {
    Ended::Failed(PushJobError {
        code: "internal".into(),
        message: e.to_string(),
        retryable: e.retryable(),
    })
}

fn failed(e: &PushError) -> Ended {
    Ended::Failed(e.into())
}

/// Resolves once the job is asked to stop.
async fn cancelled(live: &Live) {
    loop {
        let woken = live.wake.notified();
        if live.cancel.load(Ordering::Acquire) {
            return;
        }
        woken.await;
    }
}

/// The pause before attempt `attempt + 1`: `backoff * 2^(attempt-1)`, capped.
pub(super) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(max)
}

pub(super) async fn execute(jobs: &PushJobs, id: &str, plan: &Plan, live: &Live) -> Ended {
    let permit = tokio::select! {
        p = jobs.inner.slots.acquire() => p,
        _ = cancelled(live) => return Ended::Cancelled,
    };
    let Ok(_permit) = permit else {
        return internal(MgmtError::Internal("the push job runner is closed".into()));
    };
    if live.cancel.load(Ordering::Acquire) {
        return Ended::Cancelled;
    }
    if let Err(e) = jobs.update(id, |v| {
        v.state = PushJobState::Running;
        v.started_at = Some(now_rfc3339());
    }) {
        return internal(e);
    }
    let log: Arc<dyn Fn(&str) + Send + Sync> = {
        let jobs = jobs.clone();
        let id = id.to_string();
        Arc::new(move |line: &str| {
            if let Err(err) = jobs.update(&id, |v| push_log(v, line)) {
                tracing::warn!(job = %id, %err, "could not record a push job log line");
            }
        })
    };
    let mut enrollment: Option<IssuedEnrollment> = None;
    for attempt in 1..=MAX_ATTEMPTS {
        if let Err(e) = jobs.update(id, |v| {
            v.attempts = attempt;
            push_log(v, &format!("attempt {attempt} of {MAX_ATTEMPTS}"));
        }) {
            return internal(e);
        }
        let mut spec = plan.spec.clone();
        if plan.operation == Operation::Install {
            match current_enrollment(jobs, id, &plan.vm, enrollment.take(), &*log) {
                Ok(e) => {
                    spec.enrollment = Some(push::Enrollment {
                        id: e.id.clone(),
                        token: e.token.clone(),
                    });
                    enrollment = Some(e);
                }
                Err(e) => return internal(e),
            }
        }
        let mut target = plan.target.clone();
        if let push::GuestTarget::Ssh(ssh) = &mut target {
            let recorded = match jobs.known_host_key(&ssh.host, ssh.port) {
                Ok(k) => k,
                Err(e) => return internal(e),
            };
            ssh.host_key = match plan.pinned.clone().or(recorded) {
                Some(key) => HostKeyPolicy::Pinned(key),
                None => HostKeyPolicy::TrustOnFirstUse,
            };
        }
        let run = (jobs.inner.executor)(Attempt {
            operation: plan.operation,
            target,
            spec,
            log: log.clone(),
        });
        let result = tokio::select! {
            r = run => r,
            _ = cancelled(live) => return Ended::Cancelled,
        };
        match result {
            Ok(outcome) => {
                if let Err(e) = record_outcome(jobs, id, plan, &outcome) {
                    return internal(e);
                }
                if plan.operation != Operation::Install {
                    return Ended::Succeeded;
                }
                return tokio::select! {
                    r = wait_registered(jobs, id, outcome.agent_id.as_deref(), &*log) => r,
                    _ = cancelled(live) => Ended::Cancelled,
                };
            }
            Err(e) => {
                log(&format!("attempt {attempt} failed: {e}"));
                if !e.is_retryable() || attempt == MAX_ATTEMPTS {
                    return failed(&e);
                }
                let pause = backoff(
                    jobs.inner.settings.backoff,
                    jobs.inner.settings.max_backoff,
                    attempt,
                );
                log(&format!("retrying in {:.1} s", pause.as_secs_f64()));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancelled(live) => return Ended::Cancelled,
                }
            }
        }
    }
    internal(MgmtError::Internal("no attempt ran".into()))
}

/// The token this attempt uses: the previous attempt's while it is still usable (also when it was
/// used: the guest then skips registering), else a new one.
fn current_enrollment(
    jobs: &PushJobs,
    id: &str,
    vm: &str,
    previous: Option<IssuedEnrollment>,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<IssuedEnrollment, MgmtError> {
    if let Some(prev) = previous {
        let usable = match jobs.inner.enrollments.get(&prev.id)? {
            Some(r) if r.used_by.is_some() => true,
            Some(r) => {
                !r.revoked
                    && OffsetDateTime::parse(&r.expires, &Rfc3339)
                        .is_ok_and(|t| t > OffsetDateTime::now_utc() + Duration::from_secs(60))
            }
            None => false,
        };
        if usable {
            return Ok(prev);
        }
    }
    let issued = jobs.issue_enrollment(vm)?;
    jobs.update(id, |v| v.enrollments.push(issued.id.clone()))?;
    log(&format!(
        "enrollment token {} issued for vm {vm}, valid until {}",
        issued.id, issued.expires
    ));
    Ok(issued)
}

/// Keeps what the attempt found; records the host key when it was trusted on first use or pinned
/// by the request (so the next job requires it).
fn record_outcome(
    jobs: &PushJobs,
    id: &str,
    plan: &Plan,
    outcome: &push::Outcome,
) -> Result<(), MgmtError> {
    if let Some(ssh) = plan.ssh() {
        let keys = jobs.inner.state.db().open_tree(HOST_KEYS_TREE)?;
        let name = super::host_key_name(&ssh.host, ssh.port);
        if keys.get(&name)?.as_deref() != Some(outcome.host_key.as_bytes()) {
            keys.insert(name, outcome.host_key.as_bytes())?;
            keys.flush()?;
        }
    }
    jobs.update(id, |v| {
        if plan.ssh().is_some() {
            v.host_key = Some(outcome.host_key.clone());
        }
        v.agent_id = outcome.agent_id.clone().or(v.agent_id.take());
        v.service = outcome.service.map(|s| s.name().to_string());
        v.arch = outcome.arch.map(|a| a.name().to_string());
        v.os = outcome.os.clone().or(v.os.take());
    })?;
    Ok(())
}

/// Waits until an agent registered with one of the job's enrollment tokens (and exists), within the
/// settings' register timeout.
async fn wait_registered(
    jobs: &PushJobs,
    id: &str,
    reported: Option<&str>,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Ended {
    let limit = jobs.inner.settings.register_timeout;
    let started = Instant::now();
    loop {
        match registered_agent(jobs, id) {
            Ok(Some(agent)) => {
                if reported.is_some_and(|r| r != agent) {
                    log(&format!(
                        "warning: the guest reports agent {}, the appliance registered {agent}",
                        reported.unwrap_or_default()
                    ));
                }
                if let Err(e) = jobs.update(id, |v| v.agent_id = Some(agent.clone())) {
                    return internal(e);
                }
                log(&format!("agent {agent} registered with the appliance"));
                return Ended::Succeeded;
            }
            Ok(None) => {}
            Err(e) => return internal(e),
        }
        if started.elapsed() >= limit {
            let e = PushError::AgentDidNotRegister {
                waited_secs: limit.as_secs(),
            };
            log(&e.to_string());
            return failed(&e);
        }
        tokio::time::sleep(REGISTER_POLL).await;
    }
}

fn registered_agent(jobs: &PushJobs, id: &str) -> Result<Option<String>, MgmtError> {
    let view = jobs.get(id)?;
    for enrollment in &view.enrollments {
        let Some(record) = jobs.inner.enrollments.get(enrollment)? else {
            continue;
        };
        if let Some(agent) = record.used_by {
            if jobs.inner.state.agent(&agent)?.is_some() {
                return Ok(Some(agent));
            }
        }
    }
    Ok(None)
}

/// Records how the job ended, audits it and withdraws its unused enrollment tokens.
pub(super) fn finish(jobs: &PushJobs, id: &str, _plan: &Plan, ended: Ended, started: Instant) {
    let took = started.elapsed().as_secs_f64();
    let recorded = (|| -> Result<(), MgmtError> {
        let view = jobs.update(id, |v| {
            v.finished_at = Some(now_rfc3339());
            match &ended {
                Ended::Succeeded => {
                    v.state = PushJobState::Succeeded;
                    push_log(v, &format!("succeeded in {took:.1} s"));
                }
                Ended::Failed(e) => {
                    v.state = PushJobState::Failed;
                    v.error = Some(e.clone());
                    push_log(v, &format!("failed after {took:.1} s: {}", e.message));
                }
                Ended::Cancelled => {
                    v.state = PushJobState::Cancelled;
                    push_log(
                        v,
                        "cancelled; the guest may be partly changed: every step is idempotent, so run \
                         the install or the uninstall again",
                    );
                }
            }
        })?;
        for enrollment in &view.enrollments {
            jobs.inner.enrollments.revoke(enrollment)?;
        }
        let (event, detail) = match &ended {
            Ended::Succeeded => ("push_job_succeeded", super::describe(&view)),
            Ended::Failed(e) => (
                "push_job_failed",
                format!("{}: {}", super::describe(&view), e.message),
            ),
            Ended::Cancelled => ("push_job_cancelled", super::describe(&view)),
        };
        // The cancel request was audited as the user already.
        if !matches!(ended, Ended::Cancelled) {
            jobs.inner.state.audit(event, &detail)?;
        }
        jobs.inner.state.flush()?;
        Ok(())
    })();
    if let Err(err) = recorded {
        tracing::error!(job = id, %err, "could not record the end of a push job");
    }
}
