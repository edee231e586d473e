//! Disk images of real files: an ext4 file system made with `mke2fs -d` from a copy of files on this
//! machine, and changed in place with `debugfs -w` (no loop mount needed).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies regular files from well-populated system folders into `dst` until about `budget` bytes.
/// Real files (binaries, libraries, text) compress and dedup like real disks do; random data would not.
pub fn collect_real_files(dst: &Path, budget: u64) -> Result<u64> {
    let sources = ["/usr/lib", "/usr/share", "/usr/bin", "/usr/include"];
    let mut total = 0u64;
    let mut n = 0u64;
    for src in sources {
        let mut stack = vec![PathBuf::from(src)];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    let Ok(md) = e.metadata() else { continue };
                    let len = md.len();
                    if len == 0 || len > 32 << 20 || total + len > budget {
                        continue;
                    }
                    let target = dst
                        .join(format!("{:02}", n % 64))
                        .join(format!("{n}-{}", e.file_name().to_string_lossy()));
                    std::fs::create_dir_all(target.parent().unwrap())?;
                    if std::fs::copy(e.path(), &target).is_ok() {
                        total += len;
                        n += 1;
                    }
                }
                if total >= budget {
                    return Ok(total);
                }
            }
        }
    }
    Ok(total)
}

/// Makes an ext4 image of `size_mib` MiB holding `files_dir`.
pub fn make_ext4(img: &Path, size_mib: u64, files_dir: &Path) -> Result<()> {
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d"])
        .arg(files_dir)
        .arg(img)
        .arg(format!("{size_mib}M"))
        .output()
        .context("run mke2fs (e2fsprogs)")?;
    if !out.status.success() {
        bail!("mke2fs failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `<dir>/disk.img`: an ext4 image of `size_mib` MiB filled to about 78% with real files from this machine.
pub fn real_ext4(dir: &Path, size_mib: u64) -> Result<PathBuf> {
    let files = dir.join("files");
    collect_real_files(&files, (size_mib * 25 / 32) << 20)?;
    let img = dir.join("disk.img");
    make_ext4(&img, size_mib, &files)?;
    Ok(img)
}

/// Runs debugfs write commands against an unmounted image.
pub fn debugfs(img: &Path, commands: &[String]) -> Result<()> {
    let script = commands.join("\n");
    let file = img.with_extension("debugfs");
    std::fs::write(&file, script)?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&file)
        .arg(img)
        .output()
        .context("run debugfs")?;
    if !out.status.success() {
        bail!("debugfs failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Adds, deletes and overwrites files: the kind of change a day of use makes.
/// Returns the names it added.
pub fn change_files(img: &Path, work: &Path, seed: u64) -> Result<Vec<String>> {
    std::fs::create_dir_all(work)?;
    let mut cmds = Vec::new();
    let mut added = Vec::new();
    // New files: real content copied from elsewhere on this machine, plus a few unique bytes.
    let mut extra = Vec::new();
    collect_real_files(work, 6 << 20)?;
    for entry in walk(work) {
        extra.push(entry);
    }
    for (i, path) in extra.iter().enumerate().take(40) {
        let mut data = std::fs::read(path)?;
        data.extend_from_slice(format!("ferry-change-{seed}-{i}").as_bytes());
        let local = work.join(format!("new-{seed}-{i}"));
        std::fs::write(&local, &data)?;
        let name = format!("/new-{seed}-{i}");
        cmds.push(format!("write {} {}", local.display(), name));
        added.push(name);
    }
    // Deletions and overwrites of existing files in the first folders.
    for d in 0..3 {
        cmds.push(format!(
            "rm /{d:02}/{}",
            first_file_name(img, &format!("/{d:02}"))?
        ));
    }
    let victim = first_file_name(img, "/05")?;
    let local = work.join("overwrite");
    std::fs::write(&local, vec![b'x'; 300_000])?;
    cmds.push(format!("rm /05/{victim}"));
    cmds.push(format!("write {} /05/{victim}", local.display()));
    debugfs(img, &cmds)?;
    Ok(added)
}

fn first_file_name(img: &Path, dir: &str) -> Result<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ls -l {dir}"))
        .arg(img)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let name = line.split_whitespace().last().unwrap_or_default();
        if !name.is_empty() && name != "." && name != ".." && line.contains("100") {
            return Ok(name.to_string());
        }
    }
    bail!("no file in {dir}: {text}")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// A 4 KiB run of the image that is not all zeros and not repetitive: good evidence of plaintext.
pub fn distinctive_runs(img: &Path, count: usize) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(img)?;
    let mut runs = Vec::new();
    let step = (data.len() / (count * 8)).max(4096) & !4095;
    let mut off = step;
    while off + 4096 <= data.len() && runs.len() < count {
        let run = &data[off..off + 4096];
        let distinct = {
            let mut seen = [false; 256];
            run.iter().for_each(|&b| seen[b as usize] = true);
            seen.iter().filter(|&&s| s).count()
        };
        if distinct > 40 {
            runs.push(run.to_vec());
        }
        off += step;
    }
    if runs.len() < count {
        bail!("only {} distinctive runs found", runs.len());
    }
    Ok(runs)
}
