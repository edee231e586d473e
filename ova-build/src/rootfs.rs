//! The Debian root file system, made by mmdebstrap and kept between builds.
//!
//! It holds only Debian's packages: Ferry's files are added to a copy (see `stage`), so a change to
//! the overlay or the binaries never forces the slow step. The folder is reused while the digest of
//! its inputs (recipe version, suite, package sources, package list) matches the one recorded.

use crate::run;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const SUITE: &str = "bookworm";
/// Bump when the mmdebstrap options below change, so old trees are not reused.
const RECIPE_VERSION: &str = "ferry-rootfs-2";
/// Packages only vm-tools builds get; most of the size is libicu through libxml2.
const VM_TOOLS: &str = "open-vm-tools";

#[derive(Debug)]
pub struct Rootfs {
    pub path: PathBuf,
    pub reused: bool,
    pub inputs_digest: String,
}

/// The package names in `packages.txt` (one per line, `#` comments).
pub fn read_packages(path: &Path, with_vm_tools: bool) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut packages = parse_packages(&text)?;
    if with_vm_tools {
        packages.push(VM_TOOLS.to_string());
    }
    Ok(packages)
}

pub fn parse_packages(text: &str) -> Result<Vec<String>> {
    let mut packages = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let valid = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid || name.len() < 2 {
            bail!(
                "packages.txt line {}: {name:?} is not a Debian package name",
                n + 1
            );
        }
        packages.push(name.to_string());
    }
    if packages.is_empty() {
        bail!("packages.txt lists no package");
    }
    Ok(packages)
}

/// `deb` lines for the suite from this machine's apt configuration; never a hard-coded mirror.
pub fn sources() -> Result<Vec<String>> {
    let uri = |codename: &str| -> Result<Option<String>> {
        let out = run::cmd(
            "apt-get",
            [
                "indextargets",
                "--format",
                "$(REPO_URI)",
                "Created-By: Packages",
                &format!("Codename: {codename}"),
            ],
        )?;
        Ok(out
            .lines()
            .next()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty()))
    };
    let Some(main) = uri(SUITE)? else {
        bail!("no '{SUITE}' repository in this machine's apt sources (run apt-get update)");
    };
    let mut lines = vec![
        format!("deb {main} {SUITE} main"),
        format!("deb {main} {SUITE}-updates main"),
    ];
    if let Some(security) = uri(&format!("{SUITE}-security"))? {
        lines.push(format!("deb {security} {SUITE}-security main"));
    }
    Ok(lines)
}

pub fn inputs_digest(packages: &[String], sources: &[String]) -> String {
    let mut h = Sha256::new();
    for part in [RECIPE_VERSION, SUITE]
        .into_iter()
        .chain(sources.iter().map(String::as_str))
        .chain(packages.iter().map(String::as_str))
    {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

pub fn ensure(work: &Path, packages: &[String], rebuild: bool) -> Result<Rootfs> {
    let path = work.join("rootfs");
    let stamp = work.join("rootfs.inputs");
    let sources = sources()?;
    let digest = inputs_digest(packages, &sources);
    let recorded = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !rebuild && recorded.trim() == digest && path.join("etc/os-release").exists() {
        return Ok(Rootfs {
            path,
            reused: true,
            inputs_digest: digest,
        });
    }
    if !is_root()? {
        bail!("building the root file system needs root (mmdebstrap --mode=root chroots into it)");
    }
    let tmp = work.join("rootfs.tmp");
    for dir in [&tmp, &path] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let _ = std::fs::remove_file(&stamp);
    let mut args: Vec<String> = [
        "--variant=minbase",
        "--mode=root",
        "--quiet",
        "--aptopt=APT::Install-Recommends \"false\"",
        // Manuals, info pages, translations and docs are of no use on an appliance; copyright
        // files stay, the licences require them.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        // mmdebstrap copies the build machine's resolver, and the mirror goes into sources.list.
        "--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/apt/sources.list; rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--include={}", packages.join(",")));
    args.push(SUITE.to_string());
    args.push(tmp.display().to_string());
    args.extend(sources);
    run::cmd("mmdebstrap", &args)?;
    std::fs::rename(&tmp, &path)?;
    std::fs::write(&stamp, format!("{digest}\n"))?;
    Ok(Rootfs {
        path,
        reused: false,
        inputs_digest: digest,
    })
}

/// The effective user from /proc (no libc call needed for one number).
fn is_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    effective_uid(&status)
        .map(|uid| uid == 0)
        .context("no Uid line in /proc/self/status")
}

fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_effective_uid_is_the_second_number() {
        assert_eq!(
            super::effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"),
            Some(0)
        );
        assert_eq!(
            super::effective_uid("Uid:\t0\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(super::effective_uid("Uid:\tx\n"), None);
        assert_eq!(super::effective_uid("Gid:\t0\t0\n"), None);
    }

    use super::*;

    #[test]
    fn packages_skip_comments_and_blank_lines() {
        let list =
            parse_packages("# head\nsystemd\n\n  udev  # why\nlinux-image-cloud-amd64\n").unwrap();
        assert_eq!(list, ["systemd", "udev", "linux-image-cloud-amd64"]);
    }

    #[test]
    fn a_shell_word_is_not_a_package_name() {
        for bad in ["systemd;rm -rf /", "Systemd", "a b", "x"] {
            let err = parse_packages(&format!("systemd\n{bad}\n")).unwrap_err();
            assert!(err.to_string().contains("line 2"), "{bad}: {err}");
        }
        assert!(parse_packages("# nothing\n").is_err());
    }

    #[test]
    fn the_digest_follows_every_input() {
        let p = vec!["systemd".to_string()];
        let s = vec!["deb http://mirror bookworm main".to_string()];
        let base = inputs_digest(&p, &s);
        assert_eq!(base, inputs_digest(&p, &s));
        assert_ne!(base, inputs_digest(&["udev".to_string()], &s));
        assert_ne!(
            base,
            inputs_digest(&p, &["deb http://other bookworm main".to_string()])
        );
        // Joining without a separator would make these two lists collide.
        assert_ne!(
            inputs_digest(&["ab".into(), "c".into()], &s),
            inputs_digest(&["a".into(), "bc".into()], &s)
        );
    }
}
