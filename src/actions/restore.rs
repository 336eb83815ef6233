//! The `restore` action: rebuild a single-member cluster from a snapshot,
//! with a new cluster ID, keeping the old data until the new data is proven.
//!
//! Nothing destructive happens before everything checkable is checked: the
//! lock, the source, the member count (one), the restore tool, the backup
//! target, the whole archive, and etcd's own restore into a staging dir
//! beside the data dir. Only then is etcd stopped and the data swapped; any
//! failure from there on puts the old data back and starts etcd again.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::actions::journal::{roll_back, Journal, JournalError, Step, BACKUP_LEVEL};
use crate::actions::{params, ActionContext};
use crate::archive::naming::archive_stamp;
use crate::archive::reader::{verify_and_stage, verify_stream_and_stage, Staged, VerifyError};
use crate::archive::Record;
use crate::archive::{ArchiveFile, OutputError};
use crate::error::Error;
use crate::etcd::client::{MemberInfo, MemberStatus};
use crate::etcd::config::{update_file, ClientEndpoint};
use crate::etcd::health;
use crate::etcd::snapshot::hex;
use crate::etcd::tool::{DbStatus, RestoreSpec, RestoreTool, ToolError};
use crate::etcd::{id_hex, EtcdConfig, LocalMember};
use crate::fsutil::{self, human_size, DirError, WorkDir};
use crate::juju::Results;
use crate::lock::ActionLock;
use crate::service;
use crate::store::download::{self, ObjectReader};
use crate::store::{Store, Stores, Timeouts};
use crate::timefmt::UtcTime;

pub const DEFAULT_TARGET: &str = "/home/ubuntu/etcd-backups";
pub const RESOURCE: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("etcd's data is still in the snap's own data dir {0} (layer-etcd's layout), which a restore must not swap; this unit moves it into a dir of its own at its next rolling restart: wait until its status shows no restart pending, then restore")]
    SnapDataDir(PathBuf),
    #[error("no snapshot was supplied: attach one with `juju attach-resource {app} {RESOURCE}=./etcd-snapshot-YYYY-MM-DD-HH.MM.SS.tar.gz` (or pass source=<path on the unit>) and run restore again")]
    NoSnapshot { app: String },
    #[error("the source {0} does not exist or is not a regular file")]
    NoSource(PathBuf),
    #[error("the source {0} is empty")]
    EmptySource(PathBuf),
    #[error("give either source or backup-id, not both")]
    TwoSources,
    #[error("backup-id {0:?} is not a backup ID: IDs are archive names such as etcd-snapshot-2026-11-23-20.41.47.tar.gz, as list-backups shows them, or <application>/<archive name> for another application's backup in the same store")]
    BadId(String),
    #[error("backup-id needs an object store: relate this application to the s3-integrator or azure-storage-integrator that holds the backup (s3-credentials, azure-credentials)")]
    NoStore,
    #[error("{key} in {store} has no record of what it holds beside it (its upload did not finish, or this charm did not store it), so nothing proves it unaltered; copy it to the unit, check it, and restore it with source=; etcd was not touched")]
    Unrecorded { key: String, store: String },
    #[error("the backup {0} is encrypted: give identity-file=<a file on the unit, mode 0600, holding its age identity>; etcd was not touched")]
    Encrypted(String),
    #[error("cannot use the identity file {path}: {reason}; etcd was not touched")]
    IdentityFile { path: PathBuf, reason: String },
    #[error("the given identity cannot decrypt {id} (it was encrypted to {recipients}); etcd was not touched")]
    WrongIdentity { id: String, recipients: String },
    #[error("there is no backup {id} in {stores}; list-backups shows the IDs there")]
    NoBackup { id: String, stores: String },
    #[error("{0}; etcd was not touched")]
    Store(crate::store::StoreError),
    #[error("{0}; etcd was not touched")]
    Verify(#[from] VerifyError),
    #[error("the cluster has {count} members ({list}); restore only rebuilds a single-member cluster: deploy a new single-unit etcd application with this snapshot as its resource, run restore there, then grow it with juju add-unit")]
    Scaled { count: usize, list: String },
    #[error("bump-revision needs an etcd restore tool with --bump-revision (etcd 3.5.10+ or 3.4.27+), and this unit has {version}; run restore without bump-revision or upgrade etcd")]
    NoBump { version: String },
    #[error("the etcd config {path} names no {what}; cannot tell which member to restore")]
    ConfigIncomplete { path: PathBuf, what: &'static str },
    #[error("etcd's tool cannot read the snapshot's db ({0}); etcd was not touched")]
    Status(ToolError),
    #[error("{0}; etcd was not touched")]
    Tool(ToolError),
    #[error("cannot prepare the restore in {path}: {reason}; etcd was not touched")]
    Prepare { path: PathBuf, reason: String },
    #[error("the backup target {path} cannot be used: {reason}; choose another target (or skip-backup=true); etcd was not touched")]
    Target { path: PathBuf, reason: String },
    #[error("the snapshot was taken on etcd {snapshot} and this unit runs etcd {unit}; etcd does not support moving data to an older minor version, so restore it on a unit with etcd {snapshot} or newer (snapshots from older versions restore fine); etcd was not touched")]
    Downgrade { snapshot: String, unit: String },
    #[error("not enough free space for {what} in {path}: it needs about {need} and {free} is free; free some space and run restore again; etcd was not touched")]
    Space {
        what: &'static str,
        path: PathBuf,
        need: String,
        free: String,
    },
    #[error("the restore failed while {step}: {reason}; {outcome}")]
    Failed {
        step: &'static str,
        reason: String,
        outcome: String,
    },
}

impl From<RestoreError> for crate::error::Error {
    fn from(e: RestoreError) -> Self {
        crate::error::Error::Action(Box::new(e))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreParams {
    pub target: PathBuf,
    pub skip_backup: bool,
    pub bump_revision: u64,
    pub source: Option<PathBuf>,
    pub backup_id: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub start_timeout: Duration,
    pub stall_timeout: Duration,
}

impl RestoreParams {
    pub fn from_map(p: &serde_json::Map<String, serde_json::Value>) -> Result<Self, Error> {
        Ok(RestoreParams {
            target: PathBuf::from(params::string(p, "target", DEFAULT_TARGET)?),
            skip_backup: params::boolean(p, "skip-backup", false)?,
            bump_revision: params::integer(p, "bump-revision", 0, 0..=(i64::MAX as u64 / 2))?,
            source: params::optional_string(p, "source")?.map(PathBuf::from),
            backup_id: params::optional_string(p, "backup-id")?.map(|s| s.trim().to_string()),
            identity_file: params::optional_string(p, "identity-file")?.map(PathBuf::from),
            start_timeout: Duration::from_secs(params::integer(p, "start-timeout", 120, 1..=3600)?),
            stall_timeout: Duration::from_secs(params::integer(
                p,
                "stall-timeout",
                60,
                1..=86_400,
            )?),
        })
    }
}

/// The snapshot to restore: a file on the unit, or an object in a store.
enum Source {
    File(PathBuf),
    Object(Box<Stored>),
}

/// A backup in a store, found by its ID.
struct Stored {
    store: Store,
    key: String,
    bytes: u64,
    record: Record,
    /// For an encrypted object: the operator's identities.
    identities: Vec<age::x25519::Identity>,
}

/// The identities in an identity file only this user (root) can read:
/// opened without following a link, checked on the open file, read at
/// most 64 KiB.
fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, RestoreError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let bad = |reason: String| RestoreError::IdentityFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    // SAFETY: geteuid(2) only reads the process's effective user ID.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(bad(format!(
            "it belongs to uid {}, not to the user the charm runs as ({me}); chown it",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "its mode is {:o}, so others can read the key; chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    let mut text = String::new();
    file.take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    crate::store::crypt::identities(&text).map_err(bad)
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Object(o) => format!("{} in {}", o.key, o.store.url()),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Source::File(p) => fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Source::Object(o) => o.bytes,
        }
    }

    /// Verifies the whole archive while staging its db; an object is
    /// streamed, never copied whole to the unit.
    fn stage(&self, staging: &Path) -> Result<Staged, Error> {
        match self {
            Source::File(path) => Ok(verify_and_stage(path, staging).map_err(RestoreError::from)?),
            Source::Object(o) => {
                let (reader, size) =
                    ObjectReader::open(&o.store, &o.key).map_err(RestoreError::Store)?;
                let expect = (o.record.sha256.as_str(), o.record.bytes);
                let Some(enc) = &o.record.encrypted else {
                    return Ok(verify_stream_and_stage(reader, size, staging, Some(expect))
                        .map_err(RestoreError::from)?);
                };
                if size != enc.bytes {
                    return Err(RestoreError::from(VerifyError::Damaged(format!(
                        "the store lists {size} bytes and its record {}",
                        enc.bytes
                    )))
                    .into());
                }
                // age authenticates every chunk and the end: a changed or
                // cut object fails to decrypt; the plain archive is then
                // checked against the record as any other.
                let wrong = || RestoreError::WrongIdentity {
                    id: o.record.archive.clone(),
                    recipients: enc.recipients.join(", "),
                };
                let dec = age::Decryptor::new_buffered(std::io::BufReader::new(reader))
                    .map_err(|e| RestoreError::from(VerifyError::Damaged(e.to_string())))?;
                let plain = dec
                    .decrypt(o.identities.iter().map(|i| i as &dyn age::Identity))
                    .map_err(|e| match e {
                        age::DecryptError::NoMatchingKeys => wrong(),
                        other => RestoreError::from(VerifyError::Damaged(other.to_string())),
                    })?;
                Ok(
                    verify_stream_and_stage(plain, o.record.bytes, staging, Some(expect))
                        .map_err(RestoreError::from)?,
                )
            }
        }
    }
}

/// The backup `id` in the first related store that holds it, with its
/// record when it has one.
/// `<archive>` (this application's) or `<application>/<archive>` (another
/// application's backup in the same store: a new application restoring
/// the one it replaces).
fn parse_id<'a>(own_app: &'a str, id: &'a str) -> Option<(&'a str, &'a str)> {
    let (app, name) = id.split_once('/').unwrap_or((own_app, id));
    (crate::store::is_app_name(app) && !name.contains('/') && archive_stamp(name).is_some())
        .then_some((app, name))
}

fn find_backup(ctx: &ActionContext, p: &RestoreParams, id: &str) -> Result<Source, Error> {
    let own = ctx.env.unit_name.split('/').next().unwrap_or("etcd");
    let Some((app, id)) = parse_id(own, id) else {
        return Err(RestoreError::BadId(id.to_string()).into());
    };
    let stores = Stores::load(&ctx.paths.state_dir()).map_err(RestoreError::Store)?;
    // list-backups lists the snapshot action's default target too.
    let local = Path::new(crate::actions::snapshot::DEFAULT_TARGET).join(id);
    if stores.is_empty() {
        if app == own && local.is_file() {
            return Ok(Source::File(local));
        }
        return Err(RestoreError::NoStore.into());
    }
    let rt = crate::actions::runtime()?;
    let stall = p.stall_timeout;
    for settings in stores.stores.values() {
        let store = Store::open(settings, Timeouts { stall }).map_err(RestoreError::Store)?;
        let key = settings.key(app, id);
        let Some(bytes) = rt
            .block_on(download::size(&store, &key))
            .map_err(RestoreError::Store)?
        else {
            continue;
        };
        // The record is what proves the object is the archive written:
        // without it (an upload cut short after completing, or an object
        // not put there by this charm) nothing says it was not altered.
        let Some(record) = rt
            .block_on(download::record(&store, &key))
            .map_err(RestoreError::Store)?
            .filter(|r| r.archive == id)
        else {
            return Err(RestoreError::Unrecorded {
                key,
                store: store.url(),
            }
            .into());
        };
        let identities = match (&record.encrypted, &p.identity_file) {
            (None, _) => Vec::new(),
            (Some(_), None) => return Err(RestoreError::Encrypted(id.to_string()).into()),
            (Some(_), Some(path)) => read_identities(path)?,
        };
        return Ok(Source::Object(Box::new(Stored {
            store,
            key,
            bytes,
            record,
            identities,
        })));
    }
    if app == own && local.is_file() {
        return Ok(Source::File(local));
    }
    Err(RestoreError::NoBackup {
        id: id.to_string(),
        stores: stores
            .stores
            .values()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(", "),
    }
    .into())
}

/// The snapshot to restore: `backup-id`, `source`, else the `snapshot`
/// resource.
fn find_source(ctx: &ActionContext, p: &RestoreParams) -> Result<Source, Error> {
    match (&p.backup_id, &p.source) {
        (Some(_), Some(_)) => return Err(RestoreError::TwoSources.into()),
        (Some(id), None) => return find_backup(ctx, p, id),
        _ => {}
    }
    find_file(ctx, p).map(Source::File)
}

fn find_file(ctx: &ActionContext, p: &RestoreParams) -> Result<PathBuf, Error> {
    let app = ctx
        .env
        .unit_name
        .split('/')
        .next()
        .unwrap_or("etcd")
        .to_string();
    let path = match &p.source {
        Some(path) => {
            let meta = fs::metadata(path).map_err(|_| RestoreError::NoSource(path.clone()))?;
            if !meta.is_file() {
                return Err(RestoreError::NoSource(path.clone()).into());
            }
            if meta.len() == 0 {
                return Err(RestoreError::EmptySource(path.clone()).into());
            }
            path.clone()
        }
        None => {
            let path = ctx
                .tools
                .resource_get(RESOURCE)?
                .ok_or_else(|| RestoreError::NoSnapshot { app: app.clone() })?;
            // Juju accepts a zero-byte resource: that means "none supplied".
            match fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() > 0 => path,
                _ => return Err(RestoreError::NoSnapshot { app }.into()),
            }
        }
    };
    Ok(path)
}

/// What the unit looked like before: the running member's view, if any.
struct Before {
    status: Option<MemberStatus>,
}

fn member_list(members: &[MemberInfo]) -> String {
    let mut members: Vec<&MemberInfo> = members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_urls.cmp(&b.peer_urls)));
    members
        .iter()
        .map(|m| {
            let name = if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            };
            format!("{name} {}", m.peer_urls.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step 4: exactly one member, or refuse. A running etcd answers for
/// itself; a stopped one is judged by its config and the peer relation.
async fn count_members(
    ctx: &ActionContext<'_>,
    conf: &EtcdConfig,
    endpoint: &ClientEndpoint,
) -> Result<Before, Error> {
    match LocalMember::probe(endpoint).await {
        Ok((status, members)) => {
            if members.len() != 1 {
                return Err(RestoreError::Scaled {
                    count: members.len(),
                    list: member_list(&members),
                }
                .into());
            }
            ctx.progress(&format!(
                "etcd is running with one member (cluster {}, revision {})",
                id_hex(status.cluster_id),
                status.revision
            ));
            Ok(Before {
                status: Some(status),
            })
        }
        Err(e) => {
            let mut names = conf.initial_members();
            for id in ctx.tools.relation_ids("cluster").unwrap_or_default() {
                names.extend(ctx.tools.relation_list(&id).unwrap_or_default());
            }
            if names.len() > 1 {
                return Err(RestoreError::Scaled {
                    count: names.len(),
                    list: names.join(", "),
                }
                .into());
            }
            ctx.progress(&format!(
                "etcd is not answering ({e}); its config and the peer relation show a single member"
            ));
            Ok(Before { status: None })
        }
    }
}

/// Room the restore tool needs beside the db: etcd preallocates a 64 MiB
/// WAL segment, plus slack for the snapshot and member files.
const WAL_RESERVE: u64 = 72 << 20;
/// No etcd db compresses better than this at the backup's level in
/// practice; a target with less room than db/ratio clearly cannot hold it.
const MAX_BACKUP_RATIO: u64 = 8;

fn check_space(what: &'static str, dir: &Path, need: u64) -> Result<(), RestoreError> {
    match fsutil::free_bytes(dir) {
        Ok(free) if free < need => Err(RestoreError::Space {
            what,
            path: dir.to_path_buf(),
            need: human_size(need),
            free: human_size(free),
        }),
        _ => Ok(()),
    }
}

fn check_space_for_backup(dir: &Path, file: &Path, need: u64) -> Result<(), RestoreError> {
    match fsutil::free_bytes(dir) {
        Ok(free) if free < need => Err(RestoreError::Target {
            path: dir.to_path_buf(),
            reason: format!(
                "{} needs at least {} and only {} is free there",
                file.display(),
                human_size(need),
                human_size(free)
            ),
        }),
        _ => Ok(()),
    }
}

/// Why the swap failed, and whether etcd may have served the restored data.
struct SwapFailed {
    step: &'static str,
    reason: String,
    served: bool,
}

/// Step 6: keep etcd from starting at boot, stop it, swap the restored
/// data in, update the config, start, wait until healthy; each step
/// journaled. The data dir is never missing: where the filesystem can, the
/// old and restored trees trade places in one step.
fn swap_in(
    rt: &tokio::runtime::Runtime,
    j: &mut Journal,
    updates: &[(&str, String)],
    endpoint: &ClientEndpoint,
    limit: Duration,
) -> Result<health::Serving, SwapFailed> {
    let fail = |step: &'static str, reason: String| SwapFailed {
        step,
        reason,
        served: false,
    };
    let journal = |e: JournalError| fail("recording the restore's progress", e.to_string());
    // A reboot from here on must not start etcd on half-swapped data; the
    // journal's end enables it again.
    service::disable().map_err(|e| fail("keeping etcd from starting at boot", e.to_string()))?;
    service::stop().map_err(|e| fail("stopping etcd", e.to_string()))?;
    if service::is_active() {
        return Err(fail("stopping etcd", "etcd is still running".into()));
    }
    j.record(Step::Stopped).map_err(journal)?;
    let restored = j.restored_path();
    let swapped = if j.data_dir.exists() {
        match fsutil::exchange(&restored, &j.data_dir) {
            Ok(()) => fs::rename(&restored, &j.aside),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                fs::rename(&j.data_dir, &j.aside).and_then(|()| fs::rename(&restored, &j.data_dir))
            }
            Err(e) => Err(e),
        }
    } else {
        fs::rename(&restored, &j.data_dir)
    };
    swapped.map_err(|e| fail("swapping the restored data in", e.to_string()))?;
    for dir in [j.data_dir.parent(), Some(j.staging.as_path())]
        .into_iter()
        .flatten()
    {
        fsutil::sync_dir(dir).map_err(|e| fail("syncing the data dir's parent", e.to_string()))?;
    }
    update_file(&j.conf, updates).map_err(|e| fail("updating the etcd config", e.to_string()))?;
    j.record(Step::Swapped).map_err(journal)?;
    service::start().map_err(|e| fail("starting etcd on the restored data", e.to_string()))?;
    let ok = rt
        .block_on(health::wait_serving(endpoint, &j.name, limit))
        .map_err(|e| SwapFailed {
            step: "waiting for etcd on the restored data",
            reason: e.reason,
            served: e.answered,
        })?;
    j.restored_cluster = Some(ok.0.cluster_id);
    j.record(Step::Started).map_err(journal)?;
    Ok(ok)
}

/// `(major, minor)` of the first `N.N` in a version text such as
/// "3.5.16" or "etcdutl version: 3.5.16".
fn minor_version(text: &str) -> Option<(u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn new_token(stamp: &UtcTime) -> String {
    let mut bytes = [0u8; 6];
    let random = fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !random {
        // Still unique enough: time and pid.
        let seed = stamp.unix ^ u64::from(std::process::id()) << 20;
        bytes.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    format!(
        "etcd-restored-{}-{}",
        stamp.stamp().replace('.', ""),
        hex(&bytes)
    )
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let started = Instant::now();
    let p = RestoreParams::from_map(&ctx.tools.action_params()?)?;
    let _lock = ActionLock::acquire(&ctx.paths.state_dir(), "restore")?;
    crate::actions::resolve_interrupted(ctx)?;
    let conf_path = ctx.paths.conf();
    let conf = EtcdConfig::load(conf_path)?;
    let endpoint = conf.client_endpoint(conf_path)?;
    let incomplete = |what| RestoreError::ConfigIncomplete {
        path: conf_path.to_path_buf(),
        what,
    };
    let name = conf.name.clone().ok_or_else(|| incomplete("member name"))?;
    let data_dir = conf.data_dir().ok_or_else(|| incomplete("data-dir"))?;
    let linked = fs::symlink_metadata(&data_dir).is_ok_and(|m| m.file_type().is_symlink());
    if linked || data_dir == ctx.paths.snap_data() {
        return Err(RestoreError::SnapDataDir(data_dir).into());
    }
    let peer_urls = conf.peer_urls();
    if peer_urls.is_empty() {
        return Err(incomplete("initial-advertise-peer-urls").into());
    }
    let rt = crate::actions::runtime()?;

    // Checks first: source, member count, tool, backup target, archive.
    let source = find_source(ctx, &p)?;
    let before = rt.block_on(count_members(ctx, &conf, &endpoint))?;
    let tool = RestoreTool::find(&ctx.paths.tool_dirs()).map_err(RestoreError::Tool)?;
    if p.bump_revision > 0 && !tool.supports_bump_revision() {
        return Err(RestoreError::NoBump {
            version: tool.version(),
        }
        .into());
    }
    let stamp = UtcTime::now();
    let mut backup = if p.skip_backup {
        None
    } else {
        let target_err = |reason: String| RestoreError::Target {
            path: p.target.clone(),
            reason,
        };
        fsutil::ensure_private_dir(&p.target).map_err(|e| match e {
            DirError::NotDir => target_err("it is not a directory".into()),
            DirError::Io(e) => target_err(e.to_string()),
        })?;
        let name = format!("etcd-data-{}.tar.gz", stamp.stamp());
        Some(
            ArchiveFile::create(&p.target, &name, BACKUP_LEVEL).map_err(|e| match e {
                OutputError::Create { source, .. } => target_err(source.to_string()),
                other => target_err(other.to_string()),
            })?,
        )
    };

    let base = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "etcd-data".into());
    let staging_path = data_dir.with_file_name(format!("{base}.restore-{}", stamp.stamp()));
    let parent = data_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let prepare = |reason: String| RestoreError::Prepare {
        path: parent.clone(),
        reason,
    };
    fsutil::create_private_dir(&parent).map_err(|e| prepare(e.to_string()))?;
    let mut staging = WorkDir::create(staging_path).map_err(|e| prepare(e.to_string()))?;

    // The staged db is at least as big as the archive holding it.
    let archive_bytes = source.bytes();
    check_space("the snapshot's db", staging.path(), archive_bytes)?;
    ctx.progress(&format!("verifying {}", source.describe()));
    let staged: Staged = source.stage(staging.path())?;
    // etcd moves data forward across minor versions, never back.
    if let Some(m) = &staged.manifest {
        let unit_version = before
            .status
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_else(|| tool.version());
        if let (Some(snap), Some(unit)) =
            (minor_version(&m.etcd_version), minor_version(&unit_version))
        {
            if snap > unit {
                return Err(RestoreError::Downgrade {
                    snapshot: m.etcd_version.clone(),
                    unit: unit_version
                        .trim_start_matches(|c: char| !c.is_ascii_digit())
                        .to_string(),
                }
                .into());
            }
        }
    }
    // The revision to expect after the restore: from the verified manifest,
    // else from etcd's own reading of the db (a full pass over it, so only
    // when there is no manifest).
    let snapshot_revision = match &staged.manifest {
        Some(m) => m.revision,
        None => {
            let db: DbStatus = tool.status(&staged.db).map_err(RestoreError::Status)?;
            db.revision
        }
    };
    ctx.progress(&format!(
        "verified the snapshot: {}, {} db, revision {}{}",
        staged.kind,
        human_size(staged.db_size),
        snapshot_revision,
        if staged.has_trailer {
            ", SHA-256 trailer checked"
        } else {
            ", no SHA-256 trailer to check"
        }
    ));

    let token = new_token(&stamp);
    let restored = staging.path().join("data");
    check_space(
        "etcd's restore tool",
        staging.path(),
        staged.db_size.saturating_add(WAL_RESERVE),
    )?;
    tool.restore(&RestoreSpec {
        db: &staged.db,
        name: &name,
        peer_urls: &peer_urls,
        token: &token,
        data_dir: &restored,
        skip_hash_check: !staged.has_trailer,
        bump_revision: p.bump_revision,
    })
    .map_err(RestoreError::Tool)?;
    // The staged db copy is not needed any more: free its space now.
    let _ = fs::remove_file(&staged.db);
    if let Some(out) = &backup {
        let db = data_dir.join("member/snap/db");
        let db_bytes = fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        check_space_for_backup(&p.target, out.final_path(), db_bytes / MAX_BACKUP_RATIO)?;
    }
    ctx.progress("etcd's restore tool rebuilt the data in staging; stopping etcd to swap it in");

    let initial_cluster = peer_urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let updates = [
        ("initial-cluster-token", token.clone()),
        ("initial-cluster", initial_cluster),
    ];
    let mut journal = Journal {
        step: Step::Verified,
        data_dir: data_dir.clone(),
        staging: staging.path().to_path_buf(),
        aside: data_dir.with_file_name(format!("{base}.pre-restore-{}", stamp.stamp())),
        had_old_data: data_dir.exists(),
        conf: conf_path.to_path_buf(),
        saved_config: staging.path().join("old-config.yml"),
        backup: backup.as_ref().map(|b| b.final_path().to_path_buf()),
        started_at: stamp.rfc3339(),
        rolling_back: false,
        name: name.clone(),
        restored_ino: None,
        old_ino: None,
        restored_cluster: None,
        was_enabled: true,
    };
    // `served`: etcd may have served the restored data to clients (it
    // answered as itself), so a rollback keeps that data.
    let undo = |mut journal: Journal, step: &'static str, reason: String, served: bool| -> Error {
        // Undo only once recovery would go on undoing if this process
        // died: without that record a later hook could roll forward onto
        // the old data. Then nothing moves, and the journal decides.
        let (outcome, resolved) = match journal.record_rollback() {
            Err(e) => (
                format!(
                    "it could not record that it is undoing the restore ({e}), so nothing was moved: the next hook finishes or undoes it from the journal"
                ),
                false,
            ),
            Ok(()) => match roll_back(
                &rt,
                &journal,
                &endpoint,
                p.start_timeout,
                served || journal.step >= Step::Started,
            ) {
                Ok(done) => match journal.close() {
                    Ok(()) => (done, true),
                    Err(e) => (
                        format!("{done} (cleaning up the restore's staging failed: {e})"),
                        true,
                    ),
                },
                Err(e) => (
                    format!("undoing it failed too ({e}); the unit retries on its next hook"),
                    false,
                ),
            },
        };
        let failed = RestoreError::Failed {
            step,
            reason,
            outcome,
        };
        let msg = failed.to_string();
        crate::hooks::refresh_status(ctx.tools, &ctx.paths, (!resolved).then_some(msg.as_str()));
        Error::from(failed)
    };
    let journal_err = |e: JournalError| RestoreError::Prepare {
        path: parent.clone(),
        reason: e.to_string(),
    };
    journal = journal.begin().map_err(journal_err)?;
    // From here on the journal knows what to undo, even if this process dies.
    staging.keep();

    let _ = ctx.tools.status_set(
        crate::juju::Status::Maintenance,
        "Restoring a snapshot: etcd is stopped while its data is swapped",
    );
    let (status, members, alarms) =
        match swap_in(&rt, &mut journal, &updates, &endpoint, p.start_timeout) {
            Ok(ok) => ok,
            Err(SwapFailed {
                step,
                reason,
                served,
            }) => return Err(undo(journal, step, reason, served)),
        };

    // Step 7: prove it, then back up the old data, then delete it.
    let wanted = snapshot_revision.saturating_add(p.bump_revision as i64);
    let problem = if members.len() != 1 {
        Some(format!("it has {} members", members.len()))
    } else if before
        .status
        .as_ref()
        .is_some_and(|b| b.cluster_id == status.cluster_id)
    {
        Some("its cluster ID did not change".to_string())
    } else if status.revision < wanted {
        Some(format!(
            "its revision {} is below the snapshot's {wanted}",
            status.revision
        ))
    } else {
        None
    };
    if let Some(reason) = problem {
        return Err(undo(journal, "checking the restored etcd", reason, true));
    }
    if let Err(e) = journal.record(Step::Checked) {
        return Err(undo(
            journal,
            "recording the restore's progress",
            e.to_string(),
            true,
        ));
    }
    ctx.progress(&format!(
        "etcd serves the restored data as cluster {} at revision {}",
        id_hex(status.cluster_id),
        status.revision
    ));
    if !alarms.is_empty() {
        // The snapshot's own db carries them: the data is what was asked
        // for; the status tells the operator what to do about them.
        ctx.progress(&format!(
            "etcd raises alarms on the restored data: {}",
            alarms.join("; ")
        ));
    }

    let mut r = Results::new();
    if let (Some(mut out), true) = (backup.take(), journal.aside.exists()) {
        let path = out.final_path().to_path_buf();
        let written = out
            .writer()
            .append_tree(&journal.aside, "")
            .map_err(|e| e.to_string())
            .and_then(|_| out.publish().map_err(|e| e.to_string()));
        match written {
            Ok(published) => {
                ctx.progress(&format!(
                    "backed up the old data to {} ({})",
                    published.path.display(),
                    human_size(published.bytes)
                ));
                r.set("backup.path", published.path.display().to_string())?;
                r.set("backup.sha256", hex(&published.sha256))?;
                r.set("backup.bytes", published.bytes.to_string())?;
            }
            Err(reason) => {
                let reason = format!("{reason} (writing {})", path.display());
                return Err(undo(journal, "backing up the old data", reason, true));
            }
        }
        if let Err(e) = journal.record(Step::BackedUp) {
            ctx.progress(&format!("could not record the backup in the journal: {e}"));
        }
    }
    if let Err(e) = fs::remove_dir_all(&journal.aside) {
        if e.kind() != std::io::ErrorKind::NotFound {
            ctx.progress(&format!(
                "could not remove {}: {e}",
                journal.aside.display()
            ));
        }
    }
    let _ = journal.record(Step::Done);
    if let Err(e) = journal.close() {
        ctx.progress(&format!("could not clean up the restore's staging: {e}"));
    }
    crate::actions::journal::clear_note(&ctx.paths);
    crate::hooks::refresh_status(ctx.tools, &ctx.paths, None);

    ctx.progress(&format!(
        "restore done in {:.1} s, peak memory {}",
        started.elapsed().as_secs_f64(),
        fsutil::peak_rss().map_or_else(|| "unknown".to_string(), human_size)
    ));
    r.set("restore.source", source.describe())?;
    r.set("restore.kind", staged.kind)?;
    r.set("restore.revision", status.revision.to_string())?;
    r.set("restore.snapshot-revision", snapshot_revision.to_string())?;
    r.set("restore.cluster-id", id_hex(status.cluster_id))?;
    r.set(
        "restore.previous-cluster-id",
        before
            .status
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |s| id_hex(s.cluster_id)),
    )?;
    r.set("restore.member", name)?;
    if !alarms.is_empty() {
        r.set("restore.alarms", alarms.join("; "))?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn minor_versions_read_from_version_texts() {
        assert_eq!(super::minor_version("3.5.16"), Some((3, 5)));
        assert_eq!(
            super::minor_version("etcdctl version: 3.4.23"),
            Some((3, 4))
        );
        assert_eq!(super::minor_version("etcdutl"), None);
    }
}
