//! The `snapshot` action: stream a consistent snapshot from the local
//! member straight into `<target>/etcd-snapshot-<UTC stamp>.tar.gz` and/or
//! the related object stores in the same pass, check the server's size and
//! SHA-256 trailer on the way, and publish the archive only once it is
//! complete: on disk (then its `.json` record beside it) and in each store
//! (the multipart upload completed, then its record beside it).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::actions::{params, ActionContext};
use crate::archive::naming::{is_snapshot_name, snapshot_name};
use crate::archive::output::{SideSink, Writer};
use crate::archive::{
    record, ArchiveFile, Manifest, OutputError, Record, DB_ENTRY, MANIFEST_ENTRY,
};
use crate::error::Error;
use crate::etcd::client::{MemberInfo, MemberStatus};
use crate::etcd::snapshot::{self as stream, hex, SnapshotSink, StreamError};
use crate::etcd::{id_hex, EtcdConfig, LocalMember};
use crate::fsutil::{self, human_size, DirError};
use crate::juju::Results;
use crate::lock::ActionLock;
use crate::store::upload::{abort_leftovers, Upload, Uploaded};
use crate::store::{Store, StoreError, Stores, Timeouts};
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
    #[error("invalid action parameter destination: {0:?}; it must be local, store or both")]
    Destination(String),
    #[error("destination={0} needs an object store: relate this application to s3-integrator (s3-credentials) or azure-storage-integrator (azure-credentials), or run snapshot with destination=local")]
    NoStore(&'static str),
    #[error("{0}; no archive was stored")]
    Store(StoreError),
    #[error("{0}; no archive was written")]
    Encryption(String),
    #[error("the snapshot was written to {path}, but {failed}; no object was left in the store")]
    UploadFailed { path: String, failed: String },
    #[error("the upload failed: {0}; no object was left in the store and no local archive was asked for")]
    NothingStored(String),
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

/// Where the archive goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Local,
    Store,
    Both,
}

impl Destination {
    fn local(self) -> bool {
        self != Destination::Store
    }
    fn store(self) -> bool {
        self != Destination::Local
    }
    fn name(self) -> &'static str {
        match self {
            Destination::Local => "local",
            Destination::Store => "store",
            Destination::Both => "both",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParams {
    pub target: PathBuf,
    pub keep: u64,
    pub compression_level: u32,
    pub stall_timeout: Duration,
    /// None: both when a store is related, else local.
    pub destination: Option<Destination>,
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
            destination: match params::optional_string(p, "destination")?.as_deref() {
                None => None,
                Some("local") => Some(Destination::Local),
                Some("store") => Some(Destination::Store),
                Some("both") => Some(Destination::Both),
                Some(other) => return Err(SnapshotError::Destination(other.to_string()).into()),
            },
        })
    }
}

/// Feeds the verified stream into the archive's `db` entry.
struct DbEntry<'a, S: SideSink> {
    archive: &'a mut Writer<S>,
    mtime: u64,
}

impl<S: SideSink> SnapshotSink for DbEntry<'_, S> {
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
        // Its record goes with it (none beside older archives).
        match fs::remove_file(record::local_path(&path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
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
    execute(ctx, &p)
}

/// The snapshot itself, under the action lock the caller holds (the
/// action, or the scheduled run).
pub fn execute(ctx: &ActionContext, p: &SnapshotParams) -> Result<Results, Error> {
    let stores = Stores::load(&ctx.paths.state_dir()).map_err(SnapshotError::Store)?;
    let dest = match p.destination {
        Some(d) if d.store() && stores.is_empty() => {
            return Err(SnapshotError::NoStore(d.name()).into())
        }
        Some(d) => d,
        None if stores.is_empty() => Destination::Local,
        None => Destination::Both,
    };
    let conf = EtcdConfig::load(ctx.paths.conf())?;
    let endpoint = conf.client_endpoint(ctx.paths.conf())?;
    // Two workers: while the archive writer waits on the disk or on an
    // upload's back-pressure, the other keeps etcd's connection (its
    // keep-alive pings) going.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let source = rt.block_on(inspect(ctx, &conf, &endpoint))?;
    let opened = if dest.store() {
        open_stores(ctx, &stores, p.stall_timeout)?
    } else {
        Vec::new()
    };
    if dest.local() {
        check_target(&p.target, &source.status)?;
    }
    let recipients = if dest.store() && !stores.recipients.is_empty() {
        // Refused before anything is written, never sent out plain.
        crate::store::crypt::recipients(&stores.recipients).map_err(SnapshotError::Encryption)?;
        Some(stores.recipients.clone())
    } else {
        None
    };
    let taken = rt.block_on(take(ctx, p, &source, dest, (&opened, recipients)))?;
    report(ctx, p, &source, dest, taken)
}

/// The member to snapshot, as it describes itself.
struct Source {
    member: LocalMember,
    status: MemberStatus,
    members: Option<Vec<MemberInfo>>,
    name: String,
}

async fn inspect(
    ctx: &ActionContext<'_>,
    conf: &EtcdConfig,
    endpoint: &crate::etcd::config::ClientEndpoint,
) -> Result<Source, Error> {
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
    let name = members
        .iter()
        .flatten()
        .find(|m| m.id == status.member_id)
        .map(|m| m.name.clone())
        .or_else(|| conf.name.clone())
        .unwrap_or_default();
    Ok(Source {
        member,
        status,
        members,
        name,
    })
}

/// The stores, opened; uploads an earlier run left unfinished are aborted
/// first.
fn open_stores(ctx: &ActionContext, stores: &Stores, stall: Duration) -> Result<Vec<Store>, Error> {
    for note in abort_leftovers(stores, &ctx.paths.state_dir(), stall) {
        ctx.progress(&note);
    }
    stores
        .stores
        .values()
        .map(|s| Store::open(s, Timeouts { stall }).map_err(|e| SnapshotError::Store(e).into()))
        .collect()
}

fn check_target(target: &Path, status: &MemberStatus) -> Result<(), SnapshotError> {
    prepare_target(target)?;
    let db_bytes = status.db_size.max(0) as u64;
    let need = db_bytes / MAX_RATIO;
    match fsutil::free_bytes(target) {
        Ok(free) if free < need => Err(SnapshotError::NoSpace {
            path: target.to_path_buf(),
            db: human_size(db_bytes),
            need: human_size(need),
            free: human_size(free),
        }),
        _ => Ok(()),
    }
}

/// What a snapshot left, for the results.
struct Taken {
    name: String,
    local: Option<PathBuf>,
    sha256: [u8; 32],
    bytes: u64,
    manifest: Manifest,
    uploaded: Vec<Uploaded>,
    /// One sentence per store the archive did not reach.
    failed: Vec<String>,
}

fn manifest(ctx: &ActionContext, source: &Source, now: &UtcTime) -> Manifest {
    Manifest {
        format: crate::archive::manifest::FORMAT,
        etcd_version: source.status.version.clone(),
        revision: source.status.revision,
        db_size: 0,
        db_sha256: String::new(),
        cluster_id: id_hex(source.status.cluster_id),
        member_id: id_hex(source.status.member_id),
        member_name: source.name.clone(),
        member_count: source.members.as_ref().map_or(0, Vec::len),
        unit: ctx.env.unit_name.clone(),
        created_at: now.rfc3339(),
        created_by: format!("etcd-charm {}", env!("CARGO_PKG_VERSION")),
    }
}

async fn take(
    ctx: &ActionContext<'_>,
    p: &SnapshotParams,
    source: &Source,
    dest: Destination,
    (stores, recipients): (&[Store], Option<Vec<String>>),
) -> Result<Taken, Error> {
    let now = UtcTime::now();
    let name = snapshot_name(&now.stamp());
    let mut manifest = manifest(ctx, source, &now);
    let app = ctx.env.unit_name.split('/').next().unwrap_or("etcd");
    let uploads: Vec<Upload> = stores
        .iter()
        .map(|s| {
            // An encrypted object says so in its name.
            let object = match &recipients {
                Some(_) => format!("{name}.age"),
                None => name.clone(),
            };
            let key = s.settings.key(app, &object);
            Upload::start(
                s,
                &key,
                s.start_metadata(&manifest),
                recipients.clone(),
                &ctx.paths.state_dir(),
            )
        })
        .collect();
    let local_dir = dest.local().then_some(p.target.as_path());
    let mut out = ArchiveFile::create_with(local_dir, &name, p.compression_level, uploads)
        .map_err(SnapshotError::from)?;
    let shown = match local_dir {
        Some(_) => out.final_path().display().to_string(),
        None => stores
            .iter()
            .map(Store::url)
            .collect::<Vec<_>>()
            .join(" and "),
    };
    ctx.progress(&format!(
        "streaming a snapshot of {} (etcd {}, revision {}, db {}) from {} into {shown}",
        if source.name.is_empty() {
            "the local member"
        } else {
            &source.name
        },
        source.status.version,
        source.status.revision,
        human_size(source.status.db_size.max(0) as u64),
        source.member.url(),
    ));
    let started = Instant::now();
    let verified = stream_db(ctx, p, source, &mut out, now.unix).await?;
    manifest.db_size = verified.db_size;
    manifest.db_sha256 = hex(&verified.db_sha256);
    let finish_err = |e: std::io::Error| SnapshotError::Finish {
        path: out_path(local_dir, &name),
        reason: e.to_string(),
    };
    out.writer().end_entry().map_err(finish_err)?;
    out.writer()
        .add_file(MANIFEST_ENTRY, &manifest.to_json(), now.unix)
        .map_err(finish_err)?;
    let (published, uploads) = out.publish_all().map_err(SnapshotError::from)?;
    let record = Record {
        archive: name.clone(),
        sha256: hex(&published.sha256),
        bytes: published.bytes,
        manifest: manifest.clone(),
        encrypted: None,
    };
    let local = local_dir.map(|_| published.path.clone());
    if let Some(path) = &local {
        if let Err(e) = record::write_local(path, &record) {
            ctx.progress(&format!(
                "the archive is complete, but its record {} could not be written: {e}",
                record::local_path(path).display()
            ));
        }
    }
    let (mut uploaded, mut failed) = (Vec::new(), Vec::new());
    for up in uploads {
        let url = up.url().to_string();
        match up.finish(record.clone()) {
            Ok(u) => {
                ctx.progress(&format!("stored {} in {url}", u.key));
                uploaded.push(u);
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    ctx.progress(&format!(
        "wrote {} ({}) in {:.1} s, peak memory {}",
        shown,
        human_size(published.bytes),
        started.elapsed().as_secs_f64(),
        fsutil::peak_rss().map_or_else(|| "unknown".to_string(), human_size)
    ));
    Ok(Taken {
        name,
        local,
        sha256: published.sha256,
        bytes: published.bytes,
        manifest,
        uploaded,
        failed,
    })
}

fn out_path(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// Streams the member's snapshot into the archive's db entry, verified.
async fn stream_db<S: SideSink>(
    ctx: &ActionContext<'_>,
    p: &SnapshotParams,
    source: &Source,
    out: &mut ArchiveFile<S>,
    mtime: u64,
) -> Result<stream::Verified, Error> {
    let path = out.final_path().to_path_buf();
    let stream_err = |e| match e {
        // The archive could not be written: a target (or store) problem,
        // not etcd's.
        StreamError::Sink(reason) => SnapshotError::Write {
            path: path.clone(),
            reason,
        },
        source_err => SnapshotError::Stream {
            url: source.member.url().to_string(),
            source: source_err,
        },
    };
    let snap = source.member.snapshot(p.stall_timeout).await?;
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
        mtime,
    };
    Ok(
        stream::receive(snap, &mut sink, p.stall_timeout, &mut progress)
            .await
            .map_err(stream_err)?,
    )
}

/// Retention, then the results; an upload that failed fails the action
/// after its results are set (the local archive is reported all the same).
fn report(
    ctx: &ActionContext,
    p: &SnapshotParams,
    source: &Source,
    dest: Destination,
    taken: Taken,
) -> Result<Results, Error> {
    let mut r = Results::new();
    if let Some(path) = &taken.local {
        retention(ctx, p, &taken.name, &mut r)?;
        let path = path.display().to_string();
        r.set("snapshot.path", path.clone())?;
        r.set(
            "copy.cmd",
            format!("juju scp {}:{path} .", ctx.env.unit_name),
        )?;
    }
    let m = &taken.manifest;
    r.set("snapshot.name", taken.name.clone())?;
    r.set("snapshot.size", human_size(taken.bytes))?;
    r.set("snapshot.bytes", taken.bytes.to_string())?;
    r.set("snapshot.sha256", hex(&taken.sha256))?;
    r.set("snapshot.version", m.etcd_version.clone())?;
    r.set("snapshot.revision", m.revision.to_string())?;
    r.set("snapshot.cluster-id", id_hex(source.status.cluster_id))?;
    r.set("snapshot.member-id", id_hex(source.status.member_id))?;
    r.set("snapshot.db-size", m.db_size.to_string())?;
    r.set("snapshot.db-sha256", m.db_sha256.clone())?;
    r.set("snapshot.destination", dest.name())?;
    for (i, u) in taken.uploaded.iter().enumerate() {
        let prefix = if i == 0 {
            "store".to_string()
        } else {
            format!("store-{}", i + 1)
        };
        r.set(&format!("{prefix}.url"), u.url.clone())?;
        r.set(&format!("{prefix}.key"), u.key.clone())?;
        r.set(&format!("{prefix}.bytes"), u.bytes.to_string())?;
    }
    if taken.failed.is_empty() {
        return Ok(r);
    }
    let failed = taken.failed.join("; ");
    match &taken.local {
        None if taken.uploaded.is_empty() => Err(SnapshotError::NothingStored(failed).into()),
        local => {
            ctx.tools.action_set(&r)?;
            let path = local.as_ref().map_or_else(
                || "the other store".to_string(),
                |l| l.display().to_string(),
            );
            Err(SnapshotError::UploadFailed { path, failed }.into())
        }
    }
}

fn retention(
    ctx: &ActionContext,
    p: &SnapshotParams,
    written: &str,
    r: &mut Results,
) -> Result<(), Error> {
    match prune(&p.target, p.keep, written) {
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
    Ok(())
}
