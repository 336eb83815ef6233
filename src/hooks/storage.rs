//! The `data` storage (block, 0–1, as layer-etcd declares it): when one is
//! attached, etcd's data lives on it, at `/media/etcd/data` as under
//! layer-etcd (so a unit it ran keeps its data where it is).
//!
//! Attaching formats the device only when it holds no filesystem at all
//! (layer-etcd formatted whatever it got, which destroys a re-attached
//! volume), mounts it at `/media/etcd` with an fstab line by UUID, and
//! records it. The member's data then moves onto it at the unit's turn of
//! the rolling restart (`adopt::move_member`, with etcd stopped). Detaching
//! cannot wait for a turn (Juju takes the volume away after the hook), so
//! the data moves back to the snap's data dir at once and etcd restarts on
//! it; then the volume is unmounted.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::HookContext;
use crate::error::Error;
use crate::etcd::EtcdConfig;
use crate::juju::{LogLevel, Status};
use crate::paths::Paths;
use crate::service;

const MOUNT: &str = "media/etcd";
/// State file: the device mounted for the `data` storage.
const STATE: &str = "storage-data";

pub fn mount_point(paths: &Paths) -> PathBuf {
    paths.under_root(MOUNT)
}

/// etcd's data dir on the storage, when one is attached.
pub fn data_dir(paths: &Paths) -> Option<PathBuf> {
    paths
        .state_dir()
        .join(STATE)
        .exists()
        .then(|| mount_point(paths).join("data"))
}

/// A volume recorded but not mounted (a reboot without it): etcd stopped
/// and kept from starting at boot, rather than run on the empty dir below
/// the mount point; the sentence for the status.
pub fn guard(paths: &Paths) -> Option<String> {
    let data = data_dir(paths)?;
    let point = mount_point(paths);
    if mounted_at(&point).is_some() {
        // A new unit (no config yet) never starts on a member some other
        // unit left on a reused volume.
        return (!paths.conf().exists() && data.join("member").is_dir()).then(|| {
            format!(
                "the data storage already holds an etcd member in {} that is not this unit's: etcd will not start on it; detach it and attach a blank volume, or move that data aside",
                data.display()
            )
        });
    }
    let _ = service::disable();
    let _ = service::stop();
    Some(format!(
        "the data storage is not mounted at {}: etcd stays stopped until it is (mount it, or check the volume)",
        point.display()
    ))
}

/// Whether two names are the same device: Juju may name it by id
/// (`/dev/disk/by-id/…`), the kernel's mount table by its node.
fn same_device(a: &str, b: &str) -> bool {
    let canonical =
        |d: &str| std::fs::canonicalize(d.trim()).unwrap_or_else(|_| PathBuf::from(d.trim()));
    canonical(a) == canonical(b)
}

/// Whether `dir` lies on the storage's mount point.
pub fn on_storage(paths: &Paths, dir: &Path) -> bool {
    dir.starts_with(mount_point(paths))
}

/// Records a storage mounted at the mount point (layer-etcd's, found when
/// its unit is taken over).
pub fn record(paths: &Paths, device: &str) -> Result<(), Error> {
    let path = paths.state_dir().join(STATE);
    crate::fsutil::create_private_dir(&paths.state_dir())
        .and_then(|()| crate::fsutil::replace_file(&path, device.as_bytes()))
        .map_err(|e| Error::Hook(format!("cannot write {}: {e}", path.display())))
}

fn run(program: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

fn checked(program: &str, args: &[&str]) -> Result<String, String> {
    let out = run(program, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            crate::error::command_failure(&out)
        ))
    }
}

/// The device mounted at `point`, from the kernel's mount table.
pub fn mounted_at(point: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = point.to_string_lossy();
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount = fields.get(4)?.replace("\\040", " ");
        let dash = fields.iter().position(|f| *f == "-")?;
        (mount == want).then(|| fields.get(dash + 2).map(|s| s.to_string()))?
    })
}

/// The filesystem on `device`: None when it holds none (blkid finds
/// nothing: exit 2).
fn fs_type(device: &str) -> Result<Option<String>, String> {
    // Readable first: blkid also answers "nothing found" when it cannot
    // read, and nothing found means format.
    std::fs::File::open(device)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut [0u8; 4096]))
        .map_err(|e| format!("cannot read the data storage {device}: {e}"))?;
    let out = run("blkid", &["-p", "-o", "export", device])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    match out.status.code() {
        Some(2) if out.stderr.is_empty() => Ok(None),
        Some(0) => Ok(Some(
            field("TYPE")
                .or_else(|| field("PTTYPE").map(|t| format!("{t} partition table")))
                .unwrap_or_else(|| "unrecognised".into()),
        )),
        _ => Err(format!(
            "blkid cannot read the data storage {device}: {}",
            crate::error::command_failure(&out)
        )),
    }
}

/// `data-storage-attached`: formats (only an empty device), mounts and
/// records the volume. None when done; Some(why) when the unit is blocked.
pub fn attached(ctx: &HookContext) -> Result<Option<String>, Error> {
    let device = ctx.tools.storage_location()?;
    let device = device.to_string_lossy().to_string();
    let point = mount_point(ctx.paths);
    if let Some(there) = mounted_at(&point) {
        if !same_device(&there, &device) {
            let why = format!(
                "{} already has {there} mounted, not the data storage {device}; the charm leaves both alone",
                point.display()
            );
            refuse(ctx.paths, &why);
            return Ok(Some(why));
        }
    } else {
        match fs_type(&device).map_err(Error::Hook)? {
            None => {
                ctx.log(&format!("formatting the data storage {device} (ext4)"));
                checked("mkfs.ext4", &["-q", &device]).map_err(Error::Hook)?;
            }
            Some(t) if t == "ext4" => ctx.log(&format!(
                "the data storage {device} already holds ext4: kept as it is"
            )),
            Some(t) => {
                let why = format!(
                    "the data storage {device} holds a {t} filesystem; the charm formats only an empty device and uses ext4: wipe it or attach another"
                );
                refuse(ctx.paths, &why);
                return Ok(Some(why));
            }
        }
        crate::fsutil::create_private_dir(&point)
            .map_err(|e| Error::Hook(format!("cannot create {}: {e}", point.display())))?;
        checked("mount", &[&device, &point.to_string_lossy()]).map_err(Error::Hook)?;
    }
    settle_mount(ctx, &device)?;
    ctx.log(&format!(
        "the data storage {device} is mounted at {}; etcd's data moves there at this unit's turn to restart",
        point.display()
    ));
    Ok(None)
}

/// The mounted volume made this charm's: recorded, in fstab by UUID,
/// etcd ordered after the mount (it fails rather than start on the empty
/// dir below the mount point when the volume is missing at boot), and the
/// snap's plug for /media connected.
fn settle_mount(ctx: &HookContext, device: &str) -> Result<(), Error> {
    let uuid =
        checked("blkid", &["-p", "-o", "value", "-s", "UUID", device]).map_err(Error::Hook)?;
    if uuid.is_empty() {
        return Err(Error::Hook(format!(
            "the data storage {device} has a filesystem without a UUID; attach a volume the charm formats"
        )));
    }
    fstab(ctx.paths, Some(&uuid))?;
    mount_dependency(ctx.paths, true)?;
    record(ctx.paths, device)?;
    let _ = std::fs::remove_file(ctx.paths.state_dir().join(REFUSED));
    if crate::install::Installed::load(ctx.paths).is_some_and(|i| i.source == "snap") {
        connect_snap(ctx);
    }
    Ok(())
}

/// layer-etcd's volume, found mounted at the mount point when its unit is
/// taken over: made this charm's like one it attached.
pub fn adopt(ctx: &HookContext, device: &str) -> Result<(), Error> {
    settle_mount(ctx, device)
}

fn dependency_file(paths: &Paths) -> PathBuf {
    paths.under_root("etc/systemd/system/snap.etcd.etcd.service.d/etcd-charm-storage.conf")
}

/// A drop-in that makes etcd need the volume's mount (`RequiresMountsFor`).
fn mount_dependency(paths: &Paths, on: bool) -> Result<(), Error> {
    let path = dependency_file(paths);
    if !on {
        if path.exists() {
            let _ = std::fs::remove_file(&path);
            let _ = service::daemon_reload();
        }
        return Ok(());
    }
    let text = format!(
        "# Written by the etcd charm: etcd's data is on the data storage.\n[Unit]\nRequiresMountsFor={}\n",
        mount_point(paths).display()
    );
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::fsutil::replace_file(&path, text.as_bytes())
        .map_err(|e| Error::Hook(format!("cannot write {}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    let _ = service::daemon_reload();
    Ok(())
}

/// A refusal of the last attached volume, kept for the status until a
/// volume is accepted or detached.
const REFUSED: &str = "storage-refused";

pub fn refusal(paths: &Paths) -> Option<String> {
    std::fs::read_to_string(paths.state_dir().join(REFUSED))
        .ok()
        .filter(|s| !s.is_empty())
}

fn refuse(paths: &Paths, why: &str) {
    let _ = crate::fsutil::create_private_dir(&paths.state_dir());
    let _ = crate::fsutil::replace_file(&paths.state_dir().join(REFUSED), why.as_bytes());
}

/// Snap confinement: the etcd snap reaches /media through this plug.
pub fn connect_snap(ctx: &HookContext) {
    if let Err(e) = checked("snap", &["connect", "etcd:removable-media"]) {
        ctx.log(&e);
    }
}

/// Adds (Some(uuid)) or removes (None) the mount point's fstab line.
fn fstab(paths: &Paths, uuid: Option<&str>) -> Result<(), Error> {
    let path = paths.under_root("etc/fstab");
    let point = mount_point(paths).to_string_lossy().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1) != Some(point.as_str()))
        .map(str::to_string)
        .collect();
    if let Some(uuid) = uuid {
        lines.push(format!("UUID={uuid} {point} ext4 defaults,nofail 0 2"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::fsutil::replace_file(&path, out.as_bytes())
        .map_err(|e| Error::Hook(format!("cannot write {}: {e}", path.display())))?;
    // fstab is read by everyone (mount, systemd).
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    Ok(())
}

/// `data-storage-detaching`: Juju takes the volume away after this hook,
/// so the member's data moves back to the snap's data dir now (etcd
/// stopped, the config then names it), and the volume is unmounted. A unit
/// being removed has left the cluster: its data goes with the volume.
pub fn detaching(ctx: &HookContext) -> Result<(), Error> {
    let point = mount_point(ctx.paths);
    let recorded = std::fs::read_to_string(ctx.paths.state_dir().join(STATE)).ok();
    let _ = std::fs::remove_file(ctx.paths.state_dir().join(STATE));
    let _ = std::fs::remove_file(ctx.paths.state_dir().join(REFUSED));
    let conf = EtcdConfig::load(ctx.paths.conf()).ok();
    // The member on the volume: where the config says, or moved there by
    // a hook cut short before the config said so.
    let moved = point.join("data");
    let on_it = conf
        .as_ref()
        .and_then(|c| Some((c.name.clone()?, c.data_dir()?)))
        .and_then(|(name, d)| {
            if on_storage(ctx.paths, &d) && d.join("member").is_dir() {
                Some((name, d))
            } else if !d.join("member").is_dir() && moved.join("member").is_dir() {
                Some((name, moved.clone()))
            } else {
                None
            }
        });
    let leaving = super::cluster::left_marker(ctx).exists();
    if leaving {
        let _ = service::stop();
    }
    if let Some((name, dir)) = on_it.filter(|_| !leaving) {
        let back = ctx.paths.data_dir_for(&name);
        if let Some(why) = super::adopt::move_refused(&dir, &back) {
            ctx.tools.status_set(Status::Blocked, &why)?;
            return Err(Error::Hook(why));
        }
        let Ok(_lock) = crate::lock::ActionLock::acquire(&ctx.paths.state_dir(), "data move")
        else {
            let msg = "the data storage is being detached while a snapshot or restore runs on it; the hook retries once the action ends".to_string();
            ctx.tools.status_set(Status::Blocked, &msg)?;
            return Err(Error::Hook(msg));
        };
        ctx.tools.status_set(
            Status::Maintenance,
            "Moving etcd's data off the data storage being detached",
        )?;
        let service = |e: service::ServiceError| Error::Hook(e.to_string());
        service::disable().map_err(service)?;
        service::stop().map_err(service)?;
        super::adopt::move_member(&dir, &back)?;
        // etcd back on it now: the hook's converge may stop short (a TLS
        // hold, bad options), and the volume is going.
        point_config_at(ctx.paths.conf(), &back)?;
        let _ = service::enable();
        if let Err(e) = service::start() {
            ctx.log(&format!("etcd did not start on its data moved back: {e}"));
        }
        let _ = ctx.tools.log(
            LogLevel::Warning,
            &format!(
                "the data storage is detaching: etcd's data moved back to {} (etcd restarts on it outside the rolling restart: Juju does not wait)",
                back.display()
            ),
        );
    }
    // Only the volume this charm mounted there is unmounted.
    let ours = match (&recorded, mounted_at(&point)) {
        (Some(r), Some(there)) => same_device(r, &there),
        _ => false,
    };
    if ours {
        checked("umount", &[&point.to_string_lossy()]).map_err(Error::Hook)?;
    }
    if recorded.is_some() {
        mount_dependency(ctx.paths, false)?;
        fstab(ctx.paths, None)?;
    }
    Ok(())
}

/// Rewrites the config's `data-dir` line (as the charm renders it) to name
/// `dir`, atomically; the next render writes the same line.
fn point_config_at(conf: &Path, dir: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::Hook(format!("cannot write {}: {e}", conf.display()));
    let text = std::fs::read_to_string(conf).map_err(fail)?;
    let line = format!(
        "data-dir: {}",
        serde_json::Value::String(dir.to_string_lossy().into_owned())
    );
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("data-dir:") {
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    out.push(String::new());
    crate::etcd::render::write_if_changed(conf, &out.join("\n")).map_err(fail)?;
    Ok(())
}
