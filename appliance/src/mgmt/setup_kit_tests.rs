//! The recovery kit's text: its width, its commands as a shell reads them, its time.

use super::*;

const FINGERPRINT: &str = "79:61:40:37:ac:d1:52:b8:4a:9f:9d:5f:b5:b4:b0:ba:52:0f:37:30:9c:\
                           d7:da:86:ac:ff:94:45:58:55:61:bc";

fn plan(url: &str) -> Plan {
    Plan {
        admin_user: ADMIN_USER.to_string(),
        admin_key: String::new(),
        admin_value: String::new(),
        target: VaultTarget {
            url: url.to_string(),
            s3_region: Some("eu-west-1".into()),
            s3_endpoint: Some("http://minio.example:9000".into()),
            ..VaultTarget::default()
        },
        vault_passphrase: "KXCA-AVR3-N37A-MMNU-43G6-67A9-T33A-NWH9".into(),
        registration_passphrase: "FYYN-9KMY-FC6M-PA4P-HQQH-THJX".into(),
        vault_passphrase_generated: true,
        registration_passphrase_generated: true,
        source: "local".into(),
        accepted_at: "2026-11-26T11:23:37.631246939Z".into(),
    }
}

/// The command starting at the line that begins with `appliance <sub>`, continuations joined
/// as a shell would.
fn command(kit: &str, start: &str) -> String {
    let mut joined = String::new();
    let mut lines = kit
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(start));
    for line in lines.by_ref() {
        match line.trim().strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part.trim_end());
                joined.push(' ');
            }
            None => {
                joined.push_str(line.trim());
                break;
            }
        }
    }
    joined
}

/// Runs `text` with `sh`, `appliance` standing for a program that prints its arguments one a
/// line: what the shell really passes, continuations and quoting included.
fn shell_args(text: &str) -> Vec<String> {
    let script = format!("appliance() {{ printf '%s\\n' \"$@\"; }}\n{text}\n");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines of the command starting at `start`, as printed in the kit.
fn command_lines(kit: &str, start: &str) -> String {
    let mut out = Vec::new();
    for line in kit
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(start))
    {
        out.push(line);
        if !line.ends_with('\\') {
            break;
        }
    }
    out.join("\n")
}

#[test]
fn the_kit_fits_78_columns_and_its_commands_are_exact() {
    let url = "/var/tmp/ferry-demo-setup/vault";
    let kit = result_of(&plan(url), FINGERPRINT).recovery_kit;
    for line in kit.lines().filter(|l| *l != FINGERPRINT) {
        assert!(line.chars().count() <= KIT_WIDTH, "{line:?} in\n{kit}");
        assert!(!line.ends_with(' '), "trailing space: {line:?}");
    }
    assert!(kit.lines().any(|l| l == FINGERPRINT), "{kit}");
    assert!(
        kit.contains("\nSet up:            2026-11-26T11:23:37Z\n"),
        "{kit}"
    );
    assert_eq!(
        command(&kit, "appliance points list"),
        "appliance points list --vault '/var/tmp/ferry-demo-setup/vault' \
         --vault-passphrase-file vault-pass.txt"
    );
    assert_eq!(
        command(&kit, "appliance restore"),
        "appliance restore --vault '/var/tmp/ferry-demo-setup/vault' \
         --vault-passphrase-file vault-pass.txt --machine MACHINE --disk DISK \
         --point latest --out disk.vhd --format vhd"
    );
    // Split over lines, yet the shell gets exactly these arguments.
    let restore = command_lines(&kit, "appliance restore");
    assert!(restore.lines().count() > 1, "{kit}");
    assert_eq!(
        shell_args(&restore),
        [
            "restore",
            "--vault",
            url,
            "--vault-passphrase-file",
            "vault-pass.txt",
            "--machine",
            "MACHINE",
            "--disk",
            "DISK",
            "--point",
            "latest",
            "--out",
            "disk.vhd",
            "--format",
            "vhd"
        ]
    );
}

#[test]
fn a_hostile_or_long_url_stays_one_quoted_argument() {
    let url = "/srv/it's here/a vault folder with a very long name that fills a line alone/$(x)";
    let kit = result_of(&plan(url), FINGERPRINT).recovery_kit;
    let list = command_lines(&kit, "appliance points list");
    assert_eq!(
        shell_args(&list),
        [
            "points",
            "list",
            "--vault",
            url,
            "--vault-passphrase-file",
            "vault-pass.txt"
        ]
    );
    // An option is never cut from its value, however long the value.
    assert!(!kit.contains("--vault \\"), "{kit}");
    let restore = command_lines(&kit, "appliance restore");
    assert_eq!(shell_args(&restore)[2], url);
}

#[test]
fn cloud_credentials_notes_are_wrapped_too() {
    for url in ["s3://bucket/prefix", "az://account/container"] {
        let kit = result_of(&plan(url), FINGERPRINT).recovery_kit;
        for line in kit.lines().filter(|l| *l != FINGERPRINT) {
            assert!(line.chars().count() <= KIT_WIDTH, "{line:?} in\n{kit}");
        }
        let note = if url.starts_with("s3") {
            "AWS_ENDPOINT"
        } else {
            "AZURE_STORAGE_ACCESS_KEY"
        };
        assert!(kit.contains(note), "{kit}");
    }
    let s3 = result_of(&plan("s3://bucket"), FINGERPRINT).recovery_kit;
    assert!(s3.contains("eu-west-1"), "{s3}");
}

#[test]
fn the_setup_time_is_whole_seconds_in_utc() {
    assert_eq!(
        kit_time("2026-11-26T11:23:37.631246939Z"),
        "2026-11-26T11:23:37Z"
    );
    assert_eq!(
        kit_time("2026-11-26T13:23:37.5+02:00"),
        "2026-11-26T11:23:37Z"
    );
    assert_eq!(kit_time("2026-11-26T11:23:37Z"), "2026-11-26T11:23:37Z");
    // Not a time: shown as stored rather than dropped.
    assert_eq!(kit_time("yesterday"), "yesterday");
    assert_eq!(kit_time(""), "");
}

#[test]
fn prose_fills_lines_and_keeps_long_words_whole() {
    let long = "x".repeat(90);
    let text = format!("a b {long} c");
    assert_eq!(kit_prose(&text, "  "), format!("  a b\n  {long}\n  c"));
    assert_eq!(kit_prose("", "  "), "");
    let filled = kit_prose(&"word ".repeat(40), "     ");
    assert!(
        filled.lines().all(|l| l.len() <= KIT_WIDTH && l.len() > 60),
        "{filled}"
    );
}
