//! File-system steps that must be crash-safe and private: 0700 dirs, 0600
//! files from the moment they exist, fsync of file and dir, and a publish
//! step that never replaces an existing file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parents with mode 0700. Existing dirs are
/// left as the operator made them.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Why a target directory cannot be used.
#[derive(Debug)]
pub enum DirError {
    /// The path, or a parent on it, is not a directory.
    NotDir,
    Io(io::Error),
}

/// Uses `dir` when it is a directory, else creates it (0700, with parents,
/// owned like the directory it is made in: see `operator_owner`).
pub fn ensure_private_dir(dir: &Path) -> Result<(), DirError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DirError::NotDir),
        Err(_) => {
            let owner = operator_owner(dir);
            let missing: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|a| fs::symlink_metadata(a).is_err())
                .map(Path::to_path_buf)
                .collect();
            create_private_dir(dir).map_err(|e| {
                // A path through a file reads as "not a directory" too.
                if e.raw_os_error() == Some(20) {
                    DirError::NotDir
                } else {
                    DirError::Io(e)
                }
            })?;
            if let Some((uid, gid)) = owner {
                for d in missing {
                    std::os::unix::fs::chown(&d, Some(uid), Some(gid)).map_err(DirError::Io)?;
                }
            }
            Ok(())
        }
    }
}

/// Who should own what the charm writes in `dir`: the owner of the nearest
/// existing directory at or above it, when that is not root. An archive
/// in `/home/ubuntu/...` then belongs to `ubuntu` (still 0600), so the
/// `juju scp` the action prints, which logs in as that user, can read it.
pub fn operator_owner(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = dir.ancestors().find_map(|a| fs::metadata(a).ok())?;
    (m.uid() != 0).then_some((m.uid(), m.gid()))
}

/// Creates a new file with mode 0600; fails if it exists.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Swaps two existing paths in one step (`renameat2` with
/// `RENAME_EXCHANGE`): at every instant, power loss included, each name
/// holds one of the two trees. Fails with `Unsupported` where the
/// filesystem cannot do it.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this filesystem cannot exchange two paths",
        )),
        _ => Err(e),
    }
}

/// A directory's inode: it survives renames (and reboots) within its
/// filesystem, so a tree can be found again whatever name it ended under.
pub fn dir_ino(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).ok()?;
    m.is_dir().then(|| m.ino())
}

/// Moves a finished file to its final name without ever replacing an
/// existing file: a hard link fails if the name is taken, and is atomic.
pub fn publish_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        // Filesystems without hard links: check, then rename.
        Err(e) if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(1) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename, fsync
/// dir), keeping the old file's mode (0600 for a new file).
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = PartFile::new(dir.join(format!(".{name}.tmp-{}", std::process::id())));
    let _ = fs::remove_file(tmp.path());
    let mut f = create_private_file(tmp.path())?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp.path(), path)?;
    tmp.keep();
    sync_dir(dir)
}

/// A file being written under a temporary name. Unless `keep` is called,
/// dropping it removes the file, so a failed or interrupted write never
/// leaves something that looks like a result.
#[derive(Debug)]
pub struct PartFile {
    path: PathBuf,
    armed: bool,
}

impl PartFile {
    pub fn new(path: PathBuf) -> Self {
        PartFile { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A private working directory (0700, must not exist yet), removed with
/// everything in it when dropped unless `keep` is called.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    armed: bool,
}

impl WorkDir {
    pub fn create(path: PathBuf) -> io::Result<Self> {
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkDir { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Bytes an unprivileged process can still write on the filesystem
/// holding `path` (statvfs: available blocks times fragment size).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is writable
    // memory of the right type; statvfs fills it or fails.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // u32 on 32-bit targets
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// This process's peak resident memory (VmHWM), in bytes, if known.
pub fn peak_rss() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `du -h` style sizes: 68K, 1.2M, 15G.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        let tenths = (value * 10.0).ceil() / 10.0;
        if tenths < 10.0 {
            return format!("{tenths:.1}{}", UNITS[unit]);
        }
    }
    format!("{}{}", value.ceil() as u64, UNITS[unit])
}

/// The bytes of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Copies the directories and regular files under `from` into `to` (new),
/// keeping their modes, each file and directory synced. Anything else (a
/// link, a device) is refused: an etcd data dir holds none.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            let mut src = File::open(entry.path())?;
            let mut out = File::create(&dest)?;
            out.set_permissions(fs::Permissions::from_mode(
                entry.metadata()?.permissions().mode() & 0o7777,
            ))?;
            io::copy(&mut src, &mut out)?;
            out.sync_all()?;
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a directory",
                entry.path().display()
            )));
        }
    }
    sync_dir(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_read_like_du() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1000), "1000");
        assert_eq!(human_size(1024), "1.0K");
        assert_eq!(human_size(69_632), "68K");
        assert_eq!(human_size(1_258_291), "1.2M");
        assert_eq!(human_size(10_239), "10K");
        assert_eq!(human_size(1_073_741_824), "1.0G");
        assert_eq!(human_size(16_106_127_360), "15G");
    }
}
