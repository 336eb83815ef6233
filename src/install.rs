//! Installing etcd: from the snap store, or from an upstream release
//! tarball attached as the `etcd` resource. Either way the service is
//! `snap.etcd.etcd`, run with `--config-file` on the charm's config.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::paths::Paths;
use crate::service;

pub const RESOURCE: &str = "etcd";
/// No etcd binary comes near this; a bigger entry is not a release.
const MAX_BINARY: u64 = 512 << 20;
const BINARIES: [&str; 3] = ["etcd", "etcdctl", "etcdutl"];

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("snap {verb} etcd failed: {detail}; check the channel option and the unit's access to the snap store")]
    Snap { verb: &'static str, detail: String },
    #[error("the etcd resource {path} is not an etcd release tarball ({detail}); attach etcd-vX.Y.Z-linux-amd64.tar.gz from the etcd releases")]
    Tarball { path: PathBuf, detail: String },
    #[error("the etcd resource {path} is {given}, but etcd on this unit runs from {running}; a unit does not switch between a snap and a release tarball: attach {wanted}, or deploy new units with this resource")]
    Switch {
        path: PathBuf,
        given: &'static str,
        running: &'static str,
        wanted: &'static str,
    },
    #[error("the core resource {0} is not a snap; attach core.snap, or an empty file to use the snap store")]
    Core(PathBuf),
    #[error("cannot install etcd into {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Service(#[from] service::ServiceError),
}

/// What is installed, kept in the charm's state dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// "snap" or "resource".
    pub source: String,
    pub channel: Option<String>,
    pub version: Option<String>,
    /// SHA-256 of the `etcd` resource installed, to notice a new one.
    #[serde(default)]
    pub resource_sha256: Option<String>,
    /// A snap installed from a file (`snap install --dangerous`): the snap
    /// store does not know it, so the `channel` option does not apply.
    #[serde(default)]
    pub from_file: bool,
}

fn state_file(paths: &Paths) -> PathBuf {
    paths.state_dir().join("installed.json")
}

impl Installed {
    pub fn load(paths: &Paths) -> Option<Installed> {
        let bytes = fs::read(state_file(paths)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, paths: &Paths) -> Result<(), InstallError> {
        let path = state_file(paths);
        let io = |source| InstallError::Io {
            path: path.clone(),
            source,
        };
        fsutil::create_private_dir(&paths.state_dir()).map_err(io)?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(io::Error::other(e)))?;
        fsutil::replace_file(&path, &text).map_err(io)
    }
}

fn snap(verb: &'static str, channel: &str) -> Result<(), InstallError> {
    let out = Command::new("snap")
        .args([verb, "etcd", &format!("--channel={channel}")])
        .output()
        .map_err(|e| InstallError::Snap {
            verb,
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(InstallError::Snap {
        verb,
        detail: crate::error::command_failure(&out),
    })
}

/// Installs etcd: the `etcd` resource when one is attached, else the snap.
pub fn install(
    paths: &Paths,
    resource: Option<&Path>,
    channel: &str,
) -> Result<Installed, InstallError> {
    let installed = match resource {
        Some(file) if is_snap(file) => {
            snap_file(file)?;
            Installed {
                source: "snap".into(),
                channel: None,
                version: None,
                resource_sha256: Some(file_sha256(file)?),
                from_file: true,
            }
        }
        Some(tarball) => {
            let version = install_tarball(paths, tarball)?;
            Installed {
                source: "resource".into(),
                channel: None,
                version: Some(version),
                resource_sha256: Some(file_sha256(tarball)?),
                from_file: false,
            }
        }
        None => {
            snap("install", channel)?;
            Installed {
                source: "snap".into(),
                channel: Some(channel.to_string()),
                version: None,
                resource_sha256: None,
                from_file: false,
            }
        }
    };
    installed.save(paths)?;
    Ok(installed)
}

/// A snap (squashfs: layer-etcd's `etcd.snap`), not a tarball.
fn is_snap(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"hsqs"
}

/// `snap install --dangerous FILE`, as layer-etcd installs its `etcd` and
/// `core` resources (a file from Juju carries no store signature).
fn snap_file(path: &Path) -> Result<(), InstallError> {
    let out = Command::new("snap")
        .args(["install", "--dangerous"])
        .arg(path)
        .output()
        .map_err(|e| InstallError::Snap {
            verb: "install",
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(InstallError::Snap {
        verb: "install",
        detail: crate::error::command_failure(&out),
    })
}

/// The `core` resource, when attached: installed first, so a unit without
/// the snap store can still install etcd's snap.
pub fn install_core(core: Option<&Path>) -> Result<(), InstallError> {
    match core {
        Some(file) if is_snap(file) => snap_file(file),
        Some(file) => Err(InstallError::Core(file.to_path_buf())),
        None => Ok(()),
    }
}

/// The channel snapd tracks for the installed etcd snap (`snap list
/// etcd`): `Some(None)` for a snap installed from a file (no channel, or a
/// local revision `x1`), `None` when no etcd snap is installed.
pub fn snap_tracking() -> Option<Option<String>> {
    let out = Command::new("snap").args(["list", "etcd"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = header.iter().position(|h| *h == "Tracking")?;
    let rev = header.iter().position(|h| *h == "Rev");
    let row: Vec<&str> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"etcd"))?;
    let tracking = row.get(column)?;
    let local = rev
        .and_then(|i| row.get(i))
        .is_some_and(|r| r.starts_with('x'));
    Some((*tracking != "-" && !local).then(|| tracking.to_string()))
}

/// Records an etcd snap another charm installed as this charm's own.
pub fn adopt_snap(paths: &Paths, channel: Option<String>) -> Result<Installed, InstallError> {
    let installed = Installed {
        source: "snap".into(),
        from_file: channel.is_none(),
        channel,
        version: None,
        resource_sha256: None,
    };
    installed.save(paths)?;
    Ok(installed)
}

/// Follows a changed `channel` option; true when the snap was refreshed.
pub fn follow_channel(
    paths: &Paths,
    installed: &mut Installed,
    channel: Option<&str>,
) -> Result<bool, InstallError> {
    let Some(channel) = channel else {
        return Ok(false);
    };
    if installed.source != "snap"
        || installed.from_file
        || installed.channel.as_deref() == Some(channel)
    {
        return Ok(false);
    }
    snap("refresh", channel)?;
    installed.channel = Some(channel.to_string());
    installed.save(paths)?;
    Ok(true)
}

fn file_sha256(path: &Path) -> Result<String, InstallError> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).map_err(|source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(crate::etcd::snapshot::hex(&h.finalize()))
}

/// What a newly attached `etcd` resource (Juju runs upgrade-charm for it)
/// asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum NewResource {
    /// Nothing new.
    None,
    /// A release tarball, installed: etcd restarts onto it in its turn.
    Installed,
    /// A snap: installed at this unit's turn of the rolling restart
    /// (snapd restarts etcd as it installs it).
    Snap(PathBuf),
}

pub fn follow_resource(
    paths: &Paths,
    installed: &mut Installed,
    resource: Option<&Path>,
) -> Result<NewResource, InstallError> {
    let Some(file) = resource else {
        return Ok(NewResource::None);
    };
    let sha = file_sha256(file)?;
    if installed.resource_sha256.as_deref() == Some(sha.as_str()) {
        return Ok(NewResource::None);
    }
    let snap = is_snap(file);
    if snap != (installed.source == "snap") {
        let (given, wanted) = if snap {
            (
                "a snap",
                "a release tarball (etcd-vX.Y.Z-linux-amd64.tar.gz)",
            )
        } else {
            ("a release tarball", "an etcd snap")
        };
        return Err(InstallError::Switch {
            path: file.to_path_buf(),
            given,
            running: if snap {
                "a release tarball"
            } else {
                "the snap"
            },
            wanted,
        });
    }
    if snap {
        return Ok(NewResource::Snap(file.to_path_buf()));
    }
    installed.version = Some(install_tarball(paths, file)?);
    installed.resource_sha256 = Some(sha);
    installed.save(paths)?;
    Ok(NewResource::Installed)
}

/// Installs an `etcd.snap` resource (etcd stopped or restarting in its
/// turn) and records it.
pub fn install_snap_resource(
    paths: &Paths,
    installed: &mut Installed,
    file: &Path,
) -> Result<(), InstallError> {
    snap_file(file)?;
    installed.channel = None;
    installed.from_file = true;
    installed.version = None;
    installed.resource_sha256 = Some(file_sha256(file)?);
    installed.save(paths)
}

/// `etcd-v3.5.16-linux-amd64/etcd` → ("3.5.16", "etcd").
fn release_entry(path: &Path) -> Option<(String, String)> {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let [top, file] = parts.as_slice() else {
        return None;
    };
    let version = top.strip_prefix("etcd-v")?.strip_suffix("-linux-amd64")?;
    // N.N.N with an optional -suffix: it names a directory the charm
    // creates and replaces, so nothing like "." or ".." gets through.
    let (numbers, suffix) = version.split_once('-').unwrap_or((version, ""));
    let parts: Vec<&str> = numbers.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !numeric
        || !suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return None;
    }

    Some((version.to_string(), file.clone()))
}

/// Unpacks etcd, etcdctl and etcdutl from an upstream release tarball into
/// `<state>/etcd/<version>/`, points `current` at it and writes the unit.
fn install_tarball(paths: &Paths, tarball: &Path) -> Result<String, InstallError> {
    let bad = |detail: String| InstallError::Tarball {
        path: tarball.to_path_buf(),
        detail,
    };
    let base = paths.etcd_install_dir();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    fs::create_dir_all(&base).map_err(io(&base))?;
    let file = fs::File::open(tarball).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let staging = fsutil::WorkDir::create(base.join(format!(".unpack-{}", std::process::id())))
        .map_err(io(&base))?;
    let mut version: Option<String> = None;
    let mut found = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some((v, name)) = release_entry(&path) else {
            continue;
        };
        if !BINARIES.contains(&name.as_str()) || !entry.header().entry_type().is_file() {
            continue;
        }
        match &version {
            Some(seen) if *seen != v => return Err(bad(format!("it holds both {seen} and {v}"))),
            _ => version = Some(v),
        }
        if entry.size() > MAX_BINARY {
            return Err(bad(format!("{name} claims {} bytes", entry.size())));
        }
        let dest = staging.path().join(&name);
        let mut out = fsutil::create_private_file(&dest).map_err(io(&dest))?;
        let copied = io::copy(&mut (&mut entry).take(MAX_BINARY), &mut out)
            .map_err(|e| bad(e.to_string()))?;
        if copied != entry.size() {
            return Err(bad(format!("{name} is truncated")));
        }
        out.sync_all().map_err(io(&dest))?;
        // Binaries, not secrets: root runs them, anyone may read them.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).map_err(io(&dest))?;
        found.push(name);
    }
    let version = version.ok_or_else(|| bad("no etcd-vX.Y.Z-linux-amd64/etcd in it".into()))?;
    for needed in ["etcd", "etcdctl"] {
        if !found.iter().any(|f| f == needed) {
            return Err(bad(format!("it has no {needed}")));
        }
    }
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(io(staging.path()))?;
    let dir = base.join(&version);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    fs::rename(staging.path(), &dir).map_err(io(&dir))?;
    // Swap `current` atomically: a new link under a temporary name, renamed.
    let current = base.join("current");
    let tmp = base.join(".current.tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).map_err(io(&tmp))?;
    fs::rename(&tmp, &current).map_err(io(&current))?;
    fsutil::sync_dir(&base).map_err(io(&base))?;
    write_unit(paths, &current.join("etcd"))?;
    Ok(version)
}

/// The systemd unit for etcd from the resource, under the snap's name so
/// every action and hook controls it the same way.
fn write_unit(paths: &Paths, etcd: &Path) -> Result<(), InstallError> {
    let unit = paths.unit_file();
    let quote = |p: &Path| format!("\"{}\"", p.display());
    let text = format!(
        "# Written by the etcd charm for etcd installed from its etcd resource.\n\
         [Unit]\n\
         Description=etcd key-value store (etcd charm)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={} --config-file {}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         LimitNOFILE=65536\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        quote(etcd),
        quote(paths.conf())
    );
    if let Some(dir) = unit.parent() {
        fs::create_dir_all(dir).map_err(|source| InstallError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    fsutil::replace_file(&unit, text.as_bytes()).map_err(|source| InstallError::Io {
        path: unit.clone(),
        source,
    })?;
    // A unit file is not secret; systemd wants it readable.
    let _ = fs::set_permissions(&unit, fs::Permissions::from_mode(0o644));
    service::daemon_reload()?;
    service::enable()?;
    Ok(())
}

/// The `remove` hook: etcd stopped and disabled; the charm's own unit file
/// and binaries go, the data dir stays for the operator.
pub fn uninstall(paths: &Paths) -> Result<(), InstallError> {
    let _ = service::stop();
    let _ = service::disable();
    if Installed::load(paths).is_some_and(|i| i.source == "resource") {
        let unit = paths.unit_file();
        match fs::remove_file(&unit) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(InstallError::Io {
                    path: unit,
                    source: e,
                })
            }
            _ => {}
        }
        service::daemon_reload()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_entries_are_recognised() {
        assert_eq!(
            release_entry(Path::new("etcd-v3.5.16-linux-amd64/etcdutl")),
            Some(("3.5.16".into(), "etcdutl".into()))
        );
        assert_eq!(
            release_entry(Path::new("./etcd-v3.4.23-linux-amd64/etcd")).map(|e| e.0),
            Some("3.4.23".into())
        );
        assert_eq!(
            release_entry(Path::new("etcd-v3.5.16-linux-amd64/Documentation/x")),
            None
        );
        assert_eq!(release_entry(Path::new("etcd-v../etcd")), None);
        assert_eq!(release_entry(Path::new("etcd-v..-linux-amd64/etcd")), None);
        assert_eq!(release_entry(Path::new("etcd-v.-linux-amd64/etcd")), None);
        assert_eq!(
            release_entry(Path::new("etcd-v3.6.0-rc.1-linux-amd64/etcd")).map(|e| e.0),
            Some("3.6.0-rc.1".into())
        );
        assert_eq!(release_entry(Path::new("etcd")), None);
    }
}
