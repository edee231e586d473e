//! Host keys, cancel, restart recovery, request checks, lists (the fixture is the parent's).

use std::time::Duration;

use actors::push::HostKeyPolicy;

use super::*;

#[tokio::test]
async fn host_keys_are_trusted_once_then_required_and_a_pinned_key_replaces_them() {
    let uninstall = |host: &str| PushRequest {
        operation: Operation::Uninstall,
        disks: vec![],
        ..request(host)
    };
    let f = fixture(vec![
        Step::Succeed,
        Step::Succeed,
        Step::Succeed,
        Step::Succeed,
    ]);
    let first = f
        .jobs
        .start(&admin(), "local", uninstall("guest.example"))
        .unwrap()
        .id;
    assert_eq!(
        finished(&f.jobs, &first).await.state,
        PushJobState::Succeeded
    );
    assert_eq!(
        f.jobs
            .known_host_key("GUEST.example", 22)
            .unwrap()
            .as_deref(),
        Some(KEY_1)
    );

    *f.fake.host_key.lock().unwrap() = KEY_2.into();
    let second = f
        .jobs
        .start(&admin(), "local", uninstall("guest.example"))
        .unwrap()
        .id;
    let view = finished(&f.jobs, &second).await;
    assert_eq!(
        view.error.as_ref().unwrap().code,
        "host_key_changed",
        "{view:?}"
    );
    assert!(view.error.unwrap().message.contains(KEY_2));
    assert_eq!(f.fake.seen.lock().unwrap()[1].host, "guest.example");
    assert_eq!(
        f.fake.seen.lock().unwrap()[1].policy,
        HostKeyPolicy::Pinned(KEY_1.into())
    );

    // Accepting the new key: pin it in the request.
    let pinned = PushRequest {
        host_key: Some(KEY_2.trim_start_matches("SHA256:").into()),
        ..uninstall("guest.example")
    };
    let third = f.jobs.start(&admin(), "local", pinned).unwrap().id;
    assert_eq!(
        finished(&f.jobs, &third).await.state,
        PushJobState::Succeeded
    );
    assert_eq!(
        f.jobs
            .known_host_key("guest.example", 22)
            .unwrap()
            .as_deref(),
        Some(KEY_2)
    );

    assert!(f
        .jobs
        .forget_host_key(&admin(), "local", "guest.example", 22)
        .unwrap());
    assert!(!f
        .jobs
        .forget_host_key(&admin(), "local", "guest.example", 22)
        .unwrap());
    let fourth = f
        .jobs
        .start(&admin(), "local", uninstall("guest.example"))
        .unwrap()
        .id;
    finished(&f.jobs, &fourth).await;
    assert_eq!(
        f.fake.seen.lock().unwrap()[3].policy,
        HostKeyPolicy::TrustOnFirstUse
    );
    assert_eq!(audited(&f.state, "push_host_key_forgotten"), 1);
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_refuses_a_finished_one() {
    let f = fixture(vec![Step::Hang]);
    let id = f
        .jobs
        .start(&admin(), "local", request("10.0.0.11"))
        .unwrap()
        .id;
    for _ in 0..200 {
        if !f.fake.seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.jobs.get(&id).unwrap().state, PushJobState::Running);
    let conflict = f
        .jobs
        .start(&admin(), "local", request("10.0.0.11"))
        .unwrap_err();
    assert_eq!(conflict.code(), "conflict");
    let viewer = Principal {
        role: Role::Operator,
        ..admin()
    };
    assert_eq!(
        f.jobs.cancel(&viewer, "local", &id).unwrap_err().code(),
        "forbidden"
    );
    let answer = f.jobs.cancel(&admin(), "local", &id).unwrap();
    assert!(answer.cancel_requested);
    let view = finished(&f.jobs, &id).await;
    assert_eq!(view.state, PushJobState::Cancelled);
    let record = f
        .registry
        .enrollments()
        .get(&view.enrollments[0])
        .unwrap()
        .unwrap();
    assert!(record.revoked, "the cancelled job's token is withdrawn");
    assert_eq!(
        f.jobs.cancel(&admin(), "local", &id).unwrap_err().code(),
        "conflict"
    );
    assert_eq!(
        f.jobs.cancel(&admin(), "local", "nope").unwrap_err().code(),
        "not_found"
    );
    assert_eq!(audited(&f.state, "push_job_cancelled"), 1);
}

#[tokio::test]
async fn a_restart_fails_interrupted_jobs_cleanly() {
    let f = fixture(vec![Step::Hang]);
    let id = f
        .jobs
        .start(&admin(), "local", request("10.0.0.12"))
        .unwrap()
        .id;
    for _ in 0..200 {
        if f.jobs.get(&id).unwrap().enrollments.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new runner over the same state has none of the old one's live jobs: what a restart sees.
    let after = PushJobs::with_executor(
        f.state.clone(),
        f.settings.clone(),
        executor(f.fake.clone()),
    );
    let view = after.get(&id).unwrap();
    assert_eq!(view.state, PushJobState::Failed);
    assert_eq!(view.error.as_ref().unwrap().code, "interrupted");
    assert!(view.finished_at.is_some());
    let record = f
        .registry
        .enrollments()
        .get(&view.enrollments[0])
        .unwrap()
        .unwrap();
    assert!(record.revoked);
    assert_eq!(after.recover().unwrap(), 0, "recovery is idempotent");
}

#[tokio::test]
async fn bad_requests_are_refused_before_a_job_exists() {
    let f = fixture(vec![]);
    let by = admin();
    let operator = Principal {
        role: Role::Operator,
        ..admin()
    };
    assert_eq!(
        f.jobs
            .start(&operator, "local", request("h"))
            .unwrap_err()
            .code(),
        "forbidden"
    );
    let cases: Vec<(&str, PushRequest)> = vec![
        (
            "vm",
            PushRequest {
                vm: " ".into(),
                ..request("h")
            },
        ),
        (
            "vm",
            PushRequest {
                vm: "a\nb".into(),
                ..request("h")
            },
        ),
        (
            "host",
            PushRequest {
                host: "".into(),
                ..request("h")
            },
        ),
        (
            "host",
            PushRequest {
                host: "a b".into(),
                ..request("h")
            },
        ),
        (
            "host",
            PushRequest {
                host: "-oProxyCommand=x".into(),
                ..request("h")
            },
        ),
        (
            "port",
            PushRequest {
                port: 0,
                ..request("h")
            },
        ),
        (
            "username",
            PushRequest {
                username: "".into(),
                ..request("h")
            },
        ),
        (
            "username",
            PushRequest {
                username: "a b".into(),
                ..request("h")
            },
        ),
        (
            "auth.password",
            PushRequest {
                auth: PushAuth::Password {
                    password: String::new(),
                },
                ..request("h")
            },
        ),
        (
            "auth.private_key",
            PushRequest {
                auth: PushAuth::PrivateKey {
                    private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n".into(),
                    passphrase: None,
                },
                ..request("h")
            },
        ),
        (
            "host_key",
            PushRequest {
                host_key: Some("MD5:aa:bb".into()),
                ..request("h")
            },
        ),
        (
            "prefix",
            PushRequest {
                prefix: Some("/usr".into()),
                ..request("h")
            },
        ),
        (
            "appliance_addr",
            PushRequest {
                appliance_addr: Some("nowhere".into()),
                ..request("h")
            },
        ),
        (
            "disks",
            PushRequest {
                disks: vec![],
                ..request("h")
            },
        ),
        (
            "disks",
            PushRequest {
                disks: vec!["/dev/sdb; reboot".into()],
                ..request("h")
            },
        ),
        (
            "interval_secs",
            PushRequest {
                interval_secs: Some(0),
                ..request("h")
            },
        ),
    ];
    for (field, req) in cases {
        match f.jobs.start(&by, "local", req) {
            Err(MgmtError::InvalidField { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let missing = PushRequest {
        agents_dir: Some(f.settings.agents_dir.join("missing")),
        ..request("h")
    };
    assert_eq!(
        f.jobs.start(&by, "local", missing).unwrap_err().code(),
        "unavailable"
    );
    assert_eq!(
        f.jobs
            .list(PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        0
    );

    // The API body: no unknown fields, and the appliance's folder cannot be chosen by a caller.
    let body = serde_json::json!({"host": "h", "username": "root", "vm": "v", "disks": ["/dev/sdb"],
        "auth": {"kind": "password", "password": "pw"}, "agents_dir": "/etc"});
    assert!(serde_json::from_value::<PushRequest>(body).is_err());
    let body = serde_json::json!({"host": "h", "username": "root", "vm": "v",
        "auth": {"kind": "private_key", "private_key": "zz-key-material-zz"}});
    let parsed: PushRequest = serde_json::from_value(body).unwrap();
    assert_eq!((parsed.port, parsed.operation), (22, Operation::Install));
    assert!(!format!("{:?}", parsed.auth).contains("key-material"));
}

#[tokio::test]
async fn lists_are_newest_first_and_bad_records_are_reported() {
    let f = fixture(vec![Step::Succeed, Step::Succeed, Step::Succeed]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let req = PushRequest {
            operation: Operation::Upgrade,
            ..request(&format!("10.0.2.{i}"))
        };
        ids.push(f.jobs.start(&admin(), "local", req).unwrap().id);
    }
    for id in &ids {
        assert_eq!(finished(&f.jobs, id).await.state, PushJobState::Succeeded);
    }
    let page = f
        .jobs
        .list(PageRequest {
            limit: Some(2),
            offset: Some(0),
        })
        .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(
        page.items.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        [ids[2].clone(), ids[1].clone()]
    );
    assert!(
        page.items[0].enrollments.is_empty(),
        "upgrades issue no token"
    );
    assert_eq!(
        f.jobs
            .list(PageRequest {
                limit: Some(0),
                offset: None
            })
            .unwrap_err()
            .code(),
        "invalid_field"
    );
    assert_eq!(
        f.jobs.get("ffffffffffffffff").unwrap_err().code(),
        "not_found"
    );
    f.jobs
        .tree()
        .unwrap()
        .insert(b"0000000000000000", encode_record(b"{bad"))
        .unwrap();
    assert_eq!(
        f.jobs.get("0000000000000000").unwrap_err().code(),
        "internal"
    );
    assert_eq!(
        f.jobs.recover().unwrap(),
        0,
        "an unreadable record is skipped"
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let b = |n| run::backoff(Duration::from_secs(5), Duration::from_secs(60), n);
    assert_eq!(
        [b(1), b(2), b(3), b(4), b(5), b(40)],
        [5, 10, 20, 40, 60, 60].map(Duration::from_secs)
    );
}

#[test]
fn log_lines_are_bounded_and_one_line_each() {
    let mut view: PushJobView = serde_json::from_value(serde_json::json!({
        "id": "1", "vm": "v", "host": "h", "port": 22, "username": "u", "operation": "install",
        "state": "running", "attempts": 1, "log": [], "error": null, "host_key": null, "agent_id": null,
        "service": null, "arch": null, "os": null, "enrollments": [], "requested_by": "ada",
        "created_at": "t", "started_at": null, "finished_at": null
    }))
    .unwrap();
    for i in 0..(MAX_LOG_LINES + 10) {
        push_log(&mut view, &format!("line {i}\nwith\u{1b}escape"));
    }
    assert_eq!(view.log.len(), MAX_LOG_LINES);
    assert!(view.log[0].starts_with("(older lines dropped)"));
    assert!(view.log.iter().all(|l| !l.chars().any(char::is_control)));
    assert!(view
        .log
        .last()
        .unwrap()
        .contains(&format!("line {}", MAX_LOG_LINES + 9)));
}

#[tokio::test]
async fn vmware_tools_requests_name_a_stored_vcenter_and_no_ssh_endpoint() {
    let f = fixture(vec![]);
    let by = admin();
    let tools = |change: &dyn Fn(&mut PushRequest)| {
        let mut req = PushRequest {
            via: Via::VmwareTools,
            host: String::new(),
            ..request("h")
        };
        change(&mut req);
        req
    };
    let cases: Vec<(&str, PushRequest)> = vec![
        ("host", tools(&|r| r.host = "10.0.0.5".into())),
        ("port", tools(&|r| r.port = 2222)),
        (
            "host_key",
            tools(&|r| r.host_key = Some(format!("SHA256:{}", "A".repeat(43)))),
        ),
        ("vm", tools(&|r| r.vm = "a free label".into())),
        ("vm", tools(&|r| r.vm = "vc-1/".into())),
        ("vm", tools(&|r| r.vm = "/vm-42".into())),
        ("vm", tools(&|r| r.vm = "vc-1/vm-42; reboot".into())),
        ("username", tools(&|r| r.username = String::new())),
    ];
    for (field, req) in cases {
        match f.jobs.start(&by, "local", req) {
            Err(MgmtError::InvalidField { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Before the core attached its vCenters nothing can be resolved.
    assert_eq!(
        f.jobs
            .start(&by, "local", tools(&|_| {}))
            .unwrap_err()
            .code(),
        "unavailable"
    );
    let other = tempfile::tempdir().unwrap();
    let (vcenters, _state) = crate::mgmt::vcenters::testkit::vcenters_in(
        other.path(),
        &crate::mgmt::vcenters::testkit::FakeVcenter::new(),
    );
    f.jobs.use_vcenters(vcenters);
    match f.jobs.start(&by, "local", tools(&|_| {})) {
        Err(MgmtError::InvalidField { field, message }) => {
            assert_eq!(field, "vm");
            assert!(message.contains("vc-1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let none = PageRequest {
        limit: None,
        offset: None,
    };
    assert!(f.jobs.list(none).unwrap().items.is_empty());
    // Old records (before `via`) read as SSH jobs.
    let old = r#"{"id":"1","vm":"v","host":"h","port":22,"username":"u","operation":"install","state":"failed","attempts":1,"log":[],"error":null,"host_key":null,"agent_id":null,"service":null,"arch":null,"os":null,"enrollments":[],"requested_by":"a","created_at":"x","started_at":null,"finished_at":null}"#;
    let view: PushJobView = serde_json::from_str(old).unwrap();
    assert_eq!(view.via, Via::Ssh);
}
