//! The restore journal: a small fsynced file beside the data dir saying how
//! far a restore got once it began to change the unit. A restore that dies
//! (SIGKILL, power loss) leaves it behind; the next hook or action reads it
//! and brings the unit to one consistent state: the restore completed when
//! its data was already proven, else the old data back. Either way etcd runs
//! and the journal is removed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveFile;
use crate::etcd::config::ClientEndpoint;
use crate::etcd::health::{self, Health};
use crate::etcd::{id_hex, EtcdConfig};
use crate::fsutil;
use crate::paths::Paths;
use crate::service;

/// The test seam for crash tests: the action kills itself with SIGKILL
/// right after recording this step.
pub const ABORT_ENV: &str = "ETCD_CHARM_TEST_ABORT_AT";
/// The test seam for a journal that cannot be written: `rolling-back`
/// makes recording the rollback fail as a full or broken disk would.
pub const FAIL_ENV: &str = "ETCD_CHARM_TEST_FAIL_AT";
/// How long recovery waits for etcd to serve after starting it.
const RECOVERY_START_LIMIT: Duration = Duration::from_secs(90);
/// The level the backup archive is written at (it runs while etcd serves).
pub const BACKUP_LEVEL: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The snapshot is verified and restored into staging; etcd untouched.
    Verified,
    /// etcd is stopped.
    Stopped,
    /// The old data is aside, the restored data in place, the config updated.
    Swapped,
    /// etcd serves the restored data.
    Started,
    /// The restored cluster passed its checks.
    Checked,
    /// The old data is backed up.
    BackedUp,
    /// The old data is deleted; only clean-up is left.
    Done,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Verified => "verified",
            Step::Stopped => "stopped",
            Step::Swapped => "swapped",
            Step::Started => "started",
            Step::Checked => "checked",
            Step::BackedUp => "backed-up",
            Step::Done => "done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub step: Step,
    pub data_dir: PathBuf,
    pub staging: PathBuf,
    /// Where the old data dir goes while the restored one is tried.
    pub aside: PathBuf,
    /// The unit had a data dir before (else there is nothing to put back).
    pub had_old_data: bool,
    pub conf: PathBuf,
    /// A copy of the config as it was before the restore.
    pub saved_config: PathBuf,
    /// The backup archive to make of the old data, unless skip-backup.
    pub backup: Option<PathBuf>,
    pub started_at: String,
    /// The restore failed and is being undone: recovery goes on undoing,
    /// whatever the step.
    #[serde(default)]
    pub rolling_back: bool,
    /// The member's name, to know it among the members that answer.
    #[serde(default)]
    pub name: String,
    /// Inodes of the restored tree and of the old data dir, recorded when
    /// the journal begins: recovery finds each by it, whatever name it
    /// ended under. Inodes only: a device number can change across a
    /// reboot, and every place a tree can be is on the data dir's
    /// filesystem.
    #[serde(default)]
    pub restored_ino: Option<u64>,
    #[serde(default)]
    pub old_ino: Option<u64>,
    /// The cluster ID etcd served from the restored data: rolling forward
    /// checks that this is what it serves.
    #[serde(default)]
    pub restored_cluster: Option<u64>,
    /// etcd started at boot before the restore; it is kept from starting
    /// at boot while the journal exists, and enabled again at the end.
    #[serde(default)]
    pub was_enabled: bool,
}

/// Where a tree is, for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    DataDir,
    /// Where etcd's restore tool built it, in staging.
    Staged,
    Aside,
    /// Where a rollback keeps restored data etcd may have served.
    Kept,
    Nowhere,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot write the restore journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the restore journal {path} cannot be read ({detail}); move it away once the data dir is checked by hand, then let etcd start at boot again with `systemctl enable snap.etcd.etcd`")]
    Read { path: PathBuf, detail: String },
    #[error("an interrupted restore could not be finished or undone: {0}; the unit will try again on its next hook")]
    Recover(String),
}

impl From<JournalError> for crate::error::Error {
    fn from(e: JournalError) -> Self {
        crate::error::Error::Action(Box::new(e))
    }
}

/// The journal's path for a data dir: `<data-dir>.restore-journal`.
pub fn path_for(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "etcd-data".into());
    name.push(".restore-journal");
    data_dir.with_file_name(name)
}

impl Journal {
    pub fn path(&self) -> PathBuf {
        path_for(&self.data_dir)
    }

    /// Where etcd's restore tool built the restored tree, in staging.
    pub fn restored_path(&self) -> PathBuf {
        self.staging.join("data")
    }

    /// Where a rollback keeps restored data that etcd may have served:
    /// `<data-dir>.failed-restore-<stamp>`.
    pub fn kept_path(&self) -> PathBuf {
        let name = self
            .aside
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(".pre-restore-", ".failed-restore-")
            })
            .unwrap_or_else(|| "etcd.failed-restore".into());
        self.data_dir.with_file_name(name)
    }

    fn path_of(&self, place: Place) -> Option<PathBuf> {
        match place {
            Place::DataDir => Some(self.data_dir.clone()),
            Place::Staged => Some(self.restored_path()),
            Place::Aside => Some(self.aside.clone()),
            Place::Kept => Some(self.kept_path()),
            Place::Nowhere => None,
        }
    }

    /// Where the restored tree and the old data are now, each found by its
    /// inode. Never a guess: a tree whose inode is in none of the places
    /// is `Nowhere`.
    fn locate(&self) -> (Place, Place) {
        let Some(restored_ino) = self.restored_ino else {
            return self.locate_by_names();
        };
        let find = |ino: u64| {
            [Place::DataDir, Place::Staged, Place::Aside, Place::Kept]
                .into_iter()
                .find(|w| {
                    self.path_of(*w)
                        .and_then(|p| fsutil::dir_ino(&p))
                        .is_some_and(|i| i == ino)
                })
                .unwrap_or(Place::Nowhere)
        };
        (
            find(restored_ino),
            self.old_ino.map_or(Place::Nowhere, find),
        )
    }

    /// A journal written before identities were recorded: the previous
    /// release moved the old data aside, then the restored data in, and
    /// removed the old data after its backup.
    fn locate_by_names(&self) -> (Place, Place) {
        if self.aside.exists() {
            (Place::DataDir, Place::Aside)
        } else if (!self.had_old_data && self.step >= Step::Swapped)
            || (self.step >= Step::Checked && !self.rolling_back)
        {
            // Moved in, and nothing old left (none, or backed up and gone).
            (Place::DataDir, Place::Nowhere)
        } else {
            let staged = if self.restored_path().exists() {
                Place::Staged
            } else {
                Place::Nowhere
            };
            let old = if self.had_old_data {
                Place::DataDir
            } else {
                Place::Nowhere
            };
            (staged, old)
        }
    }

    /// Saves the config beside the staged data, then records `Verified`.
    pub fn begin(mut self) -> Result<Journal, JournalError> {
        let write = |path: &Path, source| JournalError::Write {
            path: path.to_path_buf(),
            source,
        };
        let config = fs::read(&self.conf).map_err(|e| write(&self.conf, e))?;
        let mut f = fsutil::create_private_file(&self.saved_config)
            .map_err(|e| write(&self.saved_config, e))?;
        f.write_all(&config)
            .and_then(|_| f.sync_all())
            .map_err(|e| write(&self.saved_config, e))?;
        self.restored_ino = fsutil::dir_ino(&self.restored_path());
        self.old_ino = fsutil::dir_ino(&self.data_dir);
        self.was_enabled = service::is_enabled();
        self.step = Step::Verified;
        self.record(Step::Verified)?;
        Ok(self)
    }

    /// Records `step` durably; the test seam may stop the process here.
    pub fn record(&mut self, step: Step) -> Result<(), JournalError> {
        self.step = step;
        self.save()?;
        abort_point(step);
        Ok(())
    }

    /// Records that the restore is being undone, before undoing starts.
    pub fn record_rollback(&mut self) -> Result<(), JournalError> {
        if std::env::var(FAIL_ENV).is_ok_and(|v| v == "rolling-back") {
            return Err(JournalError::Write {
                path: self.path(),
                source: io::Error::other("write refused by the test seam"),
            });
        }
        self.rolling_back = true;
        if let Err(e) = self.save() {
            // Not durable, so not true: recovery must not think so either.
            self.rolling_back = false;
            return Err(e);
        }
        if std::env::var(ABORT_ENV).is_ok_and(|v| v == "rolling-back") {
            kill_self();
        }
        Ok(())
    }

    fn save(&self) -> Result<(), JournalError> {
        let path = self.path();
        let text = serde_json::to_vec_pretty(self).map_err(|e| JournalError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        fsutil::replace_file(&path, &text).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Removes staging and any unfinished backup, lets etcd start at boot
    /// again (its data is final now), then removes the journal: the restore
    /// is over.
    pub fn close(self) -> io::Result<()> {
        remove_tree(&self.staging)?;
        if self.was_enabled {
            service::enable().map_err(io::Error::other)?;
        }
        if let Some(backup) = &self.backup {
            let mut part = backup.as_os_str().to_os_string();
            part.push(".part");
            match fs::remove_file(PathBuf::from(part)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fsutil::sync_dir(path.parent().unwrap_or(Path::new("/")))
    }

    pub fn load(data_dir: &Path) -> Result<Option<Journal>, JournalError> {
        let path = path_for(data_dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(JournalError::Read {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| JournalError::Read {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        // A journal names the paths recovery moves and deletes: only accept
        // one that speaks of this data dir and its own siblings.
        let sibling = |p: &Path| p.parent() == data_dir.parent();
        if journal.data_dir != data_dir
            || !sibling(&journal.staging)
            || !sibling(&journal.aside)
            || journal.saved_config.parent() != Some(journal.staging.as_path())
        {
            return Err(JournalError::Read {
                path,
                detail: "it names paths that are not beside the data dir".into(),
            });
        }
        Ok(Some(journal))
    }
}

fn abort_point(step: Step) {
    abort_at(step.name());
}

/// The crash seam outside the journal's steps (for example `data-moved`,
/// between moving etcd's data and naming it in the config).
pub fn abort_at(name: &str) {
    if std::env::var(ABORT_ENV).is_ok_and(|v| v == name) {
        kill_self();
    }
}

fn kill_self() {
    // SAFETY: kill(2) on our own pid; nothing is borrowed or freed.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn stop_etcd() -> Result<(), String> {
    service::stop().map_err(|e| format!("etcd could not be stopped: {e}"))?;
    if service::is_active() {
        return Err("etcd could not be stopped".into());
    }
    Ok(())
}

/// Puts the unit back as it was before the restore: the old data dir and
/// config in place and etcd serving them. Safe to run at any step and to
/// run again. The restored tree is deleted only if etcd never served it;
/// when it `may_have_served`, it is kept beside the data dir, named, so no
/// write a client saw acknowledged is lost. A unit that had no data before
/// keeps the restored data in place: it is the only data there is. The
/// result says what is on disk and served.
pub fn roll_back(
    rt: &tokio::runtime::Runtime,
    j: &Journal,
    endpoint: &ClientEndpoint,
    limit: Duration,
    may_have_served: bool,
) -> Result<String, String> {
    let parent = j.data_dir.parent().unwrap_or(Path::new("/"));
    let (restored, old) = j.locate();
    if j.had_old_data && old == Place::Nowhere {
        return Err(format!(
            "the old data is in none of {}, {} and {}; nothing was moved, look at them by hand",
            j.data_dir.display(),
            j.aside.display(),
            j.restored_path().display()
        ));
    }
    // A tree a rollback already moved to the kept place stays there.
    let mut kept = (restored == Place::Kept).then(|| j.kept_path());
    if let (true, Some(old_path)) = (old != Place::DataDir, j.path_of(old)) {
        stop_etcd()?;
        let moved = |e: io::Error| {
            format!(
                "cannot move the old data back from {}: {e}",
                old_path.display()
            )
        };
        if restored == Place::DataDir && !may_have_served && old == Place::Staged {
            // Killed inside the swap: swap back, in one step again.
            fsutil::exchange(&j.data_dir, &old_path).map_err(moved)?;
        } else {
            if restored == Place::DataDir {
                let dest = if may_have_served {
                    kept = Some(j.kept_path());
                    j.kept_path()
                } else {
                    // Never served: back to staging, which is removed.
                    j.restored_path()
                };
                fs::rename(&j.data_dir, &dest)
                    .map_err(|e| format!("cannot move the restored data aside: {e}"))?;
            }
            fs::rename(&old_path, &j.data_dir).map_err(moved)?;
        }
        fsutil::sync_dir(parent).map_err(|e| format!("cannot sync {}: {e}", parent.display()))?;
    }
    // A running etcd must not keep the restored config: stop it first.
    undo_config(j, stop_etcd)?;
    // From here the data and config are final: what follows is reported,
    // never a reason to keep the journal (and etcd disabled at boot).
    let what = if j.had_old_data {
        "the old data is back".to_string()
    } else {
        format!(
            "this unit had no data before the restore, so the restored data stays in {}",
            j.data_dir.display()
        )
    };
    let mut done = if !j.data_dir.join("member").is_dir() {
        // Starting etcd now would make a new, empty cluster.
        format!(
            "this unit had no data before the restore and none is in {}; etcd stays stopped",
            j.data_dir.display()
        )
    } else {
        let started = if service::is_active() {
            Ok(())
        } else {
            service::start()
        };
        match started {
            Err(e) => format!("{what}, but etcd did not start on it: {e}"),
            Ok(()) => serving(rt, endpoint, &j.name, limit, &what),
        }
    };
    if let Some(keep) = kept {
        done.push_str(&format!(
            "; the restored data is kept in {}",
            keep.display()
        ));
    }
    Ok(done)
}

/// "<what> and etcd serves it as cluster X", or what is wrong with it.
fn serving(
    rt: &tokio::runtime::Runtime,
    endpoint: &ClientEndpoint,
    name: &str,
    limit: Duration,
    what: &str,
) -> String {
    let (h, _) = rt.block_on(health::wait(endpoint, name, limit));
    match (h.status(), h.problem()) {
        (Some(s), None) => format!(
            "{what} and etcd serves it as cluster {}",
            id_hex(s.cluster_id)
        ),
        (_, problem) => format!(
            "{what}, but {}",
            problem.unwrap_or_else(|| "its member is still a learner".into())
        ),
    }
}

/// Puts the saved config back if it differs, running `before` first.
fn undo_config(j: &Journal, before: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    if let Ok(saved) = fs::read(&j.saved_config) {
        if fs::read(&j.conf).ok().as_deref() != Some(saved.as_slice()) {
            before()?;
            fsutil::replace_file(&j.conf, &saved)
                .map_err(|e| format!("cannot put the old etcd config back: {e}"))?;
        }
    }
    Ok(())
}

/// Finishes a restore whose data was already proven: etcd running on it
/// (the cluster the restore made, nothing else), the old data backed up
/// (unless skipped) and deleted.
fn roll_forward(
    rt: &tokio::runtime::Runtime,
    j: &mut Journal,
    endpoint: &ClientEndpoint,
) -> Result<String, String> {
    if !j.data_dir.join("member").is_dir() {
        // Never start etcd on a missing data dir: it would make a new,
        // empty cluster. A human must look.
        return Err(format!(
            "the restored data is missing from {}; the old data is at {}",
            j.data_dir.display(),
            j.aside.display()
        ));
    }
    let (_, old) = j.locate();
    let old_path = j.path_of(old);
    let started = if service::is_active() {
        Ok(())
    } else {
        service::start().map_err(|e| e.to_string())
    };
    let answer = match started {
        Ok(()) => {
            rt.block_on(health::wait(endpoint, &j.name, RECOVERY_START_LIMIT))
                .0
        }
        Err(e) => Health::Down { detail: e },
    };
    let Some(status) = answer.status().filter(|_| answer.answers_as_itself()) else {
        // The restored data is in place (the journal proved it), but it is
        // not served: keep the old data too, and say where both are.
        let mut note = format!(
            "the restored data is in place, but {}",
            answer
                .problem()
                .unwrap_or_else(|| "etcd does not answer".into())
        );
        if let Some(p) = &old_path {
            note.push_str(&format!(
                "; the old data is kept in {} until you remove it",
                p.display()
            ));
        }
        return Ok(note);
    };
    if let Some(want) = j.restored_cluster.filter(|w| *w != status.cluster_id) {
        return Err(format!(
            "etcd serves cluster {}, not the restored cluster {}; the data dir is not the restored data, so the restore is not completed",
            id_hex(status.cluster_id),
            id_hex(want)
        ));
    }
    let mut note = format!(
        "the restore was completed and etcd serves the restored data as cluster {}",
        id_hex(status.cluster_id)
    );
    if let Some(problem) = answer.problem() {
        note.push_str(&format!(" ({problem})"));
    }
    if let Some(old_path) = old_path {
        if j.step < Step::BackedUp {
            if let Some(backup) = j.backup.clone() {
                match write_backup(&old_path, &backup) {
                    Ok(()) => note.push_str(&format!(
                        "; the old data is backed up in {}",
                        backup.display()
                    )),
                    Err(e) => {
                        // Keep the old data rather than lose it unbacked.
                        return Ok(format!(
                            "{note}; the backup of the old data failed ({e}), so it is kept in {}",
                            old_path.display()
                        ));
                    }
                }
            }
            j.record(Step::BackedUp).map_err(|e| e.to_string())?;
        }
        remove_tree(&old_path).map_err(|e| format!("cannot remove {}: {e}", old_path.display()))?;
    }
    Ok(note)
}

/// Writes `aside` as a tar.gz at `path`; a published archive of that name
/// is taken as already done, a stale `.part` is replaced.
pub fn write_backup(aside: &Path, path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = dir.join(format!("{name}.part"));
    match fs::remove_file(&part) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.to_string()),
        _ => {}
    }
    let mut out = ArchiveFile::create(dir, &name, BACKUP_LEVEL).map_err(|e| e.to_string())?;
    out.writer()
        .append_tree(aside, "")
        .map_err(|e| e.to_string())?;
    out.publish().map(|_| ()).map_err(|e| e.to_string())
}

/// Looks for an interrupted restore on this unit and resolves it. The
/// caller holds the action lock. Returns what was done, for the status.
pub fn recover(paths: &Paths) -> Result<Option<String>, JournalError> {
    let Ok(conf) = EtcdConfig::load(paths.conf()) else {
        return Ok(None);
    };
    let Some(data_dir) = conf.data_dir() else {
        return Ok(None);
    };
    let Some(mut j) = Journal::load(&data_dir)? else {
        remove_stale_staging(&data_dir);
        return Ok(None);
    };
    let endpoint = conf
        .client_endpoint(paths.conf())
        .map_err(|e| JournalError::Recover(e.to_string()))?;
    let rt = crate::actions::runtime().map_err(|e| JournalError::Recover(e.to_string()))?;
    let at = j.step.name();
    // The config the journal saved names the endpoint of the old data.
    let saved_endpoint = EtcdConfig::load(&j.saved_config)
        .ok()
        .and_then(|c| c.client_endpoint(paths.conf()).ok())
        .unwrap_or_else(|| endpoint.clone());
    if j.name.is_empty() {
        j.name = conf.name.clone().unwrap_or_default();
    }
    let (restored, _) = j.locate();
    let outcome = if j.rolling_back
        || (j.had_old_data && (restored != Place::DataDir || j.step < Step::Checked))
    {
        // etcd starts right after `swapped` is recorded: from there on,
        // a killed restore cannot tell whether it served.
        let may_have_served = j.step >= Step::Swapped;
        roll_back(
            &rt,
            &j,
            &saved_endpoint,
            RECOVERY_START_LIMIT,
            may_have_served,
        )
    } else if restored == Place::DataDir {
        // Proven, or the only data there is: finish it, never undo it.
        roll_forward(&rt, &mut j, &endpoint)
    } else {
        // There was no old data and the restored data never moved in:
        // only the config may need to go back.
        undo_config(&j, || Ok(()))
            .map(|()| "nothing had changed yet; the unit is as it was".to_string())
    };
    match outcome {
        Ok(done) => {
            let note = format!(
                "a restore started {} was interrupted after step {at}: {done}",
                j.started_at
            );
            j.close()
                .map_err(|e| JournalError::Recover(e.to_string()))?;
            Ok(Some(note))
        }
        Err(e) => Err(JournalError::Recover(e)),
    }
}

/// A restore killed before it began its journal (while verifying, or in
/// etcd's restore tool) leaves `<data-dir>.restore-<stamp>`: a copy of the
/// db nobody needs. With no journal and the lock held, none is in use.
fn remove_stale_staging(data_dir: &Path) {
    let (Some(parent), Some(base)) = (data_dir.parent(), data_dir.file_name()) else {
        return;
    };
    let prefix = format!("{}.restore-", base.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// How long the status keeps saying what recovery did.
const NOTE_DAYS: u64 = 1;

fn note_path(paths: &Paths) -> PathBuf {
    paths.state_dir().join("restore-recovery")
}

/// `recover`, and when it did something, keeps its note for the status and
/// the operator's next look.
pub fn recover_and_note(paths: &Paths) -> Result<Option<String>, JournalError> {
    let note = recover(paths)?;
    if let Some(text) = &note {
        let _ = fsutil::create_private_dir(&paths.state_dir());
        let _ = fsutil::replace_file(&note_path(paths), text.as_bytes());
    }
    Ok(note)
}

/// The last recovery's note, while it is recent.
pub fn recent_note(paths: &Paths) -> Option<String> {
    let path = note_path(paths);
    let age = fs::metadata(&path).ok()?.modified().ok()?.elapsed().ok()?;
    if age > Duration::from_secs(NOTE_DAYS * 86_400) {
        return None;
    }
    fs::read_to_string(path).ok()
}

/// A restore that completed supersedes any earlier note.
pub fn clear_note(paths: &Paths) {
    let _ = fs::remove_file(note_path(paths));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_order_as_a_restore_runs() {
        assert!(Step::Verified < Step::Stopped);
        assert!(Step::Started < Step::Checked);
        assert!(Step::BackedUp < Step::Done);
        let text = serde_json::to_string(&Step::BackedUp).unwrap_or_default();
        assert_eq!(text, "\"backed-up\"");
    }

    #[test]
    fn a_journal_naming_other_paths_is_refused() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let data = dir.join("m.etcd");
        let j = Journal {
            step: Step::Stopped,
            data_dir: data.clone(),
            staging: dir.join("m.etcd.restore-x"),
            aside: PathBuf::from("/etc"),
            had_old_data: true,
            conf: dir.join("c.yml"),
            saved_config: dir.join("m.etcd.restore-x/old-config.yml"),
            backup: None,
            started_at: "now".into(),
            rolling_back: false,
            name: "m".into(),
            restored_ino: None,
            old_ino: None,
            restored_cluster: None,
            was_enabled: true,
        };
        fs::write(path_for(&data), serde_json::to_vec(&j).expect("json")).expect("write");
        assert!(matches!(
            Journal::load(&data),
            Err(JournalError::Read { .. })
        ));
        let ok = Journal {
            aside: dir.join("m.etcd.pre-restore-x"),
            ..j
        };
        fs::write(path_for(&data), serde_json::to_vec(&ok).expect("json")).expect("write");
        assert_eq!(Journal::load(&data).ok().flatten(), Some(ok));
        let _ = fs::remove_dir_all(&dir);
    }
}
