//! etcd's own snapshot tool: `etcdutl` (3.5+) or `etcdctl` (3.4). The charm
//! restores with it rather than reimplementing etcd's restore.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no etcd restore tool found (etcdutl or etcdctl on PATH, or the etcd snap's); is etcd installed on this unit?")]
    Missing,
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: PathBuf,
        source: std::io::Error,
    },
    #[error("{tool} {what} failed: {detail}")]
    Failed {
        tool: String,
        what: &'static str,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DbStatus {
    pub hash: u64,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

#[derive(Debug, Clone)]
pub struct RestoreTool {
    pub path: PathBuf,
}

/// What to restore and as which member.
#[derive(Debug, Clone)]
pub struct RestoreSpec<'a> {
    pub db: &'a Path,
    pub name: &'a str,
    pub peer_urls: &'a [String],
    pub token: &'a str,
    pub data_dir: &'a Path,
    pub skip_hash_check: bool,
    pub bump_revision: u64,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn last_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    if line.is_empty() {
        format!("exit status {}", out.status.code().unwrap_or(-1))
    } else {
        line
    }
}

impl RestoreTool {
    /// etcdutl, then etcdctl, on PATH; then in each of `dirs` (the
    /// charm's own install from the `etcd` resource, the snap's bin dir).
    pub fn find(dirs: &[PathBuf]) -> Result<Self, ToolError> {
        const NAMES: [&str; 4] = ["etcdutl", "etcdctl", "etcd.etcdutl", "etcd.etcdctl"];
        find_on_path("etcdutl")
            .or_else(|| find_on_path("etcdctl"))
            .or_else(|| {
                dirs.iter()
                    .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
                    .find(|p| p.is_file())
            })
            .map(|path| RestoreTool { path })
            .ok_or(ToolError::Missing)
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    fn run(&self, args: &[&str]) -> Result<Output, ToolError> {
        Command::new(&self.path)
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .map_err(|source| ToolError::Spawn {
                tool: self.path.clone(),
                source,
            })
    }

    fn checked(&self, what: &'static str, args: &[&str]) -> Result<Output, ToolError> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(ToolError::Failed {
                tool: self.name(),
                what,
                detail: last_line(&out),
            })
        }
    }

    /// Reads a db read-only; fails on anything bbolt cannot open.
    pub fn status(&self, db: &Path) -> Result<DbStatus, ToolError> {
        let db = db.to_string_lossy();
        let out = self.checked(
            "snapshot status",
            &["snapshot", "status", &db, "-w", "json"],
        )?;
        serde_json::from_slice(&out.stdout).map_err(|e| ToolError::Failed {
            tool: self.name(),
            what: "snapshot status",
            detail: format!("unreadable output: {e}"),
        })
    }

    /// `--bump-revision` came with etcd 3.5.10 and 3.4.27.
    pub fn supports_bump_revision(&self) -> bool {
        self.run(&["snapshot", "restore", "--help"])
            .map(|o| {
                let all = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&all).contains("--bump-revision")
            })
            .unwrap_or(false)
    }

    pub fn version(&self) -> String {
        self.run(&["version"])
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| self.name())
    }

    pub fn restore(&self, spec: &RestoreSpec) -> Result<(), ToolError> {
        let cluster = spec
            .peer_urls
            .iter()
            .map(|u| format!("{}={u}", spec.name))
            .collect::<Vec<_>>()
            .join(",");
        let peers = spec.peer_urls.join(",");
        let db = spec.db.to_string_lossy();
        let data = spec.data_dir.to_string_lossy();
        let bump = spec.bump_revision.to_string();
        let mut args = vec![
            "snapshot",
            "restore",
            &db,
            "--name",
            spec.name,
            "--initial-cluster",
            &cluster,
            "--initial-cluster-token",
            spec.token,
            "--initial-advertise-peer-urls",
            &peers,
            "--data-dir",
            &data,
        ];
        if spec.skip_hash_check {
            args.push("--skip-hash-check");
        }
        if spec.bump_revision > 0 {
            args.extend(["--bump-revision", &bump, "--mark-compacted"]);
        }
        self.checked("snapshot restore", &args).map(drop)
    }
}
