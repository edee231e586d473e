use super::ssh::normalize_fingerprint;
use super::*;

#[test]
fn retryable_errors_are_the_transient_ones() {
    let retryable = [
        PushError::HostUnreachable {
            host: "h:22".into(),
            detail: "Connection refused".into(),
        },
        PushError::Timeout {
            step: "upload".into(),
            secs: 600,
        },
        PushError::Ssh("Disconnected".into()),
    ];
    for e in &retryable {
        assert!(e.is_retryable(), "{e}");
    }
    let final_ = [
        PushError::AuthenticationFailed {
            user: "root".into(),
            detail: "refused".into(),
        },
        PushError::HostKeyChanged {
            host: "h:22".into(),
            expected: "SHA256:a".into(),
            found: "SHA256:b".into(),
        },
        PushError::UnsupportedOs {
            found: "FreeBSD amd64".into(),
        },
        PushError::NotEnoughSpace {
            path: "/opt/ferry".into(),
            need: 100 << 20,
            have: 1 << 20,
        },
        PushError::CommandFailed {
            step: "register".into(),
            status: 1,
            stderr: "wrong registration passphrase".into(),
        },
        PushError::SudoNeedsPassword { user: "ops".into() },
        PushError::AgentDidNotRegister { waited_secs: 120 },
        PushError::Invalid("bad prefix".into()),
    ];
    for e in &final_ {
        assert!(!e.is_retryable(), "{e}");
    }
    let codes: std::collections::HashSet<&str> = retryable
        .iter()
        .chain(final_.iter())
        .map(PushError::code)
        .collect();
    assert_eq!(
        codes.len(),
        retryable.len() + final_.len(),
        "codes are distinct"
    );
}

#[test]
fn messages_say_what_to_do() {
    let space = PushError::NotEnoughSpace {
        path: "/opt/ferry-mobility".into(),
        need: 97 << 20,
        have: 1 << 20,
    };
    assert_eq!(
        space.to_string(),
        "not enough space in /opt/ferry-mobility: need 97.0 MiB, have 1.0 MiB"
    );
    let changed = PushError::HostKeyChanged {
        host: "10.0.0.9:22".into(),
        expected: "SHA256:old".into(),
        found: "SHA256:new".into(),
    }
    .to_string();
    assert!(
        changed.contains("SHA256:old")
            && changed.contains("SHA256:new")
            && changed.contains("accept")
    );
    assert!(PushError::UnsupportedOs {
        found: "Linux armv7l".into()
    }
    .to_string()
    .contains("Linux armv7l"));
    assert_eq!(human(512), "512 bytes");
    assert_eq!(human(1536), "1.5 KiB");
    assert_eq!(human(3 << 30), "3.0 GiB");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let auth = Auth::Password("hunter2".into());
    assert!(!format!("{auth:?}").contains("hunter2"));
    let key = Auth::PrivateKey {
        pem: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        passphrase: Some("pp".into()),
    };
    assert!(!format!("{key:?}").contains("BEGIN"));
    let e = Enrollment {
        id: "enr-1".into(),
        token: "fen_secret".into(),
    };
    let shown = format!("{e:?}");
    assert!(shown.contains("enr-1") && !shown.contains("fen_secret"));
}

#[test]
fn fingerprints_are_normalized_or_refused() {
    let body = "uX2zYk1m8v0f3Jw9cQ1yPp6m9Vb8t4l2eH7sK5dN0aA";
    assert_eq!(body.len(), 43);
    let want = format!("SHA256:{body}");
    assert_eq!(normalize_fingerprint(&want).unwrap(), want);
    assert_eq!(normalize_fingerprint(body).unwrap(), want);
    assert_eq!(normalize_fingerprint(&format!(" {want}= ")).unwrap(), want);
    for bad in [
        "",
        "SHA256:",
        "MD5:aa:bb",
        &"a".repeat(64),
        "SHA256:!!!",
        &format!("{body}x"),
    ] {
        assert!(
            matches!(normalize_fingerprint(bad), Err(PushError::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn service_modes_round_trip() {
    for m in [
        ServiceMode::Systemd,
        ServiceMode::InitScript,
        ServiceMode::Detached,
    ] {
        assert_eq!(ServiceMode::parse(m.name()), Some(m));
    }
    assert_eq!(ServiceMode::parse("upstart"), None);
}
