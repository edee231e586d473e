//! restic and borg, each with a local repository in the work folder and its default compression
//! and encryption, driven through the same steps as Ferry.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{dir_bytes, version_of, Logged, Timed};
use crate::tool::Tool;

/// Where a backup tool that stores absolute paths puts `img` under a restore folder.
fn restored_path(dir: &Path, img: &Path) -> PathBuf {
    dir.join(img.strip_prefix("/").unwrap_or(img))
}

/// restic: `init`, `backup IMG` twice, `restore latest --target DIR`.
pub struct Restic {
    repo: PathBuf,
    cache: PathBuf,
    log: Logged,
}

impl Restic {
    pub fn init(work: &Path) -> Result<Restic> {
        let r = Restic {
            repo: work.join("restic-repo"),
            cache: work.join("restic-cache"),
            log: Logged::new(work.join("restic.log")),
        };
        r.log.output("restic init", r.command().arg("init"))?;
        Ok(r)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("restic");
        cmd.env("RESTIC_REPOSITORY", &self.repo)
            .env("RESTIC_PASSWORD", "ferry-bench-passphrase")
            .env("RESTIC_CACHE_DIR", &self.cache);
        cmd
    }
}

impl Tool for Restic {
    fn name(&self) -> &str {
        "restic"
    }

    fn version(&self) -> String {
        version_of("restic", &["version"])
    }

    fn backup(&mut self, img: &Path, first: bool) -> Result<Timed> {
        let what = if first {
            "restic backup (initial)"
        } else {
            "restic backup (incremental)"
        };
        self.log.timed(what, self.command().arg("backup").arg(img))
    }

    fn restore(&mut self, img: &Path, dir: &Path) -> Result<(Timed, PathBuf)> {
        let t = self.log.timed(
            "restic restore",
            self.command()
                .args(["restore", "latest", "--target"])
                .arg(dir),
        )?;
        Ok((t, restored_path(dir, img)))
    }

    fn stored_bytes(&self) -> u64 {
        dir_bytes(&self.repo)
    }

    fn finish(&mut self) -> Result<Option<u64>> {
        let _ = std::fs::remove_dir_all(&self.repo);
        let _ = std::fs::remove_dir_all(&self.cache);
        Ok(None)
    }
}

/// borg: `init --encryption=repokey`, `create repo::a IMG`, `create repo::b IMG`, `extract repo::b`.
pub struct Borg {
    repo: PathBuf,
    base: PathBuf,
    log: Logged,
    archives: usize,
}

impl Borg {
    pub fn init(work: &Path) -> Result<Borg> {
        let b = Borg {
            repo: work.join("borg-repo"),
            base: work.join("borg-base"),
            log: Logged::new(work.join("borg.log")),
            archives: 0,
        };
        std::fs::create_dir_all(&b.base).context("make BORG_BASE_DIR")?;
        b.log.output(
            "borg init",
            b.command()
                .args(["init", "--encryption=repokey"])
                .arg(&b.repo),
        )?;
        Ok(b)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("borg");
        // BORG_BASE_DIR keeps borg's cache, keys and security folders out of the home folder.
        cmd.env("BORG_PASSPHRASE", "ferry-bench-passphrase")
            .env("BORG_BASE_DIR", &self.base);
        cmd
    }

    fn archive(&self, name: &str) -> String {
        format!("{}::{name}", self.repo.display())
    }
}

impl Tool for Borg {
    fn name(&self) -> &str {
        "borg"
    }

    fn version(&self) -> String {
        version_of("borg", &["--version"])
    }

    fn backup(&mut self, img: &Path, first: bool) -> Result<Timed> {
        let name = ["a", "b", "c", "d"][self.archives.min(3)];
        self.archives += 1;
        let what = if first {
            "borg create (initial)"
        } else {
            "borg create (incremental)"
        };
        self.log.timed(
            what,
            self.command()
                .arg("create")
                .arg(self.archive(name))
                .arg(img),
        )
    }

    fn restore(&mut self, img: &Path, dir: &Path) -> Result<(Timed, PathBuf)> {
        let name = ["a", "b", "c", "d"][self.archives.saturating_sub(1).min(3)];
        let t = self.log.timed(
            "borg extract",
            self.command()
                .arg("extract")
                .arg(self.archive(name))
                .current_dir(dir),
        )?;
        Ok((t, restored_path(dir, img)))
    }

    fn stored_bytes(&self) -> u64 {
        dir_bytes(&self.repo)
    }

    fn finish(&mut self) -> Result<Option<u64>> {
        let _ = std::fs::remove_dir_all(&self.repo);
        let _ = std::fs::remove_dir_all(&self.base);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_path_keeps_the_absolute_path_under_the_folder() {
        assert_eq!(
            restored_path(Path::new("/r"), Path::new("/tmp/w/disk.img")),
            PathBuf::from("/r/tmp/w/disk.img")
        );
    }
}
