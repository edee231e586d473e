//! One agent, two disks of different sizes (one not a multiple of 64 KiB): a point covers both disks at
//! one bookmark, and each disk of each point restores byte for byte.

use ferry_tests::{points, restore, sha256_file, Agent, Appliance};
use std::io::{Seek, SeekFrom, Write};

fn fill(path: &std::path::Path, size: u64, seed: u8) {
    let mut f = std::fs::File::create(path).unwrap();
    let line: Vec<u8> =
        format!("disk {seed} holds text that compresses like files do\n").into_bytes();
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(line.len() as u64) as usize;
        f.write_all(&line[..n]).unwrap();
        written += n as u64;
    }
    // A zero region in the middle.
    f.seek(SeekFrom::Start(size / 3)).unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
}

fn scribble(path: &std::path::Path, offsets: &[u64], tag: &str) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for &o in offsets {
        f.seek(SeekFrom::Start(o)).unwrap();
        f.write_all(format!("changed {tag} at {o}").as_bytes())
            .unwrap();
    }
}

#[test]
fn two_disks_share_each_point() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.img");
    let b = t.path().join("b.img");
    fill(&a, 24 << 20, 1);
    fill(&b, (9 << 20) + 12345, 2);
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let p1 = agent.once(&[&a, &b]).unwrap();
    let (a1, b1) = (sha256_file(&a), sha256_file(&b));
    scribble(&a, &[0, 5 << 20, (24 << 20) - 100], "a");
    scribble(&b, &[70_000, (9 << 20) + 12000], "b");
    let p2 = agent.once(&[&a, &b]).unwrap();
    let (a2, b2) = (sha256_file(&a), sha256_file(&b));

    let list = points(&app).unwrap();
    assert_eq!(list.len(), 4, "two points of two disks: {list:?}");
    let machine = list[0]["machine"].as_str().unwrap();
    for (point, disk, want) in [
        (&p1, "disk0", &a1),
        (&p1, "disk1", &b1),
        (&p2, "disk0", &a2),
        (&p2, "disk1", &b2),
    ] {
        let out = t.path().join(format!("{point}-{disk}.img"));
        restore(&app, machine, disk, point, &out, "raw").unwrap();
        assert_eq!(&sha256_file(&out), want, "{disk} of point {point}");
    }
}
