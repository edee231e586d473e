use super::*;
use crate::push::Enrollment;
use std::path::PathBuf;
use std::process::Command;

fn spec(prefix: &str) -> InstallSpec {
    InstallSpec {
        prefix: prefix.to_string(),
        agents_dir: PathBuf::from("/nonexistent"),
        appliance_addr: "10.0.0.5:9443".into(),
        ca_fingerprint: "ab".repeat(32),
        disks: vec![
            "/dev/sdb".into(),
            "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4".into(),
        ],
        enrollment: Some(Enrollment {
            id: "enr-1".into(),
            token: "fen_abc".into(),
        }),
        service: None,
        interval_secs: Some(5),
    }
}

#[test]
fn quoting_survives_quotes() {
    assert_eq!(sq("plain"), "'plain'");
    assert_eq!(sq("it's"), r"'it'\''s'");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", sq("a'b\"c $(x) `y` \\ ;")))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "a'b\"c $(x) `y` \\ ;"
    );
}

#[test]
fn prefixes_must_be_plain_and_their_own_folder() {
    for good in [
        "/opt/ferry-mobility",
        "/srv/agents/ferry",
        "/tmp/.tmpAb3/guest/ferry-mobility",
    ] {
        check_prefix(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        "/",
        "/opt",
        "/usr/local",
        "/ferry",
        "opt/ferry-mobility",
        "/opt/ferry-mobility/",
        "/opt//ferry-mobility",
        "/opt/../ferry-mobility",
        "/opt/./ferry-mobility",
        "/opt/ferry mobility",
        "/opt/ferry'$(reboot)",
        "/opt/ferry\nx",
        "/opt/ferry;rm",
        "/opt/mobility",
    ] {
        assert!(
            matches!(check_prefix(bad), Err(PushError::Invalid(_))),
            "{bad:?} was accepted"
        );
    }
    assert!(check_prefix(&format!("/opt/ferry{}", "x".repeat(300))).is_err());
}

#[test]
fn disks_addresses_fingerprints_and_tokens_are_checked() {
    check_disk("/dev/sdb").unwrap();
    check_disk("/var/lib/images/disk0.img").unwrap();
    for bad in [
        "sdb",
        "/dev/sd b",
        "/dev/$(x)",
        "/dev/../etc/shadow",
        "",
        "/dev/sdb\n",
    ] {
        assert!(check_disk(bad).is_err(), "{bad:?}");
    }
    for good in [
        "10.0.0.5:9443",
        "appliance.corp.example:9443",
        "[::1]:9443",
        "localhost:1",
    ] {
        check_appliance_addr(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        "host",
        "host:",
        ":9443",
        "host:0",
        "host:65536",
        "host:x",
        "-host:9443",
        "ho st:9443",
        "[::1:9443",
        "[zz]:9443",
        "a;b:9443",
        "::1:9443",
    ] {
        assert!(check_appliance_addr(bad).is_err(), "{bad:?}");
    }
    check_ca_fingerprint(&"AB".repeat(32)).unwrap();
    let colons: Vec<String> = (0..32).map(|_| "ab".to_string()).collect();
    check_ca_fingerprint(&colons.join(":")).unwrap();
    for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
        assert!(check_ca_fingerprint(bad).is_err(), "{bad:?}");
    }
    check_token("t", "fen_AbC-12_x").unwrap();
    for bad in ["", "a b", "tab\there", &"x".repeat(257), "é"] {
        assert!(check_token("t", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_spec_is_checked_whole() {
    check_spec(&spec("/opt/ferry-mobility")).unwrap();
    let mut s = spec("/opt/ferry-mobility");
    s.disks.clear();
    assert!(check_spec(&s)
        .unwrap_err()
        .to_string()
        .contains("at least one disk"));
    let mut s = spec("/opt/ferry-mobility");
    s.interval_secs = Some(0);
    assert!(check_spec(&s).is_err());
    let mut s = spec("/opt/ferry-mobility");
    s.enrollment = Some(Enrollment {
        id: "x".into(),
        token: "with space".into(),
    });
    assert!(check_spec(&s).is_err());
    let mut s = spec("/opt/ferry-mobility");
    s.disks.push("relative".into());
    assert!(check_spec(&s).is_err());
}

#[test]
fn generated_files_name_the_spec() {
    let s = spec("/opt/ferry-mobility");
    let layout = Layout::new(&s.prefix);
    let run = run_command(&layout, &s);
    assert_eq!(
        run,
        "'/opt/ferry-mobility/bin/ferry-mobility' run --state-dir '/opt/ferry-mobility/state' --disk '/dev/sdb' \
         --disk '/dev/disk/by-id/wwn-0x5000c500a1b2c3d4' --interval 5"
    );
    let env = env_file(&s, ServiceMode::Detached);
    assert!(env.contains("FERRY_APPLIANCE='10.0.0.5:9443'\n"), "{env}");
    assert!(env.contains("FERRY_SERVICE_MODE=detached\n"), "{env}");
    assert!(env.contains(MARK));
    assert!(
        !env.contains("fen_abc"),
        "the token never goes into the config"
    );
    let unit = systemd_unit(&run);
    assert!(
        unit.contains(&format!("ExecStart={run}\n")) && unit.contains("WantedBy=multi-user.target")
    );
    let reg = register_command(&layout, &s);
    assert!(
        reg.contains("--passphrase-file '/opt/ferry-mobility/etc/enrollment-token'"),
        "{reg}"
    );
    assert!(
        !reg.contains("fen_abc"),
        "the token goes through a file, not the command line"
    );
    assert_eq!(
        enable_init_script("update-rc.d"),
        Some("update-rc.d ferry-mobility defaults")
    );
    assert_eq!(enable_init_script("none"), None);
}

fn sh_syntax_ok(script: &str) {
    let out = Command::new("sh")
        .arg("-n")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_scripts_are_valid_sh() {
    let s = spec("/opt/ferry-mobility");
    let layout = Layout::new(&s.prefix);
    sh_syntax_ok(&ctl_script(&layout, &run_command(&layout, &s)));
    sh_syntax_ok(&uninstall_script(&layout));
    sh_syntax_ok(DETECT_SERVICE);
    sh_syntax_ok(&write_file("/opt/ferry-mobility/etc/x", "0600"));
    sh_syntax_ok(&df_script("/opt/ferry-mobility"));
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

#[test]
fn write_file_and_df_work_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ferry.env");
    let p = path.to_str().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(write_file(p, "0600"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"secret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let missing = dir.path().join("not/yet/ferry-mobility");
    let out = sh(&df_script(missing.to_str().unwrap()));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        crate::push::probe::parse_df_available(&text).unwrap() > 0,
        "{text}"
    );
    assert_eq!(
        crate::push::probe::report_value(&text, "dir"),
        dir.path().to_str()
    );
}

/// The control script against a stand-in agent (a shell script named ferry-mobility that sleeps):
/// start writes the pidfile, a second start does not start another, stop ends the process, status
/// answers 3 after.
#[test]
fn control_script_starts_and_stops_with_a_pidfile() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ferry-mobility");
    let layout = Layout::new(prefix.to_str().unwrap());
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let fake = prefix.join("bin/ferry-mobility");
    // Not `exec sleep`: the process must keep its name, as the real agent does.
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"agent $*\"\ntrap 'exit 0' TERM\nwhile :; do sleep 1; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctl = prefix.join("bin/ferry-mobility-ctl");
    std::fs::write(
        &ctl,
        ctl_script(&layout, &format!("{} run --interval 1", sq(&layout.bin()))),
    )
    .unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |arg: &str| Command::new(&ctl).arg(arg).output().unwrap();

    assert_eq!(run("status").status.code(), Some(3));
    let started = run("start");
    assert!(started.status.success(), "{started:?}");
    let pid: u32 = std::fs::read_to_string(layout.pidfile())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let again = run("start");
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!("running (pid {pid})")));
    assert!(run("status").status.success());
    assert!(std::fs::read_to_string(layout.log())
        .unwrap()
        .contains("agent run --interval 1"));

    let stopped = run("stop");
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(run("status").status.code(), Some(3));
    assert!(!std::path::Path::new(&layout.pidfile()).exists());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("ferry-mobility"),
        "the stand-in agent still runs"
    );
    // A stale pidfile naming another process (here: this test) is not the agent.
    std::fs::create_dir_all(prefix.join("run")).unwrap();
    std::fs::write(layout.pidfile(), std::process::id().to_string()).unwrap();
    assert_eq!(run("status").status.code(), Some(3));
    assert!(run("stop").status.success());
}

#[test]
fn a_failing_agent_makes_start_fail_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ferry-mobility");
    let layout = Layout::new(prefix.to_str().unwrap());
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let ctl = prefix.join("bin/ferry-mobility-ctl");
    std::fs::write(
        &ctl,
        ctl_script(&layout, "sh -c 'echo disk not found >&2; exit 1'"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&ctl).arg("start").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("disk not found"),
        "{out:?}"
    );
}
