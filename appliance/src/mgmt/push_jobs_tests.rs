use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actors::push::{HostKeyPolicy, Outcome, PushError, ServiceMode};
use actors::registry::{AgentRegistry, Refusal};

use super::run::Attempt;
use super::*;
use crate::mgmt::auth::TokenKind;
use crate::registry::Registry;
use crate::state::encode_record;
use crate::tls::ApplianceTls;

const PASSPHRASE: &str = "KMNP-QRTU-VWXY-3467-9ACD-EFGH";
const KEY_1: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const KEY_2: &str = "SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

/// What the fake guest does on one attempt.
enum Step {
    Fail(PushError),
    /// The install "works" but no agent registers.
    Succeed,
    /// The install works and the agent registers with the job's token.
    Register,
    /// Never ends (until cancelled).
    Hang,
}

/// What an attempt was given.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    policy: HostKeyPolicy,
    token: Option<String>,
}

struct Fake {
    steps: Mutex<VecDeque<Step>>,
    seen: Mutex<Vec<Seen>>,
    /// The key the fake guest presents.
    host_key: Mutex<String>,
    registry: Arc<Registry>,
}

fn executor(fake: Arc<Fake>) -> Executor {
    Arc::new(move |a: Attempt| {
        let fake = fake.clone();
        Box::pin(async move {
            let step = fake
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Fail(PushError::Invalid("no step left".into())));
            let token = a.spec.enrollment.as_ref().map(|e| e.token.clone());
            let ssh = a.ssh().expect("these jobs go over SSH").clone();
            fake.seen.lock().unwrap().push(Seen {
                host: ssh.host.clone(),
                policy: ssh.host_key.clone(),
                token: token.clone(),
            });
            (a.log)("fake guest step");
            let presented = fake.host_key.lock().unwrap().clone();
            if let HostKeyPolicy::Pinned(expected) = &ssh.host_key {
                if *expected != presented {
                    return Err(PushError::HostKeyChanged {
                        host: ssh.host.clone(),
                        expected: expected.clone(),
                        found: presented,
                    });
                }
            }
            let outcome = |agent_id: Option<String>| Outcome {
                host_key: presented.clone(),
                arch: Some(actors::push::Arch::X86_64),
                os: Some("Debian GNU/Linux 12 (bookworm)".into()),
                service: Some(ServiceMode::Detached),
                agent_id,
            };
            match step {
                Step::Fail(e) => Err(e),
                Step::Succeed => Ok(outcome(None)),
                Step::Register => {
                    let token = token.ok_or_else(|| PushError::Invalid("no token".into()))?;
                    let creds = fake
                        .registry
                        .register(&token, "guest", None)
                        .map_err(|e| PushError::Invalid(e.to_string()))?;
                    Ok(outcome(Some(creds.agent_id)))
                }
                Step::Hang => std::future::pending().await,
            }
        })
    })
}

struct Fixture {
    jobs: PushJobs,
    fake: Arc<Fake>,
    registry: Arc<Registry>,
    state: State,
    settings: PushSettings,
    _dir: tempfile::TempDir,
}

fn fixture(steps: Vec<Step>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tls = Arc::new(ApplianceTls::load_or_create(dir.path(), &[]).unwrap());
    let state = State::open(dir.path()).unwrap();
    let registry = Arc::new(Registry::new(state.clone(), tls.clone(), PASSPHRASE));
    let fake = Arc::new(Fake {
        steps: Mutex::new(steps.into()),
        seen: Mutex::new(Vec::new()),
        host_key: Mutex::new(KEY_1.into()),
        registry: registry.clone(),
    });
    let mut settings = PushSettings::new(dir.path().to_path_buf(), tls.ca_fingerprint());
    settings.appliance_addr = Some("127.0.0.1:9443".into());
    settings.backoff = Duration::from_millis(10);
    settings.register_timeout = Duration::from_millis(600);
    let jobs = PushJobs::with_executor(state.clone(), settings.clone(), executor(fake.clone()));
    Fixture {
        jobs,
        fake,
        registry,
        state,
        settings,
        _dir: dir,
    }
}

fn admin() -> Principal {
    Principal {
        user: "ada".into(),
        role: Role::Admin,
        token_id: "tok1".into(),
        kind: TokenKind::Api,
    }
}

fn request(host: &str) -> PushRequest {
    PushRequest {
        via: Default::default(),
        host: host.into(),
        port: 22,
        username: "root".into(),
        auth: PushAuth::Password {
            password: "secret".into(),
        },
        host_key: None,
        agents_dir: None,
        appliance_addr: None,
        disks: vec!["/dev/sdb".into()],
        vm: "vc-1/vm-42".into(),
        operation: Operation::Install,
        prefix: None,
        interval_secs: None,
    }
}

async fn finished(jobs: &PushJobs, id: &str) -> PushJobView {
    for _ in 0..400 {
        let view = jobs.get(id).unwrap();
        if view.state.is_finished() && jobs.live().get(id).is_none() {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} did not finish: {:?}", jobs.get(id).unwrap());
}

fn audited(state: &State, event: &str) -> usize {
    state
        .recent_audit(200)
        .unwrap()
        .iter()
        .filter(|e| e.event == event)
        .count()
}

#[tokio::test]
async fn an_install_succeeds_when_the_agent_registers_with_the_jobs_token() {
    let f = fixture(vec![Step::Register]);
    let queued = f
        .jobs
        .start(&admin(), "192.0.2.5", request("10.0.0.7"))
        .unwrap();
    assert_eq!(queued.state, PushJobState::Queued);
    let view = finished(&f.jobs, &queued.id).await;
    assert_eq!(view.state, PushJobState::Succeeded, "{view:?}");
    assert_eq!(view.attempts, 1);
    assert_eq!(view.enrollments.len(), 1);
    let record = f
        .registry
        .enrollments()
        .get(&view.enrollments[0])
        .unwrap()
        .unwrap();
    assert_eq!(record.vm, "vc-1/vm-42");
    assert_eq!(
        view.agent_id, record.used_by,
        "the agent that used the job's token"
    );
    assert!(f
        .state
        .agent(view.agent_id.as_deref().unwrap())
        .unwrap()
        .is_some());
    assert_eq!(view.host_key.as_deref(), Some(KEY_1));
    assert_eq!(view.service.as_deref(), Some("detached"));
    assert!(view.started_at.is_some() && view.finished_at.is_some());
    assert!(view.log.iter().any(|l| l.contains("fake guest step")));
    assert!(
        view.log
            .iter()
            .any(|l| l.contains("registered with the appliance")),
        "{:?}",
        view.log
    );
    let seen = f.fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].policy, HostKeyPolicy::TrustOnFirstUse);
    assert_eq!(
        f.jobs.known_host_key("10.0.0.7", 22).unwrap().as_deref(),
        Some(KEY_1)
    );
    assert_eq!(audited(&f.state, "push_job_started"), 1);
    assert_eq!(audited(&f.state, "push_job_succeeded"), 1);
    let json = serde_json::to_string(&view).unwrap();
    assert!(!json.contains("secret") && !json.contains(seen[0].token.as_deref().unwrap()));
}

#[tokio::test]
async fn retryable_errors_retry_with_the_same_token_then_succeed() {
    let f = fixture(vec![
        Step::Fail(PushError::HostUnreachable {
            host: "h".into(),
            detail: "Connection refused".into(),
        }),
        Step::Fail(PushError::Timeout {
            step: "upload".into(),
            secs: 1,
        }),
        Step::Register,
    ]);
    let id = f
        .jobs
        .start(&admin(), "local", request("10.0.0.8"))
        .unwrap()
        .id;
    let view = finished(&f.jobs, &id).await;
    assert_eq!(view.state, PushJobState::Succeeded, "{view:?}");
    assert_eq!(view.attempts, 3);
    assert_eq!(view.enrollments.len(), 1, "one token for all attempts");
    let tokens: Vec<_> = f
        .fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.token.clone())
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(
        view.log
            .iter()
            .filter(|l| l.contains("retrying in"))
            .count(),
        2
    );
}

#[tokio::test]
async fn retryable_errors_give_up_after_three_attempts_and_withdraw_the_token() {
    let unreachable = || {
        Step::Fail(PushError::HostUnreachable {
            host: "h".into(),
            detail: "Connection refused".into(),
        })
    };
    let f = fixture(vec![unreachable(), unreachable(), unreachable()]);
    let id = f
        .jobs
        .start(&admin(), "local", request("10.0.0.9"))
        .unwrap()
        .id;
    let view = finished(&f.jobs, &id).await;
    assert_eq!(view.state, PushJobState::Failed);
    assert_eq!(view.attempts, MAX_ATTEMPTS);
    let error = view.error.unwrap();
    assert_eq!(error.code, "host_unreachable");
    assert!(error.retryable && error.message.contains("Connection refused"));
    let record = f
        .registry
        .enrollments()
        .get(&view.enrollments[0])
        .unwrap()
        .unwrap();
    assert!(record.revoked);
    let token = f.fake.seen.lock().unwrap()[0].token.clone().unwrap();
    assert!(matches!(
        f.registry.register(&token, "late", None),
        Err(Refusal::BadPassphrase)
    ));
    assert_eq!(audited(&f.state, "push_job_failed"), 1);
}

#[tokio::test]
async fn final_errors_end_the_job_at_the_first_attempt() {
    let errors = [
        PushError::AuthenticationFailed {
            user: "root".into(),
            detail: "the server refused the private key".into(),
        },
        PushError::NotEnoughSpace {
            path: "/opt/ferry-mobility".into(),
            need: 100 << 20,
            have: 1 << 20,
        },
        PushError::UnsupportedOs {
            found: "FreeBSD amd64".into(),
        },
        PushError::SudoNeedsPassword { user: "ops".into() },
    ];
    let codes: Vec<&str> = errors.iter().map(PushError::code).collect();
    let f = fixture(errors.into_iter().map(Step::Fail).collect());
    for (i, code) in codes.iter().enumerate() {
        let id = f
            .jobs
            .start(&admin(), "local", request(&format!("10.0.1.{i}")))
            .unwrap()
            .id;
        let view = finished(&f.jobs, &id).await;
        assert_eq!(view.state, PushJobState::Failed);
        assert_eq!(view.attempts, 1, "{code}");
        assert_eq!(view.error.as_ref().unwrap().code, *code);
        assert!(!view.error.unwrap().retryable);
    }
}

#[tokio::test]
async fn an_agent_that_never_registers_fails_the_job_in_time() {
    let f = fixture(vec![Step::Succeed]);
    let id = f
        .jobs
        .start(&admin(), "local", request("10.0.0.10"))
        .unwrap()
        .id;
    let view = finished(&f.jobs, &id).await;
    assert_eq!(view.state, PushJobState::Failed);
    assert_eq!(view.error.as_ref().unwrap().code, "agent_did_not_register");
    assert_eq!(view.attempts, 1, "not retried");
    let token = f.fake.seen.lock().unwrap()[0].token.clone().unwrap();
    assert!(
        matches!(
            f.registry.register(&token, "late", None),
            Err(Refusal::BadPassphrase)
        ),
        "the token is withdrawn"
    );
}

#[path = "push_jobs_more_tests.rs"]
mod more;
