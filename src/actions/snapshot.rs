//! The `snapshot` action: stream a consistent snapshot from the local
//! member straight into `<target>/etcd-snapshot-<UTC stamp>.tar.gz`, check
//! the server's size and SHA-256 trailer on the way, and publish the archive
//! only once it is complete and on disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::actions::{params, ActionContext};
use crate::archive::naming::{is_snapshot_name, snapshot_name};
use crate::archive::{ArchiveFile, ArchiveWriter, Manifest, OutputError, DB_ENTRY, MANIFEST_ENTRY};
use crate::error::Error;
use crate::etcd::snapshot::{self as stream, hex, SnapshotSink, StreamError};
use crate::etcd::{id_hex, EtcdConfig, LocalMember};
use crate::fsutil::{self, human_size, DirError};
use crate::juju::Results;
use crate::lock::ActionLock;
use crate::timefmt::UtcTime;

pub const DEFAULT_TARGET: &str = "/home/ubuntu/etcd-snapshots";
/// Streams smaller than this finish too fast for progress lines to help.
const PROGRESS_MIN: u64 = 16 << 20;
/// No etcd db compresses better than this in practice: a target with less
/// room than db/ratio clearly cannot hold the archive.
const MAX_RATIO: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the target {0} exists and is not a directory; choose a directory for target")]
    TargetNotDir(PathBuf),
    #[error("cannot create the target directory {path}: {reason}; choose a writable target")]
    TargetCreate { path: PathBuf, reason: String },
    #[error("the snapshot from etcd at {url} failed: {source}; no archive was kept")]
    Stream { url: String, source: StreamError },
    #[error("cannot write in the target directory {path}: {reason}; choose a writable target")]
    TargetWrite { path: PathBuf, reason: String },
    #[error("{0} already exists and is never overwritten; run the action again a second later")]
    Exists(PathBuf),
    #[error("not enough free space in {path}: a snapshot of a {db} db needs at least {need} and {free} is free; free some space or choose another target")]
    NoSpace {
        path: PathBuf,
        db: String,
        need: String,
        free: String,
    },
    #[error("cannot write the archive {path}: {reason}; no archive was kept")]
    Write { path: PathBuf, reason: String },
    #[error("cannot finish writing {path}: {reason}; no archive was kept")]
    Finish { path: PathBuf, reason: String },
    #[error("keys-version=v2 is refused: etcd 3.4 and later keep no v2 keys unless enable-v2 was set, and 3.6 removed the v2 store; a v3 snapshot holds all of this cluster's data, so run snapshot without keys-version")]
    KeysV2,
    #[error("invalid action parameter keys-version: {0:?}; it must be v3 (the default)")]
    KeysVersion(String),
}

impl From<SnapshotError> for crate::error::Error {
    fn from(e: SnapshotError) -> Self {
        crate::error::Error::Action(Box::new(e))
    }
}

impl From<OutputError> for SnapshotError {
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::Exists(path) => SnapshotError::Exists(path),
            OutputError::Create { dir, source } => SnapshotError::TargetWrite {
                path: dir,
                reason: source.to_string(),
            },
            OutputError::Finish { path, source } => SnapshotError::Finish {
                path,
                reason: source.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParams {
    pub target: PathBuf,
    pub keep: u64,
    pub compression_level: u32,
    pub stall_timeout: Duration,
}

impl SnapshotParams {
    pub fn from_map(p: &serde_json::Map<String, serde_json::Value>) -> Result<Self, Error> {
        // layer-etcd's parameter, kept so its runbooks run unchanged.
        match params::string(p, "keys-version", "v3")?.trim() {
            "v3" => {}
            "v2" => return Err(SnapshotError::KeysV2.into()),
            other => return Err(SnapshotError::KeysVersion(other.to_string()).into()),
        }
        Ok(SnapshotParams {
            target: PathBuf::from(params::string(p, "target", DEFAULT_TARGET)?),
            keep: params::integer(p, "keep", 0, 0..=100_000)?,
            compression_level: params::integer(p, "compression-level", 1, 1..=12)? as u32,
            stall_timeout: Duration::from_secs(params::integer(
                p,
                "stall-timeout",
                60,
                1..=86_400,
            )?),
        })
    }
}

/// Feeds the verified stream into the archive's `db` entry.
struct DbEntry<'a, W: Write> {
    archive: &'a mut ArchiveWriter<W>,
    mtime: u64,
}

impl<W: Write> SnapshotSink for DbEntry<'_, W> {
    fn begin(&mut self, total: u64) -> std::io::Result<()> {
        self.archive.begin_entry(DB_ENTRY, total, self.mtime)
    }

    fn data(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.archive.write_data(chunk)
    }
}

fn prepare_target(dir: &Path) -> Result<(), SnapshotError> {
    fsutil::ensure_private_dir(dir).map_err(|e| match e {
        DirError::NotDir => SnapshotError::TargetNotDir(dir.to_path_buf()),
        DirError::Io(e) => SnapshotError::TargetCreate {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

/// Retention: `just_written` and `keep - 1` archives named before it stay;
/// older archives this charm named go. Names stamped after the one just
/// written (a clock stepped back, an archive copied in) are never removed,
/// nor is any file the charm did not name. Returns the removed paths.
pub fn prune(dir: &Path, keep: u64, just_written: &str) -> std::io::Result<Vec<PathBuf>> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_snapshot_name(n) && n.as_str() < just_written)
        .collect();
    // The UTC stamp sorts by time.
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for name in names.into_iter().skip(keep as usize - 1) {
        let path = dir.join(name);
        fs::remove_file(&path)?;
        removed.push(path);
    }
    if !removed.is_empty() {
        fsutil::sync_dir(dir)?;
    }
    Ok(removed)
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let p = SnapshotParams::from_map(&ctx.tools.action_params()?)?;
    let _lock = ActionLock::acquire(&ctx.paths.state_dir(), "snapshot")?;
    crate::actions::resolve_interrupted(ctx)?;
    let conf = EtcdConfig::load(ctx.paths.conf())?;
    let endpoint = conf.client_endpoint(ctx.paths.conf())?;
    crate::actions::runtime()?.block_on(take(ctx, &p, &conf, &endpoint))
}

async fn take(
    ctx: &ActionContext<'_>,
    p: &SnapshotParams,
    conf: &EtcdConfig,
    endpoint: &crate::etcd::config::ClientEndpoint,
) -> Result<Results, Error> {
    // Everything that can fail without touching the disk goes first.
    let member = LocalMember::connect(endpoint).await?;
    let status = member.status().await?;
    // The member list needs quorum; a snapshot does not. On the worst day
    // the cluster may have lost quorum, and the snapshot matters most then.
    let members = match member.members().await {
        Ok(m) => Some(m),
        Err(e) => {
            ctx.progress(&format!(
                "member list unavailable ({e}); snapshotting the local member anyway"
            ));
            None
        }
    };
    let member_name = members
        .iter()
        .flatten()
        .find(|m| m.id == status.member_id)
        .map(|m| m.name.clone())
        .or_else(|| conf.name.clone())
        .unwrap_or_default();

    prepare_target(&p.target)?;
    let db_bytes = status.db_size.max(0) as u64;
    let need = db_bytes / MAX_RATIO;
    if let Ok(free) = fsutil::free_bytes(&p.target) {
        if free < need {
            return Err(SnapshotError::NoSpace {
                path: p.target.clone(),
                db: human_size(db_bytes),
                need: human_size(need),
                free: human_size(free),
            }
            .into());
        }
    }
    let now = UtcTime::now();
    let name = snapshot_name(&now.stamp());
    let mut out =
        ArchiveFile::create(&p.target, &name, p.compression_level).map_err(SnapshotError::from)?;
    let final_path = out.final_path().to_path_buf();

    ctx.progress(&format!(
        "streaming a snapshot of {} (etcd {}, revision {}, db {}) from {} into {}",
        if member_name.is_empty() {
            "the local member"
        } else {
            &member_name
        },
        status.version,
        status.revision,
        human_size(status.db_size.max(0) as u64),
        member.url(),
        final_path.display()
    ));
    let started = Instant::now();
    let stream_err = |source| match source {
        // The archive could not be written: a target problem, not etcd's.
        StreamError::Sink(reason) => SnapshotError::Write {
            path: final_path.clone(),
            reason,
        },
        source => SnapshotError::Stream {
            url: member.url().to_string(),
            source,
        },
    };

    let snap = member.snapshot(p.stall_timeout).await?;
    // A few lines for `juju run` to show: each quarter, on big dbs only.
    let mut reported = 0;
    let mut progress = |got: u64, total: u64| {
        let quarter = got.saturating_mul(4) / total.max(1);
        if total >= PROGRESS_MIN && quarter > reported && quarter < 4 {
            reported = quarter;
            ctx.progress(&format!(
                "{}% streamed ({} of {})",
                quarter * 25,
                human_size(got),
                human_size(total)
            ));
        }
    };
    let mut sink = DbEntry {
        archive: out.writer(),
        mtime: now.unix,
    };
    let verified = stream::receive(snap, &mut sink, p.stall_timeout, &mut progress)
        .await
        .map_err(stream_err)?;

    let manifest = Manifest {
        format: crate::archive::manifest::FORMAT,
        etcd_version: status.version.clone(),
        revision: status.revision,
        db_size: verified.db_size,
        db_sha256: hex(&verified.db_sha256),
        cluster_id: id_hex(status.cluster_id),
        member_id: id_hex(status.member_id),
        member_name,
        member_count: members.as_ref().map_or(0, Vec::len),
        unit: ctx.env.unit_name.clone(),
        created_at: now.rfc3339(),
        created_by: format!("etcd-charm {}", env!("CARGO_PKG_VERSION")),
    };
    let finish_err = |e: std::io::Error| SnapshotError::Finish {
        path: final_path.clone(),
        reason: e.to_string(),
    };
    out.writer().end_entry().map_err(finish_err)?;
    out.writer()
        .add_file(MANIFEST_ENTRY, &manifest.to_json(), now.unix)
        .map_err(finish_err)?;
    let published = out.publish().map_err(SnapshotError::from)?;
    let (sha, bytes) = (published.sha256, published.bytes);
    let secs = started.elapsed().as_secs_f64();
    ctx.progress(&format!(
        "wrote {} ({}) in {secs:.1} s, peak memory {}",
        final_path.display(),
        human_size(bytes),
        fsutil::peak_rss().map_or_else(|| "unknown".to_string(), human_size)
    ));

    let mut r = Results::new();
    let written = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match prune(&p.target, p.keep, &written) {
        Ok(removed) => {
            for path in &removed {
                ctx.progress(&format!("removed old snapshot {}", path.display()));
            }
            r.set("retention.removed", removed.len().to_string())?;
        }
        // The snapshot itself is good; say what retention could not do.
        Err(e) => {
            let msg = format!(
                "could not remove old snapshots in {}: {e}",
                p.target.display()
            );
            ctx.progress(&msg);
            r.set("retention.error", msg)?;
        }
    }
    let path = final_path.display().to_string();
    r.set("snapshot.path", path.clone())?;
    r.set("snapshot.size", human_size(bytes))?;
    r.set("snapshot.bytes", bytes.to_string())?;
    r.set("snapshot.sha256", hex(&sha))?;
    r.set("snapshot.version", status.version.clone())?;
    r.set("snapshot.revision", status.revision.to_string())?;
    r.set("snapshot.cluster-id", id_hex(status.cluster_id))?;
    r.set("snapshot.member-id", id_hex(status.member_id))?;
    r.set("snapshot.db-size", verified.db_size.to_string())?;
    r.set("snapshot.db-sha256", hex(&verified.db_sha256))?;
    r.set(
        "copy.cmd",
        format!("juju scp {}:{path} .", ctx.env.unit_name),
    )?;
    Ok(r)
}
