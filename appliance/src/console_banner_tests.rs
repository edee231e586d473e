use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;

const FP: &str = "ab:cd:ef";

fn facts(setup: SetupState) -> BannerFacts {
    BannerFacts {
        version: "1.2.3".into(),
        hostname: "dr-1".into(),
        addresses: vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
        port: 443,
        ca: CaFingerprint::Known(FP.into()),
        setup,
        listening: true,
        first_boot: Vec::new(),
    }
}

#[test]
fn first_boot_lines_are_shown_under_their_heading() {
    let mut f = facts(SetupState::Complete);
    assert!(!render(&f).contains("First boot:"));
    f.first_boot = vec!["network: DHCP (ferry.ip \"10.0.2.300/24\": bad)".into()];
    let text = render(&f);
    assert!(
        text.contains("First boot:\n  network: DHCP (ferry.ip \"10.0.2.300/24\": bad)\n"),
        "{text}"
    );
}

#[test]
fn the_first_boot_summary_is_read_bounded_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.txt");
    assert!(read_first_boot_summary(&path).is_empty());
    let long: String = (0..50).map(|i| format!("line {i}\n\n")).collect();
    fs::write(&path, long).unwrap();
    let lines = read_first_boot_summary(&path);
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0], "line 0");
    fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    assert!(
        read_first_boot_summary(&path).is_empty(),
        "not UTF-8: nothing shown"
    );
}

#[test]
fn a_pending_setup_shows_the_token_and_the_setup_urls() {
    let text = render(&facts(SetupState::Pending {
        token: "tok123".into(),
    }));
    assert!(text.starts_with("Ferry disaster-recovery appliance 1.2.3\nHost name: dr-1\n"));
    assert!(text.contains("  https://10.0.0.5/\n"), "{text}");
    assert!(text.contains("  https://[2001:db8::5]/\n"), "{text}");
    assert!(text.contains("  https://10.0.0.5/setup\n"), "{text}");
    assert!(text.contains("  https://[2001:db8::5]/setup\n"), "{text}");
    assert!(text.contains("Setup is not complete"), "{text}");
    assert!(text.contains("  tok123\n"), "{text}");
    assert!(text.contains(&format!("  {FP}\n")), "{text}");
    assert!(!text.contains("not answering"), "{text}");
}

#[test]
fn a_complete_setup_shows_the_login_url_and_no_token() {
    let mut f = facts(SetupState::Complete);
    f.port = 8443;
    let text = render(&f);
    assert!(text.contains("Setup is complete"), "{text}");
    assert!(text.contains("  https://10.0.0.5:8443/login\n"), "{text}");
    assert!(
        text.contains("  https://[2001:db8::5]:8443/login\n"),
        "{text}"
    );
    assert!(!text.contains("/setup"), "{text}");
    assert!(!text.contains("token"), "{text}");
}

#[test]
fn without_addresses_and_listener_the_banner_says_so() {
    let mut f = facts(SetupState::Pending {
        token: "tok123".into(),
    });
    f.addresses.clear();
    f.listening = false;
    let text = render(&f);
    assert!(text.contains("No network address yet"), "{text}");
    assert!(text.contains("not answering yet"), "{text}");
    assert!(text.contains("https://<address>/setup"), "{text}");
    assert!(text.contains("  tok123\n"), "{text}");
    assert!(!text.contains("https://10."), "{text}");

    let text = render(&facts(SetupState::Unknown));
    assert!(text.contains("Setup state not known yet"), "{text}");
}

#[test]
fn the_address_parser_takes_global_addresses_and_skips_garbage() {
    let output = "\
2: ens192    inet 10.0.0.5/24 brd 10.0.0.255 scope global dynamic ens192\\       valid_lft 86000sec
2: ens192    inet6 2001:db8::5/64 scope global dynamic mngtmpaddr \\       valid_lft forever
3: ens224    inet 192.168.7.9/24 scope global ens224\\       valid_lft forever
2: ens192    inet 10.0.0.5/24 brd 10.0.0.255 scope global secondary ens192
1: lo    inet 127.0.0.1/8 scope host lo
4: x    inet6 fe80::1/64 scope link
5: y    inet 999.1.1.1/24 scope global y
6: z    inet6 10.0.0.7/24 scope global z
7: w    inet
8: v    inet 169.254.3.3/16 scope global v
garbage line without anything
inet notanaddress/33

\u{0}\u{7f}inet 169.254.3.3/16
";
    let addresses = parse_addresses(output);
    let expected: Vec<IpAddr> = ["10.0.0.5", "2001:db8::5", "192.168.7.9"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(addresses, expected);
    assert!(parse_addresses("").is_empty());
    assert!(parse_addresses("inet inet6 inet").is_empty());
}

#[test]
fn backslashes_are_doubled_for_agetty() {
    assert_eq!(escape_issue(r"a\nb\\c"), r"a\\nb\\\\c");
    assert_eq!(escape_issue("plain"), "plain");
    let mut f = facts(SetupState::Complete);
    f.hostname = r"evil\l\n".into();
    let escaped = escape_issue(&render(&f));
    assert!(escaped.contains(r"Host name: evil\\l\\n"), "{escaped}");
}

#[test]
fn a_missing_ca_is_not_created_and_shown_as_such() {
    let data = tempfile::tempdir().unwrap();
    assert_eq!(read_ca_fingerprint(data.path()).unwrap(), None);
    assert!(!crate::tls::tls_dir(data.path()).exists(), "no CA was made");
    let mut f = facts(SetupState::Complete);
    f.ca = CaFingerprint::NotCreated;
    assert!(render(&f).contains("  not created yet"));
}

#[test]
fn the_ca_fingerprint_matches_the_fingerprint_command_and_a_bad_file_is_an_error() {
    let data = tempfile::tempdir().unwrap();
    let tls = crate::tls::ApplianceTls::load_or_create(data.path(), &[]).unwrap();
    assert_eq!(
        read_ca_fingerprint(data.path()).unwrap(),
        Some(tls.ca_fingerprint())
    );
    let ca = crate::tls::tls_dir(data.path()).join("ca.pem");
    fs::write(&ca, "not a certificate").unwrap();
    assert!(matches!(
        read_ca_fingerprint(data.path()),
        Err(BannerError::BadCertificate(_))
    ));
}

#[test]
fn the_setup_state_follows_the_token_files() {
    let data = tempfile::tempdir().unwrap();
    assert_eq!(read_setup_state(data.path()).unwrap(), SetupState::Unknown);
    fs::write(data.path().join(SETUP_TOKEN_FILE), "  \n").unwrap();
    assert_eq!(read_setup_state(data.path()).unwrap(), SetupState::Unknown);
    fs::write(data.path().join(SETUP_TOKEN_FILE), "abc\n").unwrap();
    assert_eq!(
        read_setup_state(data.path()).unwrap(),
        SetupState::Pending {
            token: "abc".into()
        }
    );
    // The admin token is only written once setup completed: a stale setup token loses.
    fs::write(crate::api_client::admin_token_path(data.path()), "x").unwrap();
    assert_eq!(read_setup_state(data.path()).unwrap(), SetupState::Complete);
}

#[test]
fn the_issue_file_is_written_with_its_folder_and_mode_0644() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issue.d/50-ferry.issue");
    write_issue(&path, "one\n").unwrap();
    write_issue(&path, "two\n").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temp left"
    );

    let blocked = dir.path().join("file");
    fs::write(&blocked, "").unwrap();
    let err = write_issue(&blocked.join("x.issue"), "t").unwrap_err();
    assert!(matches!(err, BannerError::Write { .. }), "{err}");
}

#[test]
fn listen_addresses_give_the_port_and_the_address_to_probe() {
    assert_eq!(management_port("0.0.0.0:443").unwrap(), 443);
    assert_eq!(management_port("[::]:8443").unwrap(), 8443);
    for bad in ["", "443", "host:", "host:99999", "host:x"] {
        assert!(
            matches!(management_port(bad), Err(BannerError::ListenAddress(_))),
            "{bad}"
        );
    }
    let probe = |l| probe_address(l).unwrap().to_string();
    assert_eq!(probe("0.0.0.0:443"), "127.0.0.1:443");
    assert_eq!(probe("[::]:443"), "[::1]:443");
    assert_eq!(probe("127.0.0.1:8443"), "127.0.0.1:8443");
    assert_eq!(probe("appliance.local:8443"), "127.0.0.1:8443");
}

#[test]
fn waiting_sees_a_listener_and_gives_up_on_a_closed_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap();
    assert!(wait_for_listener(open, Duration::from_secs(5)));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    assert!(!wait_for_listener(closed, Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(3));
}
