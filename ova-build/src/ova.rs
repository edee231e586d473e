//! The OVA: descriptor, manifest and disks in one ustar archive, in the order vSphere reads them
//! (the descriptor first, then the manifest, then the disks), and the checks an OVA must pass.
//!
//! Manifest, one line per file, exactly as vSphere accepts it (it refuses `sha256sum --tag`'s
//! `SHA256 (f) = ` and OpenSSL 3's `SHA2-256(f)= `):
//!
//! ```text
//! SHA256(ferry-0.1.0.ovf)= 3f5a…64 hex digits…\n
//! ```

use crate::disk::Disks;
use crate::{ovf, run};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A fixed archive time, so the same files give the same tar headers.
const ARCHIVE_MTIME: &str = "@1767225600";

#[derive(Debug)]
pub struct Inputs<'a> {
    pub out: &'a Path,
    pub work: &'a Path,
    pub template: &'a Path,
    pub eula: &'a Path,
    pub version: &'a str,
    pub disks: &'a Disks,
}

#[derive(Debug)]
pub struct Ova {
    pub path: PathBuf,
}

pub fn assemble(inputs: &Inputs) -> Result<Ova> {
    let base = format!("ferry-{}", inputs.version);
    let dir = inputs.work.join("ova");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let system = format!("{base}-system.vmdk");
    let data = format!("{base}-data.vmdk");
    std::fs::rename(&inputs.disks.system.vmdk, dir.join(&system))?;
    std::fs::rename(&inputs.disks.data.vmdk, dir.join(&data))?;
    let size =
        |name: &str| -> Result<String> { Ok(std::fs::metadata(dir.join(name))?.len().to_string()) };
    let template = std::fs::read_to_string(inputs.template)
        .with_context(|| format!("reading {}", inputs.template.display()))?;
    let eula = std::fs::read_to_string(inputs.eula)
        .with_context(|| format!("reading {}", inputs.eula.display()))?;
    let descriptor = ovf::fill(
        &template,
        &[
            ("SYSTEM_VMDK", system.clone()),
            ("SYSTEM_VMDK_SIZE", size(&system)?),
            ("SYSTEM_CAPACITY", inputs.disks.system.capacity.to_string()),
            ("DATA_VMDK", data.clone()),
            ("DATA_VMDK_SIZE", size(&data)?),
            ("DATA_CAPACITY", inputs.disks.data.capacity.to_string()),
            ("VERSION", inputs.version.to_string()),
            ("EULA", eula.trim_end().to_string()),
        ],
    )?;
    let ovf_name = format!("{base}.ovf");
    let mf_name = format!("{base}.mf");
    std::fs::write(dir.join(&ovf_name), &descriptor)?;
    let mut digests = Vec::new();
    for name in [&ovf_name, &system, &data] {
        digests.push((name.clone(), run::sha256_file(&dir.join(name))?));
    }
    std::fs::write(dir.join(&mf_name), manifest(&digests))?;

    let path = inputs.out.join(format!("{base}.ova"));
    let tmp = inputs.out.join(format!(".{base}.ova.tmp"));
    run::cmd_in(
        Some(&dir),
        "tar",
        [
            "--format=ustar",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0644",
            &format!("--mtime={ARCHIVE_MTIME}"),
            "-cf",
            &tmp.display().to_string(),
            &ovf_name,
            &mf_name,
            &system,
            &data,
        ],
        None,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(Ova { path })
}

pub fn manifest(digests: &[(String, String)]) -> String {
    digests
        .iter()
        .map(|(name, hex)| format!("SHA256({name})= {hex}\n"))
        .collect()
}

/// `(file, hex)` pairs of a manifest; any other line shape is an error.
pub fn parse_manifest(text: &str) -> Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let parsed = line
            .strip_prefix("SHA256(")
            .and_then(|rest| rest.split_once(")= "))
            .filter(|(name, hex)| {
                !name.is_empty()
                    && !name.contains('/')
                    && hex.len() == 64
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
        let Some((name, hex)) = parsed else {
            bail!(
                "manifest line {}: {line:?} is not `SHA256(file)= <64 hex>`",
                n + 1
            );
        };
        entries.push((name.to_string(), hex.to_ascii_lowercase()));
    }
    if entries.is_empty() {
        bail!("the manifest is empty");
    }
    Ok(entries)
}

/// An OVA unpacked and checked: member order, manifest digests (also through `sha256sum -c`),
/// the descriptor (well-formed, and against the DMTF schema when given), sizes, and every VMDK
/// through `qemu-img check`.
#[derive(Debug)]
pub struct Checked {
    /// The referenced disks in the OVF's order (system first).
    pub vmdks: Vec<PathBuf>,
}

pub fn validate(ova: &Ova, schema: Option<&Path>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    check(&ova.path, dir.path(), schema).map(|_| ())
}

pub fn check(ova: &Path, into: &Path, schema: Option<&Path>) -> Result<Checked> {
    let listing = run::cmd("tar", ["-tf".as_ref(), ova.as_os_str()])?;
    let members: Vec<&str> = listing.lines().collect();
    if members.len() < 3
        || !members[0].ends_with(".ovf")
        || !members[1].ends_with(".mf")
        || members.iter().any(|m| m.contains('/'))
    {
        bail!("the OVA's members are {members:?}; expected the .ovf, then the .mf, then the disks");
    }
    run::cmd_in(Some(into), "tar", ["-xf".as_ref(), ova.as_os_str()], None)?;
    let ovf_path = into.join(members[0]);
    let descriptor = std::fs::read(&ovf_path)?;
    let refs = ovf::references(&descriptor)?;
    let entries = parse_manifest(&std::fs::read_to_string(into.join(members[1]))?)?;
    let mut listed: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = members
        .iter()
        .copied()
        .filter(|m| !m.ends_with(".mf"))
        .collect();
    expected.sort_unstable();
    if listed != expected {
        bail!("the manifest lists {listed:?}, the OVA holds {expected:?}");
    }
    for (name, hex) in &entries {
        let actual = run::sha256_file(&into.join(name))?;
        if &actual != hex {
            bail!("{name}: SHA-256 {actual} does not match the manifest's {hex}");
        }
    }
    let gnu: String = entries.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    run::cmd_in(
        Some(into),
        "sha256sum",
        ["-c", "--strict", "--quiet"],
        Some(gnu.as_bytes()),
    )
    .context("sha256sum -c of the manifest")?;
    println!(
        "manifest: {} digests verified (also by sha256sum -c)",
        entries.len()
    );

    if run::which("xmllint").is_some() {
        run::cmd("xmllint", ["--noout".as_ref(), ovf_path.as_os_str()])?;
        match schema {
            Some(schema) => {
                run::cmd_in(
                    Some(schema),
                    "xmllint",
                    [
                        "--noout".as_ref(),
                        "--nonet".as_ref(),
                        "--schema".as_ref(),
                        "dsp8023_1.1.1.xsd".as_ref(),
                        ovf_path.as_os_str(),
                    ],
                    None,
                )
                .context("validating the OVF against the DMTF schema")?;
                println!("ovf: valid against the DMTF OVF schema (dsp8023_1.1.1.xsd)");
            }
            None => println!("ovf: well-formed; DMTF schema not available, schema check skipped"),
        }
    } else {
        println!("ovf: xmllint not installed, schema check skipped");
    }

    let mut vmdks = Vec::new();
    for file in &refs {
        let path = into.join(&file.href);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("{} is referenced but not in the OVA", file.href))?
            .len();
        if file.size.is_some_and(|size| size != len) {
            bail!("{}: {len} bytes, the OVF says {:?}", file.href, file.size);
        }
        run::cmd(
            "qemu-img",
            ["check".as_ref(), "-q".as_ref(), path.as_os_str()],
        )
        .with_context(|| format!("qemu-img check {}", file.href))?;
        vmdks.push(path);
    }
    println!("vmdk: qemu-img check clean for {} disks", vmdks.len());
    Ok(Checked { vmdks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_bytes_are_fixed() {
        let hex = "ab".repeat(32);
        let text = manifest(&[
            ("f.ovf".into(), hex.clone()),
            ("d.vmdk".into(), hex.clone()),
        ]);
        assert_eq!(
            text,
            format!("SHA256(f.ovf)= {hex}\nSHA256(d.vmdk)= {hex}\n")
        );
        assert_eq!(
            parse_manifest(&text).unwrap(),
            [
                ("f.ovf".to_string(), hex.clone()),
                ("d.vmdk".to_string(), hex)
            ]
        );
    }

    #[test]
    fn other_digest_spellings_are_refused() {
        let hex = "0".repeat(64);
        for bad in [
            format!("SHA256 (f.ovf) = {hex}"),
            format!("SHA2-256(f.ovf)= {hex}"),
            format!("SHA1(f.ovf)= {}", "0".repeat(40)),
            format!("SHA256(f.ovf)= {}", "0".repeat(63)),
            format!("SHA256(../f.ovf)= {hex}"),
            format!("SHA256()= {hex}"),
            format!("SHA256(f.ovf)= {}", "g".repeat(64)),
        ] {
            assert!(parse_manifest(&bad).is_err(), "{bad}");
        }
        assert!(parse_manifest("").is_err());
    }
}

#[cfg(test)]
#[path = "ova_check_tests.rs"]
mod check_tests;
