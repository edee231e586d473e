use super::*;

fn summary(machine: &str, point: &str, ms: u64, disks: &[(&str, u64)]) -> PointSummary {
    PointSummary {
        machine_id: machine.into(),
        point_id: point.into(),
        kind: if point == "p2" {
            PointKind::App
        } else {
            PointKind::Crash
        },
        created_unix_ms: ms,
        disks: disks.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
    }
}

fn sample() -> Vec<PointSummary> {
    vec![
        summary("vm-b", "p3", 1_700_000_002_000, &[("disk0", 1 << 30)]),
        summary(
            "vm-a",
            "p2",
            1_700_000_001_001,
            &[("disk0", 1 << 30), ("disk1", 65536)],
        ),
        summary("vm-a", "p1", 1_700_000_000_000, &[("disk0", 1 << 30)]),
    ]
}

#[test]
fn rows_have_one_line_per_machine_disk_point_in_order() {
    let rows = point_rows(&sample());
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.machine.as_str(), r.disk.as_str(), r.point.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("vm-a", "disk0", "p1"),
            ("vm-a", "disk0", "p2"),
            ("vm-a", "disk1", "p2"),
            ("vm-b", "disk0", "p3"),
        ]
    );
    assert_eq!(rows[0].created, "2023-11-14T22:13:20Z");
    assert_eq!(rows[1].created, "2023-11-14T22:13:21.001Z");
    assert_eq!(rows[0].kind, "crash");
    assert_eq!(rows[1].kind, "app");
    assert_eq!(rows[2].size_bytes, 65536);
}

#[test]
fn json_output_has_the_documented_fields() {
    let mut out = Vec::new();
    write_points(&point_rows(&sample()), true, &mut out).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let first = &value.as_array().unwrap()[0];
    assert_eq!(first["machine"], "vm-a");
    assert_eq!(first["disk"], "disk0");
    assert_eq!(first["point"], "p1");
    assert_eq!(first["created"], "2023-11-14T22:13:20Z");
    assert_eq!(first["kind"], "crash");
    assert_eq!(first["size_bytes"], 1u64 << 30);
    assert_eq!(value.as_array().unwrap().len(), 4);

    let mut empty = Vec::new();
    write_points(&[], true, &mut empty).unwrap();
    assert_eq!(String::from_utf8(empty).unwrap().trim(), "[]");
}

#[test]
fn table_output_is_aligned() {
    let mut out = Vec::new();
    write_points(&point_rows(&sample()), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("MACHINE"));
    let point_col = lines[0].find("POINT").unwrap();
    assert_eq!(&lines[1][point_col..point_col + 2], "p1");
    assert!(lines[1].ends_with("1.0 GiB"), "{text}");

    let mut none = Vec::new();
    write_points(&[], false, &mut none).unwrap();
    assert_eq!(String::from_utf8(none).unwrap(), "no recovery points\n");
}

#[test]
fn latest_is_the_newest_point_holding_the_disk() {
    let points = sample();
    assert_eq!(
        resolve_point(&points, "vm-a", "disk0", "latest").unwrap(),
        "p2"
    );
    assert_eq!(
        resolve_point(&points, "vm-a", "disk1", "latest").unwrap(),
        "p2"
    );
    assert_eq!(resolve_point(&points, "vm-a", "disk0", "p1").unwrap(), "p1");
    let err = resolve_point(&points, "vm-a", "disk1", "p1").unwrap_err();
    assert!(err.to_string().contains("has no disk disk1"), "{err}");
    let err = resolve_point(&points, "vm-a", "disk0", "p9").unwrap_err();
    assert!(err.to_string().contains("has no point p9"), "{err}");
    let err = resolve_point(&points, "vm-z", "disk0", "latest").unwrap_err();
    assert!(err.to_string().contains("vm-z"), "{err}");
}

#[test]
fn lookup_errors_are_typed() {
    let points = sample();
    assert_eq!(
        resolve_point(&points, "vm-a", "disk1", "p1"),
        Err(PointLookupError::NoDisk {
            machine: "vm-a".into(),
            point: "p1".into(),
            disk: "disk1".into(),
        })
    );
    // p3 exists, but on another machine.
    assert_eq!(
        resolve_point(&points, "vm-a", "disk0", "p3"),
        Err(PointLookupError::NoPoint {
            machine: "vm-a".into(),
            point: "p3".into(),
        })
    );
    assert_eq!(
        resolve_point(&points, "vm-b", "disk1", "latest"),
        Err(PointLookupError::NoPointWithDisk {
            machine: "vm-b".into(),
            disk: "disk1".into(),
        })
    );
    // "latest" is a keyword, never a point id looked up as such.
    assert!(resolve_point(&[], "vm-a", "disk0", "latest").is_err());
}

#[test]
fn latest_breaks_time_ties_by_point_id() {
    let points = vec![
        summary("vm-a", "p-b", 5, &[("disk0", 1)]),
        summary("vm-a", "p-c", 5, &[("disk0", 1)]),
        summary("vm-a", "p-a", 5, &[("disk0", 1)]),
        summary("vm-a", "p-z", 4, &[("disk0", 1)]),
    ];
    assert_eq!(
        resolve_point(&points, "vm-a", "disk0", "latest").unwrap(),
        "p-c"
    );
}

#[test]
fn sizes_and_times_are_readable() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(2 << 40), "2.0 TiB");
    assert_eq!(rfc3339_from_unix_ms(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_from_unix_ms(u64::MAX), format!("@{}ms", u64::MAX));
    assert_eq!(mb_per_s(10_000_000, Duration::from_secs(2)), 5.0);
    assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
}
