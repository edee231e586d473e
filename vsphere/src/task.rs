//! Tasks: waiting for a `Task` to end, with a timeout and progress reports.
//!
//! The task is polled through RetrievePropertiesEx (`info.state`, `info.progress`,
//! `info.result`, `info.error`) with a growing interval. vcsim runs tasks synchronously, a
//! vCenter takes from milliseconds to hours: the first poll comes at once, later ones at most
//! [`MAX_POLL_INTERVAL`] apart. A failed task becomes the typed error of its fault.

use std::time::{Duration, Instant};

use crate::client::{parse_moref, Client};
use crate::error::VsphereError;
use crate::property::{retrieve_request, FilterSpec};
use crate::soap::Request;
use crate::types::MoRef;
use crate::value::Value;
use crate::xml::Element;

/// How long the VM operations of this crate wait for their task (creating a VM with large eager
/// disks or consolidating a big snapshot takes long; a hung task still ends).
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

/// The first pause between two polls; it doubles up to [`MAX_POLL_INTERVAL`].
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

const TASK_PATHS: &[&str] = &["info.state", "info.progress", "info.result", "info.error"];

/// What one poll saw of a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskState {
    /// `queued` or `running`, with `info.progress` (0-100) when the server reports it.
    Pending {
        progress: Option<i32>,
    },
    Success(Option<Value>),
}

/// Reads the RetrievePropertiesEx answer for a task; a failed task is its typed fault.
pub(crate) fn parse_task_state(resp: Element) -> Result<TaskState, VsphereError> {
    let Some(rv) = resp.children.into_iter().find(|c| c.name == "returnval") else {
        return Err(VsphereError::malformed("the task poll returned no object"));
    };
    let Some(object) = rv.children.into_iter().find(|c| c.name == "objects") else {
        return Err(VsphereError::malformed("the task poll returned no object"));
    };
    for missing in object.children_named("missingSet") {
        let fault = missing.child("fault").and_then(|f| f.child("fault"));
        if let Some(fault) = fault {
            let message = missing
                .child("fault")
                .and_then(|f| f.child_text("localizedMessage"))
                .unwrap_or_default();
            return Err(VsphereError::from_fault(fault, message));
        }
    }
    let mut state = None;
    let mut progress = None;
    let mut result = None;
    let mut error = None;
    for prop in object.children {
        if prop.name != "propSet" {
            continue;
        }
        let name = prop.child_text("name").unwrap_or_default().to_string();
        let Some(val) = prop.children.into_iter().find(|c| c.name == "val") else {
            continue;
        };
        match name.as_str() {
            "info.state" => state = Some(val.text.trim().to_string()),
            "info.progress" => progress = val.text.trim().parse::<i32>().ok(),
            "info.result" => result = Some(Value::from_element(val)?),
            "info.error" => error = Some(val),
            _ => {}
        }
    }
    match state.as_deref() {
        Some("queued") | Some("running") => Ok(TaskState::Pending { progress }),
        Some("success") => Ok(TaskState::Success(result)),
        Some("error") => Err(task_error(error.as_ref())),
        other => Err(VsphereError::malformed(format!(
            "task state {other:?} is not queued, running, success or error"
        ))),
    }
}

/// `info.error` is a LocalizedMethodFault: the fault object and a message.
fn task_error(error: Option<&Element>) -> VsphereError {
    let Some(error) = error else {
        return VsphereError::Fault {
            type_name: "Unknown".into(),
            message: "the task failed without saying why".into(),
        };
    };
    let message = error.child_text("localizedMessage").unwrap_or_default();
    match error.child("fault") {
        Some(fault) => VsphereError::from_fault(fault, message),
        None => VsphereError::Fault {
            type_name: "Unknown".into(),
            message: message.to_string(),
        },
    }
}

impl Client {
    /// Waits until `task` has ended and returns its `info.result` (the new VM or snapshot for
    /// the tasks that make one, else usually `None`). `progress` hears `info.progress` whenever
    /// it changes (`None` while the server gives none). A failed task is its typed fault
    /// (`InvalidPowerState`, ...); a task still running after `timeout` gives `Timeout` (the task
    /// itself goes on on the server).
    pub async fn wait_for_task(
        &self,
        task: &MoRef,
        timeout: Duration,
        mut progress: impl FnMut(Option<i32>),
    ) -> Result<Option<Value>, VsphereError> {
        let deadline = Instant::now() + timeout;
        let mut interval = FIRST_POLL_INTERVAL;
        let mut last: Option<Option<i32>> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(VsphereError::Timeout);
            }
            let spec = FilterSpec::object(task, TASK_PATHS);
            let req = retrieve_request(&self.service_content().property_collector, &[spec], None);
            let call_timeout = self.options().call_timeout.min(remaining);
            let state = match self
                .invoke_timeout(req, call_timeout, parse_task_state)
                .await
            {
                Ok(state) => state,
                // The poll itself ran out of the time left for the whole wait.
                Err(VsphereError::Timeout) if Instant::now() >= deadline => {
                    return Err(VsphereError::Timeout)
                }
                Err(e) => return Err(e),
            };
            match state {
                TaskState::Success(result) => {
                    if last != Some(Some(100)) {
                        progress(Some(100));
                    }
                    return Ok(result);
                }
                TaskState::Pending { progress: p } => {
                    if last != Some(p) {
                        progress(p);
                        last = Some(p);
                    }
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(VsphereError::Timeout);
            }
            tokio::time::sleep(interval.min(remaining)).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }

    /// Calls a `*_Task` method and waits for the task with [`DEFAULT_TASK_TIMEOUT`].
    pub(crate) async fn run_task(&self, req: Request) -> Result<Option<Value>, VsphereError> {
        let task = self.invoke(req, parse_moref).await?;
        if task.kind != "Task" {
            return Err(VsphereError::malformed(format!(
                "a *_Task method returned {task}, not a Task"
            )));
        }
        self.wait_for_task(&task, DEFAULT_TASK_TIMEOUT, |_| {})
            .await
    }
}

/// The managed object a task returned (a new VM, a snapshot).
pub(crate) fn result_moref(result: Option<Value>, what: &str) -> Result<MoRef, VsphereError> {
    match result {
        Some(Value::MoRef(m)) => Ok(m),
        other => Err(VsphereError::malformed(format!(
            "the {what} task returned {other:?} instead of a managed object reference"
        ))),
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
pub(crate) mod tests;
