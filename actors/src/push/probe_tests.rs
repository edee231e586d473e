use super::*;

#[test]
fn uname_maps_supported_architectures() {
    assert_eq!(parse_uname("Linux x86_64\n").unwrap(), Arch::X86_64);
    assert_eq!(parse_uname("  Linux   aarch64 ").unwrap(), Arch::Aarch64);
    assert_eq!(parse_uname("Linux arm64").unwrap(), Arch::Aarch64);
    assert_eq!(parse_uname("Linux amd64").unwrap(), Arch::X86_64);
}

#[test]
fn uname_refuses_other_systems_and_names_what_it_found() {
    for (output, found) in [
        ("FreeBSD amd64", "FreeBSD amd64"),
        ("Darwin arm64", "Darwin arm64"),
        ("Linux armv7l", "Linux armv7l"),
        ("Linux i686", "Linux i686"),
        ("Linux aarch64_be", "Linux aarch64_be"),
        ("Linux", "Linux"),
        ("Linux x86_64 extra", "Linux x86_64 extra"),
        ("", "(nothing)"),
        (
            "'uname' is not recognized as an internal\r\ncommand",
            "'uname' is not recognized as an internal  command",
        ),
    ] {
        match parse_uname(output) {
            Err(PushError::UnsupportedOs { found: f }) => assert_eq!(f, found, "{output:?}"),
            other => panic!("{output:?}: {other:?}"),
        }
    }
    let err = parse_uname("SunOS sun4v").unwrap_err().to_string();
    assert!(
        err.contains("unsupported OS") && err.contains("SunOS sun4v"),
        "{err}"
    );
}

#[test]
fn quoted_guest_text_is_bounded_and_one_line() {
    let long = "x".repeat(1000);
    let q = quote(&long);
    assert!(q.ends_with("...") && q.chars().count() == 123, "{q}");
    assert_eq!(quote("a\nb\u{1b}[31m"), "a b [31m");
}

#[test]
fn os_release_prefers_pretty_name_and_unquotes() {
    let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
    assert_eq!(
        parse_os_release(debian).as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(
        parse_os_release("# comment\nNAME='Alpine Linux'\nVERSION_ID=3.20.1\n").as_deref(),
        Some("Alpine Linux 3.20.1")
    );
    assert_eq!(parse_os_release("NAME=Gentoo").as_deref(), Some("Gentoo"));
    assert_eq!(
        parse_os_release("PRETTY_NAME=\"\"\nNAME=Arch").as_deref(),
        Some("Arch")
    );
    for bad in [
        "",
        "garbage without equals\n\u{0}\u{ff}",
        "ID=debian\nVERSION_ID=12",
    ] {
        assert_eq!(parse_os_release(bad), None, "{bad:?}");
    }
}

#[test]
fn df_available_is_read_before_the_capacity_column() {
    let out = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 70447960  24837928      74% /\n";
    assert_eq!(parse_df_available(out).unwrap(), 24_837_928 * 1024);
    let tmpfs = "Filesystem 1024-blocks Used Available Capacity Mounted on\ntmpfs 1024 0 1024 0% /tmp/x\ndir=/tmp/x\n";
    assert_eq!(parse_df_available(tmpfs).unwrap(), 1024 * 1024);
    // A file system name with a space does not shift the numbers.
    let spaced = "Filesystem 1024-blocks Used Available Capacity Mounted on\nmy share 100 40 60 40% /mnt/my share\n";
    assert_eq!(parse_df_available(spaced).unwrap(), 60 * 1024);
    // busybox df -P prints the same header with "Available".
    let busybox = "Filesystem           1024-blocks    Used Available Capacity Mounted on\noverlay               61202244  8932 52000000  15% /\n";
    assert_eq!(parse_df_available(busybox).unwrap(), 52_000_000 * 1024);
}

#[test]
fn df_refuses_bad_output() {
    for (bad, why) in [
        ("", "printed nothing"),
        ("\n\n", "printed nothing"),
        ("df: /x: No such file or directory\n", "unexpected df header"),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n", "no file system line"),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 five 50% /\n", "not a number"),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 5 /\n", "no capacity column"),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n50% 1 2 3\n", "no capacity column"),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 -3 50% /\n", "not a number"),
        (
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 1 1 99999999999999999999 1% /\n",
            "not a number",
        ),
        (
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 1 1 18446744073709551615 1% /\n",
            "out of range",
        ),
    ] {
        let err = parse_df_available(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn uid_sha_and_reports() {
    assert_eq!(parse_uid("0\n").unwrap(), 0);
    assert_eq!(parse_uid(" 1000 ").unwrap(), 1000);
    assert!(parse_uid("uid=0(root)").is_err());
    assert!(parse_uid("").is_err());
    assert!(parse_uid("-1").is_err());

    let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_eq!(
        parse_sha256sum(&format!(
            "{}  /opt/ferry/bin/ferry-mobility\n",
            digest.to_uppercase()
        ))
        .as_deref(),
        Some(digest)
    );
    assert_eq!(parse_sha256sum(""), None);
    assert_eq!(parse_sha256sum("sha256sum: x: No such file"), None);
    assert_eq!(parse_sha256sum(&"z".repeat(64)), None);

    let out = "pid1=process_api\nmode=detached\nboot=update-rc.d\nmode=systemd\n";
    assert_eq!(report_value(out, "mode"), Some("systemd"));
    assert_eq!(report_value(out, "boot"), Some("update-rc.d"));
    assert_eq!(report_value(out, "pid"), None);
    assert_eq!(report_value("", "mode"), None);
}

#[test]
fn registration_json_yields_the_agent_id() {
    let good = r#"{"format":"ferry-mobility-registration","version":1,"agent_id":"2b1f0c1e-8a51-4c55-9e1a-0b7d4b8f0d11","appliance":"a:9443"}"#;
    assert_eq!(
        parse_registration(good).unwrap(),
        "2b1f0c1e-8a51-4c55-9e1a-0b7d4b8f0d11"
    );
    for bad in [
        "",
        "{",
        r#"{"format":"other","agent_id":"x"}"#,
        r#"{"format":"ferry-mobility-registration"}"#,
        r#"{"format":"ferry-mobility-registration","agent_id":""}"#,
        r#"{"format":"ferry-mobility-registration","agent_id":"a b; rm -rf /"}"#,
        r#"{"format":"ferry-mobility-registration","agent_id":7}"#,
    ] {
        assert!(parse_registration(bad).is_err(), "{bad}");
    }
}

#[test]
fn sudo_password_prompts_are_recognised() {
    for yes in [
        "sudo: a password is required\n",
        "sudo: a terminal is required to read the password; either use the -S option",
        "sudo: no tty present and no askpass program specified",
    ] {
        assert!(sudo_wants_password(yes), "{yes}");
    }
    for no in [
        "",
        "sh: 1: false: not found",
        "sudo: unknown user",
        "password is required",
    ] {
        assert!(!sudo_wants_password(no), "{no}");
    }
}
