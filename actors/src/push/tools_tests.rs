use super::*;

fn target() -> ToolsTarget {
    ToolsTarget {
        vcenter_url: "https://admin@vc.example.com:8443/sdk".into(),
        vcenter_credentials: Credentials {
            username: "vc-reader".into(),
            password: "vc-secret".into(),
        },
        vcenter_trust: TlsTrust::Thumbprint("AB".repeat(32)),
        vm: "vm-42".into(),
        username: "root".into(),
        password: "guest-secret".into(),
        connect_timeout: Duration::from_secs(15),
        command_timeout: Duration::from_secs(120),
        upload_timeout: Duration::from_secs(600),
    }
}

#[test]
fn vsphere_faults_become_the_push_errors_an_operator_acts_on() {
    let t = target();
    let code = |e: VsphereError| {
        let p = mapped(e, &t, "step");
        (p.code(), p.is_retryable(), p.to_string())
    };
    let (c, retry, text) = code(VsphereError::Fault {
        type_name: "InvalidGuestLogin".into(),
        message: "Failed to authenticate with the guest operating system".into(),
    });
    assert_eq!((c, retry), ("authentication_failed", false));
    assert!(text.contains("root"), "{text}");
    let (c, retry, _) = code(VsphereError::GuestOperationsUnavailable);
    assert_eq!((c, retry), ("tools_not_running", true));
    let (c, retry, text) = code(VsphereError::InvalidPowerState {
        requested: Some("poweredOn".into()),
        existing: Some("poweredOff".into()),
    });
    assert_eq!((c, retry), ("tools_not_running", false));
    assert!(
        text.contains("vm-42") && text.contains("poweredOff"),
        "{text}"
    );
    let (c, retry, text) = code(VsphereError::InvalidLogin);
    assert_eq!((c, retry), ("authentication_failed", false));
    assert!(text.contains("vc-reader"), "{text}");
    let (c, retry, text) = code(VsphereError::Transport {
        reason: "connection refused".into(),
    });
    assert_eq!((c, retry), ("host_unreachable", true));
    assert!(
        text.contains("vc.example.com:8443") && !text.contains("admin@"),
        "{text}"
    );
    assert_eq!(code(VsphereError::Timeout).0, "timeout");
    assert_eq!(
        code(VsphereError::ManagedObjectNotFound {
            moref: MoRef::new("VirtualMachine", "vm-42")
        })
        .0,
        "invalid"
    );
    let (c, _, text) = code(VsphereError::CertificateMismatch {
        expected: "AA".into(),
        presented_sha256: "BB".into(),
        presented_sha1: "CC".into(),
    });
    assert_eq!(c, "invalid");
    assert!(text.contains("BB"), "{text}");
    let (c, retry, _) = code(VsphereError::Fault {
        type_name: "GuestPermissionDenied".into(),
        message: "denied".into(),
    });
    assert_eq!((c, retry), ("command_failed", false));
    // A transfer host with a certificate of its own is a failed copy, not a changed vCenter.
    let p = mapped_transfer(
        VsphereError::CertificateMismatch {
            expected: "AA".into(),
            presented_sha256: "DD".into(),
            presented_sha1: "EE".into(),
        },
        &t,
        "upload",
    );
    assert_eq!(p.code(), "command_failed");
    assert!(p.to_string().contains("DD"), "{p}");
    // Secrets never show in debug output.
    let debug = format!("{t:?}");
    assert!(!debug.contains("secret"), "{debug}");
}

#[test]
fn vcenter_host_survives_odd_urls() {
    let mut t = target();
    assert_eq!(t.vcenter_host(), "vc.example.com:8443");
    for (url, host) in [
        ("", "(the vCenter)"),
        ("https://", "(the vCenter)"),
        ("vc-2/sdk", "vc-2"),
        ("https://[::1]:443/sdk?x#y", "[::1]:443"),
    ] {
        t.vcenter_url = url.into();
        assert_eq!(t.vcenter_host(), host, "{url:?}");
    }
}

/// The wrapper runs as VMware Tools on Linux starts a program: `/bin/sh -c '"<path>" <arguments>'`.
fn run_as_tools(dir: &Path, stdin: Option<&[u8]>, command: &str) -> i32 {
    if let Some(bytes) = stdin {
        std::fs::write(dir.join("in"), bytes).unwrap();
    }
    let args = shell_arguments(dir.to_str().unwrap(), stdin.is_some(), command);
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("\"/bin/sh\" {args}"))
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn the_wrapper_keeps_quotes_stdin_output_and_exit_status() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("it's a dir");
    std::fs::create_dir(&dir).unwrap();
    let code = run_as_tools(
        &dir,
        Some(b"token 'x' $HOME\n"),
        "cat; printf '%s\\n' \"it's\" >&2; exit 3",
    );
    assert_eq!(code, 3);
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        "token 'x' $HOME\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("err")).unwrap(), "it's\n");
    assert!(
        !dir.join("in").exists(),
        "stdin (it may hold a token) is removed"
    );
    // Without stdin the command reads nothing and out/err are replaced.
    assert_eq!(run_as_tools(&dir, None, "cat; echo done"), 0);
    assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "done\n");
    assert_eq!(std::fs::read_to_string(dir.join("err")).unwrap(), "");
    // A folder that is gone is 125, and nothing runs.
    let gone = t.path().join("gone");
    assert_eq!(run_as_tools(&gone, None, "touch ran"), 125);
    assert!(!gone.exists());
}
