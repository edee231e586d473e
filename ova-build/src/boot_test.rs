//! `ova-build --boot-test`: placeholder while it is written.
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct Options {
    pub ova: PathBuf,
    pub work: PathBuf,
    pub mobility_bin: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    pub ovf_schema: Option<PathBuf>,
    pub timeout: Duration,
}

pub fn run(_o: &Options) -> Result<()> {
    anyhow::bail!("not written yet")
}
