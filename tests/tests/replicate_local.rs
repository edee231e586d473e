//! The heart of Ferry, end to end over the real binaries: an ext4 image of real files is replicated by the
//! mobility agent into the appliance and its local-folder vault, changed, replicated again, and both
//! recovery points are restored byte for byte. Also: no plaintext in the vault, a flipped byte is caught,
//! and SIGTERM exits cleanly.

use ferry_tests::image::{change_files, distinctive_runs, real_ext4};
use ferry_tests::{e2fsck_clean, points, restore, sha256_file, Agent, Appliance};
use std::path::Path;
use std::process::Command;

#[test]
fn ext4_image_two_points_restore_exactly_from_local_vault() {
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 256).unwrap();
    let sha1 = sha256_file(&img);
    let runs = distinctive_runs(&img, 12).unwrap();

    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let p1 = agent.once(&[&img]).unwrap();

    change_files(&img, &t.path().join("change"), 1).unwrap();
    let sha2 = sha256_file(&img);
    assert_ne!(sha1, sha2);
    let p2 = agent.once(&[&img]).unwrap();
    assert_ne!(p1, p2);

    let list = points(&app).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for p in &list {
        for k in ["machine", "disk", "point", "created", "kind"] {
            assert!(p.get(k).is_some(), "points list lacks {k}: {p}");
        }
    }
    let machine = list[0]["machine"].as_str().unwrap().to_string();
    let disk = list[0]["disk"].as_str().unwrap().to_string();

    let r1 = t.path().join("r1.img");
    restore(&app, &machine, &disk, &p1, &r1, "raw").unwrap();
    assert_eq!(sha256_file(&r1), sha1, "point 1 restores byte for byte");
    assert!(e2fsck_clean(&r1));
    let r2 = t.path().join("r2.img");
    restore(&app, &machine, &disk, "latest", &r2, "raw").unwrap();
    assert_eq!(sha256_file(&r2), sha2, "point 2 restores byte for byte");
    assert!(e2fsck_clean(&r2));
    // Raw output is sparse: fewer blocks allocated than its length.
    let md = std::fs::metadata(&r2).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&md) * 512 < md.len(),
        "restored raw image is not sparse"
    );

    // VHD and VMDK: what qemu-img sees must convert back to the same bytes.
    for (fmt, qfmt) in [("vhd", "vpc"), ("vmdk", "vmdk")] {
        let out = t.path().join(format!("r2.{fmt}"));
        restore(&app, &machine, &disk, &p2, &out, fmt).unwrap();
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            info.status.success(),
            "qemu-img info {fmt}: {}",
            String::from_utf8_lossy(&info.stderr)
        );
        let back = t.path().join(format!("back-{fmt}.raw"));
        let conv = Command::new("qemu-img")
            .args(["convert", "-f", qfmt, "-O", "raw"])
            .arg(&out)
            .arg(&back)
            .status()
            .unwrap();
        assert!(conv.success());
        let want = std::fs::read(&img).unwrap();
        let got = std::fs::read(&back).unwrap();
        assert!(got.len() >= want.len());
        assert!(got[..want.len()] == want[..], "{fmt} content differs");
        assert!(got[want.len()..].iter().all(|&b| b == 0));
    }

    // The vault holds no plaintext: none of the distinctive 4 KiB runs appears in any object.
    let vault_dir = app.data_dir.join("vault");
    let objects = all_files(&vault_dir);
    assert!(objects.len() > 3);
    for o in &objects {
        let bytes = std::fs::read(o).unwrap();
        for run in &runs {
            assert!(
                !bytes.windows(run.len()).any(|w| w == &run[..]),
                "plaintext found in {}",
                o.display()
            );
        }
        let pass = std::fs::read_to_string(app.data_dir.join("vault-passphrase")).unwrap();
        assert!(
            !bytes
                .windows(pass.trim().len())
                .any(|w| w == pass.trim().as_bytes()),
            "passphrase in {}",
            o.display()
        );
    }

    // SIGTERM: drains and exits 0.
    let status = app.stop().unwrap();
    assert!(
        status.success(),
        "appliance exit status {status}\n{}",
        app.log_text()
    );

    // Restore works with the daemon stopped, and with nothing but the vault URL and passphrase.
    let r3 = t.path().join("r3.img");
    let out = Command::new(ferry_tests::bin("appliance"))
        .args(["restore", "--vault"])
        .arg(&vault_dir)
        .arg("--vault-passphrase-file")
        .arg(app.data_dir.join("vault-passphrase"))
        .args([
            "--machine",
            &machine,
            "--disk",
            &disk,
            "--point",
            &p1,
            "--out",
        ])
        .arg(&r3)
        .current_dir(t.path())
        .env_remove("APPLIANCE_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&r3), sha1);

    // One flipped byte in a pack: restore fails with an integrity error that names the object.
    let pack = objects
        .iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(pack, &bytes).unwrap();
    let r4 = t.path().join("r4.img");
    let err = restore(&app, &machine, &disk, &p2, &r4, "raw")
        .unwrap_err()
        .to_string();
    let pack_name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        err.contains(&pack_name),
        "error does not name the pack {pack_name}: {err}"
    );
    assert!(err.to_lowercase().contains("integrity"), "{err}");
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
