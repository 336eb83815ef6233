//! Taking over a unit that layer-etcd ran until `juju refresh --switch`
//! made it this charm's: its etcd snap, config file, TLS files and member
//! stay; the next render keeps the member's name, cluster token and URLs,
//! and drops layer-etcd's v2-era keys at the unit's turn of the rolling
//! restart.
//!
//! layer-etcd kept a member's data right in the snap's data dir
//! (`/var/snap/etcd/current`, a link snapd manages). A restore swaps the
//! data dir by renaming it, which must never happen to that link, so the
//! member moves into `/var/snap/etcd/current/<name>.etcd` at that same
//! restart: one rename on one filesystem, with etcd stopped and not
//! started at boot until the config names the new place.

use std::path::{Path, PathBuf};

use super::{storage, HookContext};
use crate::error::Error;
use crate::etcd::EtcdConfig;
use crate::fsutil;
use crate::install::{self, Installed};

/// Records layer-etcd's installation as this charm's, when this unit has
/// one: the etcd snap installed and a config naming a member whose data is
/// there (in place, or already moved). None otherwise: the unit's etcd
/// was laid out some other way, and is only reported on.
pub fn layer_etcd(ctx: &HookContext) -> Result<Option<Installed>, Error> {
    let Some(channel) = install::snap_tracking() else {
        return Ok(None);
    };
    let Ok(conf) = EtcdConfig::load(ctx.paths.conf()) else {
        return Ok(None);
    };
    let (Some(name), Some(dir)) = (conf.name.clone(), conf.data_dir()) else {
        return Ok(None);
    };
    let moved = ctx.paths.data_dir_for(&name);
    if !dir.join("member").is_dir() && !moved.join("member").is_dir() {
        return Ok(None);
    }
    // layer-etcd's `data` storage, mounted where this charm mounts it: it
    // stays the data's home (Juju runs no storage-attached on a refresh).
    if storage::on_storage(ctx.paths, &dir) {
        if let Some(device) = storage::mounted_at(&storage::mount_point(ctx.paths)) {
            storage::adopt(ctx, &device)?;
        }
    }
    let inst =
        install::adopt_snap(ctx.paths, channel.clone()).map_err(|e| Error::Hook(e.to_string()))?;
    ctx.log(&format!(
        "took over the etcd layer-etcd installed: member {name}, data in {}, snap channel {}",
        dir.display(),
        channel.as_deref().unwrap_or("none (installed from a file)")
    ));
    Ok(Some(inst))
}

/// This unit's member name and data dir, and where its data is now when it
/// must move first. The config's member when it has data (where the config
/// says, or already moved), else a new member named after the unit. The
/// data belongs on the `data` storage when one is attached, else in
/// `/var/snap/etcd/current/<name>.etcd`; it moves when it is elsewhere in
/// the snap's data dir (layer-etcd's place) or on the wrong side of the
/// storage.
pub fn identity(
    ctx: &HookContext,
    current: Option<&EtcdConfig>,
    derived: &str,
) -> (String, PathBuf, Option<PathBuf>) {
    let storage = storage::data_dir(ctx.paths);
    let target = |name: &str| {
        storage
            .clone()
            .unwrap_or_else(|| ctx.paths.data_dir_for(name))
    };
    if let Some((Some(name), Some(dir))) = current.map(|c| (c.name.clone(), c.data_dir())) {
        let to = target(&name);
        if dir.join("member").is_dir() {
            let moves = dir != to
                && (in_snap_data(ctx, &dir)
                    || storage.is_some()
                    || storage::on_storage(ctx.paths, &dir));
            return if moves {
                (name, to, Some(dir))
            } else {
                (name, dir, None)
            };
        }
        if to.join("member").is_dir() {
            // Moved, and the hook ended before the config said so.
            return (name, to, None);
        }
    }
    (derived.to_string(), target(derived), None)
}

fn in_snap_data(ctx: &HookContext, dir: &Path) -> bool {
    // By components: a trailing slash in the config names the same dir.
    dir.components().eq(ctx.paths.snap_data().components())
}

/// Why the member cannot move from `from` to `to` now, checked before
/// etcd stops: a restore's journal over it, both places holding a member
/// (a volume that already carries one: the charm will not choose), or too
/// little room for a copy across filesystems.
pub fn move_refused(from: &Path, to: &Path) -> Option<String> {
    if crate::actions::journal::path_for(from).exists() {
        return Some(format!(
            "etcd's data in {} is in the middle of a restore; it moves once the restore is resolved",
            from.display()
        ));
    }
    let (here, there) = (from.join("member"), to.join("member"));
    if here.is_dir() && there.is_dir() && !copied_from(from, to) {
        return Some(format!(
            "both {} and {} hold an etcd member; the charm will not choose: move aside the one that is not this member's current data",
            here.display(),
            there.display()
        ));
    }
    if !here.is_dir() || there.is_dir() || same_filesystem(from, to) {
        return None;
    }
    // A margin over the files' bytes for blocks and directories; a copy
    // cut short is removed before the next one, so its room counts.
    let need = fsutil::tree_bytes(&here).ok()?.saturating_mul(11) / 10 + (16 << 20);
    let room = to.ancestors().find(|p| p.exists()).unwrap_or(to);
    let partial = fsutil::tree_bytes(&to.join("member.partial")).unwrap_or(0);
    let free = fsutil::free_bytes(room).ok()?.saturating_add(partial);
    (need > free).then(|| {
        format!(
            "cannot move etcd's data to {}: it needs about {} and only {} is free there",
            to.display(),
            fsutil::human_size(need),
            fsutil::human_size(free)
        )
    })
}

/// The note a copy across filesystems leaves beside the member it made:
/// where it came from. With it, a member in both places is a copy whose
/// old side was not removed yet, not a choice to make.
fn copy_note(to: &Path) -> PathBuf {
    to.join("member.copied-from")
}

fn copied_from(from: &Path, to: &Path) -> bool {
    std::fs::read(copy_note(to)).is_ok_and(|b| b == from.as_os_str().as_encoded_bytes())
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|q| std::fs::metadata(q).ok())
            .map(|m| m.dev())
    };
    dev(a).is_some() && dev(a) == dev(b)
}

/// Moves the member (etcd stopped) from `from` into `to`: `to` is created
/// private and `member` renamed into it; across filesystems (onto or off
/// the `data` storage) it is copied beside, synced, renamed into place,
/// and the old copy renamed aside before it is removed, so no half-removed
/// tree is ever named `member`. Done already when only `to` holds it.
pub fn move_member(from: &Path, to: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::Hook(format!(
            "cannot move etcd's data from {} to {}: {e}",
            from.display(),
            to.display()
        ))
    };
    let aside = from.join("member.moved");
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(fail)?;
    }
    if !to.join("member").is_dir() {
        // A note without its copy is stale (a copy later moved away).
        let _ = std::fs::remove_file(copy_note(to));
    }
    if let Some(why) = move_refused(from, to) {
        return Err(Error::Hook(why));
    }
    if !from.join("member").is_dir() {
        let _ = std::fs::remove_file(copy_note(to));
        return Ok(());
    }
    if to.join("member").is_dir() {
        // A copy made before a crash: its old side goes now.
        std::fs::rename(from.join("member"), &aside).map_err(fail)?;
        fsutil::sync_dir(from).map_err(fail)?;
        std::fs::remove_dir_all(&aside).map_err(fail)?;
        let _ = std::fs::remove_file(copy_note(to));
        return Ok(());
    }
    fsutil::create_private_dir(to).map_err(fail)?;
    match std::fs::rename(from.join("member"), to.join("member")) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let partial = to.join("member.partial");
            if partial.exists() {
                std::fs::remove_dir_all(&partial).map_err(fail)?;
            }
            fsutil::copy_tree(&from.join("member"), &partial).map_err(fail)?;
            fsutil::replace_file(&copy_note(to), from.as_os_str().as_encoded_bytes())
                .map_err(fail)?;
            std::fs::rename(&partial, to.join("member")).map_err(fail)?;
            // The copy is in place: what follows is tidying, and a failure
            // there must not read as "the data did not move" (the next
            // move over these dirs finishes it, by the note).
            let _ = fsutil::sync_dir(to);
            if std::fs::rename(from.join("member"), &aside).is_ok() {
                let _ = fsutil::sync_dir(from);
                let _ = std::fs::remove_dir_all(&aside);
                let _ = std::fs::remove_file(copy_note(to));
            }
            return Ok(());
        }
        Err(e) => return Err(fail(e)),
    }
    fsutil::sync_dir(to).map_err(fail)?;
    fsutil::sync_dir(from).map_err(fail)?;
    Ok(())
}
