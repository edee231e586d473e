use std::collections::BTreeMap;
use std::net::IpAddr;

use super::ovf_env_tests::vsphere_env;
use super::*;

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn dhcp_reason(plan: &Plan) -> &str {
    match &plan.network {
        Network::Dhcp { reason } => reason,
        other => panic!("expected DHCP, got {other:?}"),
    }
}

const GOOD: &[(&str, &str)] = &[
    ("ferry.hostname", "DR-1.example.com"),
    ("ferry.ip", "10.0.0.5/24"),
    ("ferry.gateway", "10.0.0.1"),
    ("ferry.dns", "10.0.0.2, 10.0.0.3"),
    ("ferry.ntp", "ntp1.example.com,10.0.0.4"),
    ("ferry.admin_password", "s3cret pass"),
];

fn with(overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all = props(GOOD);
    all.extend(props(overrides));
    all
}

#[test]
fn a_complete_environment_gives_a_static_plan() {
    let plan = Plan::from_properties("guestinfo.ovfEnv", &props(GOOD));
    assert_eq!(plan.hostname.as_deref(), Some("dr-1.example.com"));
    assert_eq!(
        plan.network,
        Network::Static {
            address: ip("10.0.0.5"),
            prefix: 24,
            gateway: Some(ip("10.0.0.1")),
            dns: vec![ip("10.0.0.2"), ip("10.0.0.3")],
        }
    );
    assert_eq!(plan.ntp, ["ntp1.example.com", "10.0.0.4"]);
    assert_eq!(plan.admin_password.as_deref(), Some("s3cret pass"));
    assert_eq!(plan.agent_data_address().as_deref(), Some("10.0.0.5:9443"));
    assert!(plan.ignored.is_empty());
    assert!(!format!("{plan:?}").contains("s3cret"));
}

#[test]
fn an_empty_ip_means_dhcp_and_the_rest_still_applies() {
    let plan = Plan::from_properties("x", &with(&[("ferry.ip", "")]));
    assert_eq!(dhcp_reason(&plan), "ferry.ip is empty");
    assert_eq!(plan.hostname.as_deref(), Some("dr-1.example.com"));
    assert_eq!(plan.ntp.len(), 2);
    assert!(plan.admin_password.is_some());
    assert_eq!(plan.agent_data_address(), None);
}

#[test]
fn missing_properties_give_dhcp_and_nothing_else() {
    let plan = Plan::from_properties("x", &BTreeMap::new());
    assert!(dhcp_reason(&plan).contains("ferry.ip"));
    assert_eq!(plan.hostname, None);
    assert!(plan.ntp.is_empty());
    assert_eq!(plan.admin_password, None);
}

#[test]
fn a_bad_ip_falls_back_to_dhcp_with_the_reason() {
    for (bad, why) in [
        ("10.0.0.300/24", "not an IP address"),
        ("10.0.0.5", "no /prefix"),
        ("10.0.0.5/33", "prefix"),
        ("10.0.0.5/0", "prefix"),
        ("10.0.0.5/x", "prefix"),
        ("10.0.0.0/24", "network or broadcast"),
        ("10.0.0.255/24", "network or broadcast"),
        ("127.0.0.1/8", "cannot be a host address"),
    ] {
        let plan = Plan::from_properties("x", &with(&[("ferry.ip", bad)]));
        let reason = dhcp_reason(&plan);
        assert!(
            reason.starts_with("ferry.ip") && reason.contains(why),
            "{bad}: {reason}"
        );
        // Settings that do not decide reachability still apply.
        assert!(plan.admin_password.is_some(), "{bad}");
        assert_eq!(plan.ntp.len(), 2, "{bad}");
    }
}

#[test]
fn a_gateway_outside_the_subnet_falls_back_to_dhcp() {
    for bad in ["10.0.1.1", "10.0.0.5", "fe80::1", "gateway"] {
        let plan = Plan::from_properties("x", &with(&[("ferry.gateway", bad)]));
        assert!(dhcp_reason(&plan).starts_with("ferry.gateway"), "{bad}");
    }
    // No gateway at all is a valid isolated network.
    let mut no_gateway = props(GOOD);
    no_gateway.remove("ferry.gateway");
    let plan = Plan::from_properties("x", &no_gateway);
    assert!(matches!(
        plan.network,
        Network::Static { gateway: None, .. }
    ));
}

#[test]
fn a_bad_dns_server_falls_back_to_dhcp() {
    let plan = Plan::from_properties("x", &with(&[("ferry.dns", "10.0.0.2,dns.example.com")]));
    assert!(dhcp_reason(&plan).contains("dns.example.com"));
}

#[test]
fn a_bad_hostname_is_skipped_with_a_reason_and_keeps_the_static_address() {
    for bad in ["-dr1", "dr_1", "dr..1", "a/b", "1.2.3.4", &"x".repeat(64)] {
        let plan = Plan::from_properties("x", &with(&[("ferry.hostname", bad)]));
        assert!(matches!(plan.network, Network::Static { .. }), "{bad}");
        assert_eq!(plan.hostname, None, "{bad}");
        assert!(
            plan.ignored.iter().any(|i| i.starts_with("ferry.hostname")),
            "{bad}: {:?}",
            plan.ignored
        );
    }
}

#[test]
fn bad_ntp_servers_are_ignored_with_a_reason() {
    let plan = Plan::from_properties("x", &with(&[("ferry.ntp", "ntp_bad, 10.0.0.4")]));
    assert_eq!(plan.ntp, ["10.0.0.4"]);
    assert_eq!(plan.ignored.len(), 1);
    assert!(plan.ignored[0].contains("ntp_bad"));
    assert!(matches!(plan.network, Network::Static { .. }));
}

#[test]
fn a_password_with_a_line_break_is_not_applied() {
    let plan = Plan::from_properties("x", &with(&[("ferry.admin_password", "a\nb")]));
    assert_eq!(plan.admin_password, None);
    assert!(plan.ignored[0].starts_with("ferry.admin_password"));
    assert!(!plan.ignored[0].contains("a\nb"));
}

#[test]
fn ipv6_static_addresses_work() {
    let plan = Plan::from_properties(
        "x",
        &with(&[
            ("ferry.ip", "2001:db8::5/64"),
            ("ferry.gateway", "2001:db8::1"),
            ("ferry.dns", "2001:db8::53"),
        ]),
    );
    assert!(matches!(plan.network, Network::Static { prefix: 64, .. }));
    assert_eq!(
        plan.agent_data_address().as_deref(),
        Some("[2001:db8::5]:9443")
    );
}

#[test]
fn hostnames_follow_rfc_1123() {
    for good in ["a", "dr-1", "1dr", "dr1.example.com", "dr1.example.com."] {
        assert!(valid_hostname(good), "{good}");
    }
    for bad in ["", "-a", "a-", "a..b", "a b", "ä", "123"] {
        assert!(!valid_hostname(bad), "{bad}");
    }
}

#[test]
fn no_environment_means_dhcp_with_that_reason() {
    assert_eq!(find_environment(None, &[], &[]).unwrap(), None);
    let plan = plan_for(None);
    assert_eq!(dhcp_reason(&plan), "no OVF environment");
    assert_eq!(plan.hostname, None);
}

#[test]
fn guestinfo_comes_before_the_cdrom_and_blank_guestinfo_is_skipped() {
    let cdrom = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(
        cdrom.path().join("ovf-env.xml"),
        vsphere_env(&[("ferry.hostname", "from-iso")]),
    )
    .unwrap();
    let mounts = [empty.path().to_path_buf(), cdrom.path().to_path_buf()];
    let guestinfo = vsphere_env(&[("ferry.hostname", "from-guestinfo")]);

    let found = find_environment(Some(&guestinfo), &[], &mounts)
        .unwrap()
        .unwrap();
    assert_eq!(found.source, "guestinfo.ovfEnv");
    assert_eq!(
        plan_for(Some(&found)).hostname.as_deref(),
        Some("from-guestinfo")
    );

    let found = find_environment(Some("  \n"), &[], &mounts)
        .unwrap()
        .unwrap();
    assert!(found.source.ends_with("ovf-env.xml"));
    assert_eq!(plan_for(Some(&found)).hostname.as_deref(), Some("from-iso"));
}

#[test]
fn an_oversized_cdrom_file_is_refused() {
    let cdrom = tempfile::tempdir().unwrap();
    std::fs::write(
        cdrom.path().join("ovf-env.xml"),
        vec![b' '; MAX_OVF_ENV_BYTES + 10],
    )
    .unwrap();
    let result = find_environment(None, &[], &[cdrom.path().to_path_buf()]);
    assert!(matches!(result, Err(FirstbootError::TooLarge { .. })));
}

#[test]
fn an_unreadable_document_means_dhcp_with_the_parse_error_as_reason() {
    let found = FoundEnvironment {
        source: "guestinfo.ovfEnv".into(),
        document: b"<Environment xmlns=\"http://schemas.dmtf.org/ovf/environment/1\">".to_vec(),
    };
    let plan = plan_for(Some(&found));
    assert_eq!(plan.source, "guestinfo.ovfEnv");
    assert!(dhcp_reason(&plan).contains("not well-formed"));
}
