//! Restore killed at every journaled step, full disks, and version moves:
//! whatever happens, the unit ends with one whole data set (the old one or
//! the snapshot's), etcd serving it, and nothing half-made left behind.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{list, mode, Etcd, Spec, TestDir, Tmpfs, Unit};

const V34: &str = "3.4.23";
const V35: &str = "3.5.16";
const ABORT: &str = "ETCD_CHARM_TEST_ABORT_AT";
const FAIL: &str = "ETCD_CHARM_TEST_FAIL_AT";

/// Every key under / with its value.
fn keys(unit: &Unit) -> BTreeMap<String, String> {
    let out = unit.etcdctl(&["get", "/", "--prefix"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
        .collect()
}

/// A unit whose data differs from a snapshot of it taken earlier: the
/// test can tell "old data" from "snapshot data" from any mix.
struct Scene {
    t: TestDir,
    unit: Unit,
    archive: PathBuf,
    snap: BTreeMap<String, String>,
    old: BTreeMap<String, String>,
    cluster: u64,
}

fn scene(name: &str, version: &'static str) -> Scene {
    let t = TestDir::new(name);
    let etcd = Etcd::get(version);
    let unit = Unit::new(t.path(), &etcd, Spec::single(0, false));
    unit.start();
    unit.put("/k", "value-in-the-snapshot");
    for i in 0..10 {
        unit.put(&format!("/only-snap/{i}"), &format!("snapshot-only-{i:04}"));
    }
    let snap = keys(&unit);
    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    o.assert_completed();
    let archive = PathBuf::from(o.result("snapshot.path"));
    unit.put("/k", "value-after-the-snapshot");
    let del = unit.etcdctl(&["del", "/only-snap/", "--prefix"]);
    assert!(del.status.success());
    for i in 0..10 {
        unit.put(&format!("/only-old/{i}"), &format!("old-data-only-{i:04}"));
    }
    let old = keys(&unit);
    assert_ne!(old, snap);
    let cluster = unit.status().0;
    Scene {
        t,
        unit,
        archive,
        snap,
        old,
        cluster,
    }
}

impl Scene {
    fn restore_params(&self) -> [String; 2] {
        [
            format!("source={}", self.archive.display()),
            format!("target={}", self.backups().display()),
        ]
    }

    /// Runs restore with the scene's params and the action killed right
    /// after it records `step`.
    fn restore_killed_at(&self, step: &str) {
        let p = self.restore_params();
        let o =
            self.unit
                .run_action_env("restore", &[p[0].as_str(), p[1].as_str()], &[(ABORT, step)]);
        assert_eq!(o.exit_code, -9, "killed at {step}: {o:?}");
    }

    fn backups(&self) -> PathBuf {
        self.t.path().join("backups")
    }

    fn parent(&self) -> PathBuf {
        self.unit.data_dir().parent().expect("parent").to_path_buf()
    }

    fn journal(&self) -> PathBuf {
        self.parent().join("etcd0.etcd.restore-journal")
    }

    /// One whole data set, served, and nothing else beside the data dir
    /// but, when `kept`, the restored data a rollback kept because etcd may
    /// have served it.
    fn assert_one_data_set(&self, want_snapshot: bool, kept: bool) {
        let now = keys(&self.unit);
        if want_snapshot {
            assert_eq!(now, self.snap, "the snapshot's data, whole");
            assert_ne!(self.unit.status().0, self.cluster, "a new cluster");
        } else {
            assert_eq!(now, self.old, "the old data, whole");
            assert_eq!(self.unit.status().0, self.cluster, "the old cluster");
        }
        let listed = list(&self.parent());
        assert_eq!(listed[0], "etcd0.etcd", "{listed:?}");
        if kept {
            assert_eq!(listed.len(), 2, "{listed:?}");
            assert!(
                listed[1].starts_with("etcd0.etcd.failed-restore-"),
                "{listed:?}"
            );
            assert_eq!(mode(&self.parent().join(&listed[1])), 0o700);
        } else {
            assert_eq!(listed.len(), 1, "{listed:?}");
        }
        for f in list(&self.backups()) {
            assert!(!f.ends_with(".part"), "unfinished backup {f} left");
        }
        // etcd starts at boot again once the restore is resolved.
        assert!(self.unit.is_enabled(), "etcd left disabled at boot");
    }
}

/// Every regular file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = fs::read(&p) {
                out.push(bytes);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A restore killed right after recording `step`. With `reboot`, the
/// machine then restarts at once (etcd killed, services enabled at boot
/// started) before the next hook; a write a client saw acknowledged by
/// the restored etcd in between must survive, in the data or in the kept
/// copy.
fn killed_at(step: &str, version: &'static str, reboot: bool) {
    let tag = if reboot { "-reboot" } else { "" };
    let s = scene(&format!("crash-{step}{tag}-{version}"), version);
    s.restore_killed_at(step);
    // The journal survives the kill, private, at the step.
    let journal = s.journal();
    let text = fs::read_to_string(&journal).expect("journal left by the killed restore");
    assert!(text.contains(&format!("\"step\": \"{step}\"")), "{text}");
    assert_eq!(mode(&journal), 0o600);
    for f in list(&s.parent()) {
        let p = s.parent().join(&f);
        if p.is_dir() {
            assert_eq!(mode(&p), 0o700, "{f}");
        }
    }
    // Until the journal is resolved, etcd does not start at boot.
    assert_eq!(s.unit.is_enabled(), step == "verified", "enabled at {step}");

    let forward = !matches!(step, "verified" | "stopped" | "swapped" | "started");
    // etcd may have served the restored data from `swapped` on.
    let kept = matches!(step, "swapped" | "started");
    let acked = format!(
        "acknowledged-after-the-kill-at-{step}-{}",
        std::process::id()
    );
    let mut wrote = false;
    if reboot {
        if s.unit.etcd_pid().is_some() && step != "verified" {
            // A client writes to the restored etcd before the power goes.
            s.unit.put("/acked", &acked);
            wrote = true;
        }
        let booted = s.unit.reboot();
        assert_eq!(
            booted,
            step == "verified",
            "etcd started at boot after {step}"
        );
        println!(
            "reboot after {step}: etcd started at boot: {booted}, acknowledged write: {wrote}"
        );
    }

    let hook = s.unit.run_hook("update-status");
    assert_eq!(hook["exit_code"], 0, "{hook}");
    let msg = hook["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(hook["status"]["status"], "active", "{hook}");
    assert!(msg.starts_with("Healthy with 1 known peer"), "{msg}");
    assert!(
        msg.contains(&format!("was interrupted after step {step}")),
        "{msg}"
    );
    if forward {
        assert!(msg.contains("the restore was completed"), "{msg}");
        let backups = list(&s.backups());
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert_eq!(mode(&s.backups().join(&backups[0])), 0o600);
    } else {
        assert!(msg.contains("the old data is back"), "{msg}");
        assert_eq!(msg.contains("the restored data is kept in"), kept, "{msg}");
        assert_eq!(list(&s.backups()), Vec::<String>::new());
    }
    assert!(!journal.exists(), "the journal is gone");
    if wrote {
        if forward {
            assert_eq!(s.unit.get("/acked").as_deref(), Some(acked.as_str()));
            let del = s.unit.etcdctl(&["del", "/acked"]);
            assert!(del.status.success());
        } else {
            let listed = list(&s.parent());
            let copy = s.parent().join(listed.last().expect("kept copy"));
            assert!(
                files_under(&copy)
                    .iter()
                    .any(|f| contains(f, acked.as_bytes())),
                "the acknowledged write is in neither the data nor the kept copy {}",
                copy.display()
            );
        }
    }
    s.assert_one_data_set(forward, kept);
    // The juju-log says it too, for `juju debug-log`.
    let logged = s.unit.calls_of("juju-log");
    assert!(
        logged
            .iter()
            .any(|a| a.join(" ").contains("was interrupted")),
        "{logged:?}"
    );
    // And the next hook has nothing left to do.
    let again = s.unit.run_hook("update-status");
    assert_eq!(again["exit_code"], 0);
    s.assert_one_data_set(forward, kept);
}

#[test]
fn killed_after_verified() {
    killed_at("verified", V35, false);
}

#[test]
fn killed_after_stopped() {
    killed_at("stopped", V35, false);
}

#[test]
fn killed_after_swapped() {
    killed_at("swapped", V35, false);
}

#[test]
fn killed_after_swapped_3_4() {
    killed_at("swapped", V34, false);
}

#[test]
fn killed_after_started() {
    killed_at("started", V35, false);
}

#[test]
fn killed_after_checked() {
    killed_at("checked", V35, false);
}

#[test]
fn killed_after_backed_up() {
    killed_at("backed-up", V35, false);
}

#[test]
fn killed_after_done() {
    killed_at("done", V35, false);
}

#[test]
fn reboot_after_verified() {
    killed_at("verified", V35, true);
}

#[test]
fn reboot_after_stopped() {
    killed_at("stopped", V35, true);
}

#[test]
fn reboot_after_swapped() {
    killed_at("swapped", V35, true);
}

#[test]
fn reboot_after_started() {
    killed_at("started", V35, true);
}

#[test]
fn reboot_after_checked() {
    killed_at("checked", V35, true);
}

#[test]
fn reboot_after_backed_up() {
    killed_at("backed-up", V34, true);
}

#[test]
fn reboot_after_done() {
    killed_at("done", V35, true);
}

/// A rollback that moved the data back but died before it could record
/// that it was rolling back (the journal still says `checked`): recovery
/// finds the restored tree by its identity, not by the step, and never
/// reports the old data as a completed restore.
#[test]
fn data_moved_back_without_a_record_is_not_rolled_forward() {
    let s = scene("crash-moved-back", V35);
    s.restore_killed_at("checked");
    let listed = list(&s.parent());
    let aside = listed
        .iter()
        .find(|n| n.contains(".pre-restore-"))
        .expect("old data aside")
        .clone();
    // What a rollback does, done by hand: etcd stopped, the restored data
    // moved out, the old data moved back.
    assert!(s.unit.systemctl("stop").status.success());
    let elsewhere = s.t.path().join("restored-moved-away");
    fs::rename(s.unit.data_dir(), &elsewhere).expect("move restored");
    fs::rename(s.parent().join(&aside), s.unit.data_dir()).expect("move old back");

    let hook = s.unit.run_hook("update-status");
    let msg = hook["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(hook["status"]["status"], "active", "{hook}");
    assert!(msg.contains("the old data is back"), "{msg}");
    assert!(!msg.contains("completed"), "{msg}");
    assert_eq!(list(&s.backups()), Vec::<String>::new());
    s.assert_one_data_set(false, false);
}

/// The rollback cannot be recorded (the journal's disk refuses writes):
/// nothing is moved, the action says so, and the next hook resolves the
/// restore from what the journal does say (here: proven, so completed).
#[test]
fn an_unrecorded_rollback_moves_nothing() {
    let s = scene("crash-unrecorded-rollback", V35);
    s.unit.fill(6 << 20, 64 * 1024);
    let small = Tmpfs::mount(&s.t.path().join("small"), backup_window(&s));
    let o = s.unit.run_action_env(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            &format!("target={}", small.0.display()),
        ],
        &[(FAIL, "rolling-back")],
    );
    o.assert_failed_with("the restore failed while backing up the old data");
    assert!(o.message.contains("nothing was moved"), "{}", o.message);
    assert!(!o.message.contains("the old data is back"), "{}", o.message);
    let (status, _) = s.unit.status_line();
    assert_eq!(status, "blocked", "the action leaves the unit blocked");
    assert!(s.journal().exists());
    drop(small);
    let hook = s.unit.run_hook("update-status");
    let msg = hook["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("the restore was completed"), "{msg}");
    assert_eq!(keys(&s.unit), s.snap);
    assert!(!s.journal().exists());
}

/// The next action, not only a hook, resolves a killed restore first; a
/// second restore then runs normally.
#[test]
fn next_action_resolves_a_killed_restore() {
    let s = scene("crash-next-action", V35);
    s.restore_killed_at("started");
    let p = s.restore_params();
    let o = s
        .unit
        .run_action("restore", &[p[0].as_str(), p[1].as_str()]);
    o.assert_completed();
    assert!(
        o.logs
            .iter()
            .any(|l| l.contains("was interrupted after step started")
                && l.contains("the old data is back")),
        "{:?}",
        o.logs
    );
    s.assert_one_data_set(true, true);
    assert_eq!(list(&s.backups()).len(), 1);
    // A completed restore clears the note from the status.
    let hook = s.unit.run_hook("update-status");
    let msg = hook["status"]["message"].as_str().unwrap_or_default();
    assert!(!msg.contains("interrupted"), "{msg}");
}

/// Values that compress to almost nothing: a big db, a small archive.
fn fill_compressible(unit: &Unit, mib: usize) {
    let value = vec![b'z'; 256 * 1024];
    for i in 0..mib * 4 {
        unit.put_stdin(&format!("/bulk/{i:05}"), &value);
    }
}

/// The charm's up-front free-space floor: no etcd db compresses better
/// than 8:1, so a target with less than db/8 free is refused at once
/// (snapshot `MAX_RATIO`, restore `MAX_BACKUP_RATIO`).
const FLOOR_RATIO: u64 = 8;
const PAGE: u64 = 4096;

/// What a snapshot of the unit's data makes on this machine now: etcd's
/// db size and the archive's bytes (the archive is removed again).
fn measure_snapshot(unit: &Unit, scratch: &Path) -> (u64, u64) {
    let o = unit.run_action("snapshot", &[&format!("target={}", scratch.display())]);
    o.assert_completed();
    let db: u64 = o.result("snapshot.db-size").parse().expect("db size");
    let bytes: u64 = o.result("snapshot.bytes").parse().expect("bytes");
    fs::remove_dir_all(scratch).expect("remove scratch");
    (db, bytes)
}

/// A filesystem size, page-aligned, that passes the up-front `floor` and
/// cannot hold `need` bytes: half way between. Panics, saying so, where
/// this machine's figures leave no such window (the test could then not
/// exercise the branch it means to).
fn between(floor: u64, need: u64, what: &str) -> u64 {
    let size = (floor + need) / 2 / PAGE * PAGE;
    assert!(
        size > floor + PAGE && size + 4 * PAGE < need,
        "{what}: no room between the up-front floor ({floor} bytes) and the {need} bytes the write needs on this machine"
    );
    size
}

/// A backup target that passes restore's up-front floor for the scene's
/// (filled) data and cannot hold its backup.
fn backup_window(s: &Scene) -> u64 {
    let db_file = fs::metadata(s.unit.data_dir().join("member/snap/db"))
        .expect("db file")
        .len();
    let (_, archive) = measure_snapshot(&s.unit, &s.t.path().join("measure"));
    between(db_file / FLOOR_RATIO, archive, "backup")
}

/// A target too small for the db is refused up front with the figures; one
/// that passes that check but fills mid-stream fails with ENOSPC and keeps
/// nothing. Both sizes derive from the db and archive this machine makes,
/// and the test says which branch each run took.
#[test]
fn snapshot_into_a_full_disk_leaves_nothing() {
    let t = TestDir::new("crash-snapshot-full");
    let unit = Unit::new(t.path(), &Etcd::get(V35), Spec::single(0, false));
    unit.start();
    unit.fill(6 << 20, 64 * 1024);
    let (db, archive) = measure_snapshot(&unit, &t.path().join("measure"));
    let floor = db / FLOOR_RATIO;

    let tiny_size = (floor / 2).max(PAGE) / PAGE * PAGE;
    assert!(tiny_size < floor, "db {db}: floor {floor}");
    let tiny = Tmpfs::mount(&t.path().join("tiny"), tiny_size);
    let o = unit.run_action("snapshot", &[&format!("target={}", tiny.0.display())]);
    o.assert_failed_with("not enough free space in");
    assert!(o.message.contains("is free"), "{}", o.message);
    assert_eq!(list(&tiny.0), Vec::<String>::new());
    println!(
        "branch taken: refused up front ({tiny_size}-byte target, db {db}, floor {floor}): {}",
        o.message
    );

    let small_size = between(floor, archive, "snapshot");
    let small = Tmpfs::mount(&t.path().join("small"), small_size);
    let o = unit.run_action("snapshot", &[&format!("target={}", small.0.display())]);
    o.assert_failed_with("No space left on device");
    assert!(
        !o.message.contains("not enough free space"),
        "{}",
        o.message
    );
    assert!(o.message.contains("no archive was kept"), "{}", o.message);
    assert_eq!(list(&small.0), Vec::<String>::new());
    println!(
        "branch taken: failed mid-stream ({small_size}-byte target, archive {archive}): {}",
        o.message
    );

    // etcd never noticed: it serves, and a snapshot elsewhere works.
    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("big").display())],
    );
    o.assert_completed();
}

/// The data dir's filesystem fills while restore stages the snapshot, or
/// clearly cannot hold etcd's restore: refused, etcd untouched, nothing
/// left beside the data dir; with room, the same restore succeeds.
#[test]
fn restore_staging_on_a_full_disk() {
    let t = TestDir::new("crash-staging-full");
    let etcd = Etcd::get(V35);
    let spec = Spec::single(0, false);
    let current = t.path().join("etcd-0/root/var/snap/etcd/current");
    let disk = Tmpfs::mount(&current, 512 << 20);
    let unit = Unit::new(t.path(), &etcd, spec);
    unit.start();
    fill_compressible(&unit, 12);
    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    o.assert_completed();
    let archive = o.result("snapshot.path").to_string();
    let db_bytes: u64 = o.result("snapshot.db-size").parse().expect("db size");
    assert!(db_bytes > 12 << 20, "{db_bytes}");
    unit.put("/old/key", "the-old-data-stays");
    let cluster = unit.status().0;
    let params = [
        format!("source={archive}"),
        format!("target={}", t.path().join("backups").display()),
    ];
    let params = [params[0].as_str(), params[1].as_str()];
    let untouched = |o: &support::Outcome| {
        assert!(o.message.contains("etcd was not touched"), "{}", o.message);
        assert_eq!(unit.status().0, cluster);
        assert_eq!(unit.get("/old/key").as_deref(), Some("the-old-data-stays"));
        assert_eq!(list(&current), ["etcd0.etcd"]);
    };

    // Room for the archive's bytes (the up-front check), not for the db
    // they expand to: fails while staging.
    let archive_bytes = fs::metadata(&archive).expect("archive").len();
    let room = between(archive_bytes, db_bytes, "staging");
    disk.resize(disk.used() + room);
    let o = unit.run_action("restore", &params);
    o.assert_failed_with("No space left on device");
    assert!(o.message.contains("cannot stage"), "{}", o.message);
    untouched(&o);
    println!("branch taken: filled while staging ({room} bytes free, archive {archive_bytes}, db {db_bytes})");

    // Room for the db, not for etcd's restore beside it (db + its WAL):
    // refused up front with the figures.
    disk.resize(disk.used() + db_bytes + (8 << 20));
    let o = unit.run_action("restore", &params);
    o.assert_failed_with("not enough free space for etcd's restore tool");
    untouched(&o);
    println!("branch taken: refused up front: {}", o.message);

    disk.resize(disk.used() + (400 << 20));
    let o = unit.run_action("restore", &params);
    o.assert_completed();
    assert_eq!(unit.get("/old/key"), None);
    assert_eq!(unit.get("/bulk/00000").map(|v| v.len()), Some(256 * 1024));
    drop(unit);
    drop(disk);
}

/// The backup target fills: clearly too small is refused before etcd is
/// touched; filling during the backup puts the old data back.
#[test]
fn restore_backup_into_a_full_disk() {
    let t = TestDir::new("crash-backup-full");
    let unit = Unit::new(t.path(), &Etcd::get(V35), Spec::single(0, false));
    unit.start();
    unit.put("/in/snapshot", "small-snapshot-value");
    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    o.assert_completed();
    let archive = o.result("snapshot.path").to_string();
    unit.fill(6 << 20, 64 * 1024);
    let cluster = unit.status().0;
    let before = keys(&unit);
    let source = format!("source={archive}");
    let parent = unit.data_dir().parent().expect("parent").to_path_buf();

    // The backup's floor is the old db file's size / 8; the backup itself
    // holds at least what a snapshot of the same data compresses to.
    let db_file = fs::metadata(unit.data_dir().join("member/snap/db"))
        .expect("db file")
        .len();
    let (_, archive) = measure_snapshot(&unit, &t.path().join("measure"));
    let floor = db_file / FLOOR_RATIO;
    let tiny_size = (floor / 2).max(PAGE) / PAGE * PAGE;
    let tiny = Tmpfs::mount(&t.path().join("tiny"), tiny_size);
    let o = unit.run_action(
        "restore",
        &[&source, &format!("target={}", tiny.0.display())],
    );
    o.assert_failed_with("needs at least");
    assert!(o.message.contains("etcd was not touched"), "{}", o.message);
    assert_eq!(list(&tiny.0), Vec::<String>::new());
    assert_eq!(keys(&unit), before);
    println!("branch taken: refused up front ({tiny_size}-byte target, db file {db_file})");

    // Passes the floor, cannot hold the compressed values.
    let small_size = between(floor, archive, "backup");
    let small = Tmpfs::mount(&t.path().join("small"), small_size);
    let o = unit.run_action(
        "restore",
        &[&source, &format!("target={}", small.0.display())],
    );
    o.assert_failed_with("the restore failed while backing up the old data");
    assert!(
        o.message.contains("No space left on device"),
        "{}",
        o.message
    );
    assert!(o.message.contains("the old data is back"), "{}", o.message);
    assert_eq!(list(&small.0), Vec::<String>::new());
    assert_eq!(unit.status().0, cluster);
    assert_eq!(keys(&unit), before);
    println!("branch taken: filled mid-backup ({small_size}-byte target, archive {archive})");
    // The restored data served clients for a moment: it is kept, named.
    let listed = list(&parent);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], "etcd0.etcd");
    assert!(
        listed[1].starts_with("etcd0.etcd.failed-restore-"),
        "{listed:?}"
    );
    assert!(o.message.contains(&listed[1]), "{}", o.message);
    assert!(parent.join(&listed[1]).join("member/snap/db").is_file());
    assert_eq!(mode(&parent.join(&listed[1])), 0o700);
}

/// The backup fails after the restored data was proven, and the action
/// is killed as it starts undoing: recovery goes on undoing (it never
/// "completes" a restore that was being rolled back), keeps the restored
/// data aside, and etcd serves the old data.
#[test]
fn killed_while_rolling_back_after_a_failed_backup() {
    let s = scene("crash-rolling-back", V35);
    s.unit.fill(6 << 20, 64 * 1024);
    let old = keys(&s.unit);
    let small = Tmpfs::mount(&s.t.path().join("small"), backup_window(&s));
    let o = s.unit.run_action_env(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            &format!("target={}", small.0.display()),
        ],
        &[(ABORT, "rolling-back")],
    );
    assert_eq!(o.exit_code, -9, "{o:?}");
    let text = fs::read_to_string(s.journal()).expect("journal");
    assert!(text.contains("\"rolling_back\": true"), "{text}");
    let hook = s.unit.run_hook("update-status");
    let msg = hook["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("the old data is back"), "{msg}");
    assert!(msg.contains("the restored data is kept in"), "{msg}");
    assert_eq!(keys(&s.unit), old);
    assert_eq!(s.unit.status().0, s.cluster);
    assert!(!s.journal().exists());
    assert_eq!(list(&small.0), Vec::<String>::new());
    let listed = list(&s.parent());
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[1].starts_with("etcd0.etcd.failed-restore-"),
        "{listed:?}"
    );
}

/// A restore killed before it began its journal (while etcd's restore
/// tool ran) leaves a staging copy of the db; the next hook removes it.
#[test]
fn stale_staging_is_removed() {
    let s = scene("crash-stale-staging", V35);
    let stale = s.parent().join("etcd0.etcd.restore-2026-01-01-00.00.00");
    fs::create_dir_all(stale.join("data")).expect("stale");
    fs::write(stale.join("db"), b"a copy nobody needs").expect("db");
    let hook = s.unit.run_hook("update-status");
    assert_eq!(hook["exit_code"], 0);
    assert!(!stale.exists());
    s.assert_one_data_set(false, false);
}

fn restore_across(from: &'static str, to: &'static str) -> (TestDir, Unit, support::Outcome) {
    let t = TestDir::new(&format!("crash-version-{from}-{to}"));
    let a = Unit::new(t.path(), &Etcd::get(from), Spec::single(0, false));
    a.start();
    for i in 0..10 {
        a.put(&format!("/v/{i}"), &format!("written-on-{from}-{i}"));
    }
    let o = a.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    o.assert_completed();
    let archive = o.result("snapshot.path").to_string();
    drop(a);
    let b = Unit::new(t.path(), &Etcd::get(to), Spec::single(1, false));
    b.start();
    b.put("/b/own", "unit-b-own-data");
    let o = b.run_action(
        "restore",
        &[
            &format!("source={archive}"),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    (t, b, o)
}

#[test]
fn a_3_4_snapshot_restores_on_3_5() {
    let (_t, b, o) = restore_across(V34, V35);
    o.assert_completed();
    for i in 0..10 {
        assert_eq!(
            b.get(&format!("/v/{i}")),
            Some(format!("written-on-{V34}-{i}"))
        );
    }
    assert_eq!(b.get("/b/own"), None);
    b.wait_healthy(Duration::from_secs(10));
}

#[test]
fn a_3_5_snapshot_is_refused_on_3_4() {
    let (t, b, o) = restore_across(V35, V34);
    o.assert_failed_with("etcd does not support moving data to an older minor version");
    assert!(o.message.contains("3.5.16"), "{}", o.message);
    assert!(o.message.contains("etcd was not touched"), "{}", o.message);
    assert_eq!(b.get("/b/own").as_deref(), Some("unit-b-own-data"));
    assert_eq!(list(&t.path().join("backups")), Vec::<String>::new());
    let parent: &Path = &b.data_dir();
    assert_eq!(list(parent.parent().expect("parent")), ["etcd1.etcd"]);
}

/// Every path under `dirs` with its mode.
fn modes(dirs: &[&Path]) -> BTreeMap<PathBuf, u32> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, u32>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            out.insert(
                p.clone(),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            );
            if meta.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        if let Ok(meta) = fs::metadata(d) {
            out.insert(
                d.to_path_buf(),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            );
        }
        walk(d, &mut out);
    }
    out
}

/// Snapshot, restore with a backup, and a killed restore resolved by a
/// hook: every file and dir that appeared is private to its owner (0600,
/// 0700), the state dir, lock, journal and note included.
#[test]
fn every_path_the_charm_creates_is_private() {
    let s = scene("crash-modes", V35);
    let snaps = s.t.path().join("snaps");
    let dirs = [s.unit.root.as_path(), snaps.as_path(), &s.backups()];
    let before = modes(&dirs);
    s.restore_killed_at("checked");
    let p = s.restore_params();
    let mid = modes(&dirs);
    let hook = s.unit.run_hook("update-status");
    assert_eq!(hook["exit_code"], 0);
    s.unit
        .run_action("snapshot", &[&format!("target={}", snaps.display())])
        .assert_completed();
    s.unit
        .run_action("restore", &[p[0].as_str(), p[1].as_str()])
        .assert_completed();
    let after = modes(&dirs);
    let mut checked = 0;
    for (path, mode) in mid.iter().chain(after.iter()) {
        if before.contains_key(path) {
            continue;
        }
        checked += 1;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
    let journal = s.journal();
    let note = s.unit.root.join("var/lib/etcd-charm/restore-recovery");
    for must in [
        &journal,
        &s.unit.root.join("var/lib/etcd-charm/action.lock"),
    ] {
        assert!(mid.contains_key(must), "{} was checked", must.display());
    }
    assert!(
        after.contains_key(&s.backups()) && !after.contains_key(&note),
        "the backups dir exists; a completed restore cleared the note"
    );
    assert!(checked > 10, "only {checked} new paths");
}
