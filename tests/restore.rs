//! The restore action end to end, against real etcd servers: the happy
//! paths, every refusal (nothing touched), and injected faults (the old
//! data back and serving).

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{list, mode, read_archive, sha256_file, Etcd, Spec, TestDir, Unit};

const V34: &str = "3.4.23";
const V35: &str = "3.5.16";
const V351: &str = "3.5.1";

fn snapshot(unit: &Unit, target: &Path) -> PathBuf {
    let o = unit.run_action("snapshot", &[&format!("target={}", target.display())]);
    o.assert_completed();
    PathBuf::from(o.result("snapshot.path"))
}

/// Every path under `dir`, relative, sorted: what "touched nothing" means.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn attach(unit: &Unit, file: Option<&Path>) {
    let mut cmd = Command::new("python3");
    cmd.arg(support::fakejuju())
        .arg("resource")
        .arg(&unit.dir)
        .arg("snapshot");
    if let Some(f) = file {
        cmd.arg(f);
    }
    assert!(cmd.status().expect("fakejuju resource").success());
}

fn stop_events(unit: &Unit) -> usize {
    fs::read_to_string(unit.dir.join("svc/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"stop\""))
        .count()
}

fn member_count(unit: &Unit) -> usize {
    let out = unit.etcdctl(&["member", "list"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn token(unit: &Unit) -> String {
    let c = etcd_charm::etcd::EtcdConfig::load(&unit.conf).expect("config");
    c.initial_cluster_token.unwrap_or_default()
}

/// A unit with keys K2 = /b/*, and a snapshot with keys K1 = /a/* taken on
/// another unit.
struct Scene {
    t: TestDir,
    etcd: Etcd,
    unit: Unit,
    archive: PathBuf,
    snap_revision: i64,
}

fn scene(name: &str, version: &'static str) -> Scene {
    let t = TestDir::new(name);
    let etcd = Etcd::get(version);
    let a = Unit::new(t.path(), &etcd, Spec::single(0, false));
    a.start();
    for i in 0..20 {
        a.put(&format!("/a/{i}"), &format!("from-a-{i}"));
    }
    let (_, _, snap_revision) = a.status();
    let archive = snapshot(&a, &t.path().join("snaps"));
    drop(a);
    let unit = Unit::new(t.path(), &etcd, Spec::single(1, false));
    unit.start();
    for i in 0..5 {
        unit.put(&format!("/b/{i}"), &format!("from-b-{i}"));
    }
    Scene {
        t,
        etcd,
        unit,
        archive,
        snap_revision,
    }
}

fn restore_ok(version: &'static str, via_source: bool) {
    let s = scene(&format!("restore-{version}-{via_source}"), version);
    let unit = &s.unit;
    let (old_cluster, _, _) = unit.status();
    let old_token = token(unit);
    let backups = s.t.path().join("backups");
    let source_param = format!("source={}", s.archive.display());
    let target_param = format!("target={}", backups.display());
    let mut params = vec![target_param.as_str()];
    if via_source {
        params.push(&source_param);
    } else {
        attach(unit, Some(&s.archive));
    }
    let o = unit.run_action("restore", &params);
    o.assert_completed();

    // B serves K1, not K2, as a new one-member cluster.
    for i in 0..20 {
        assert_eq!(unit.get(&format!("/a/{i}")), Some(format!("from-a-{i}")));
    }
    assert_eq!(unit.get("/b/0"), None);
    let (new_cluster, _, revision) = unit.status();
    assert_ne!(new_cluster, old_cluster);
    assert_eq!(member_count(unit), 1);
    // The member keeps its name and peer URL from the config.
    let members = unit.etcdctl(&["member", "list"]);
    let line = String::from_utf8_lossy(&members.stdout).to_string();
    assert!(line.contains(", etcd1, "), "{line}");
    assert!(line.contains(&unit.spec.peer_url()), "{line}");
    assert!(
        revision >= s.snap_revision,
        "{revision} < {}",
        s.snap_revision
    );
    assert_eq!(o.result("restore.cluster-id"), format!("{new_cluster:x}"));
    assert_eq!(
        o.result("restore.previous-cluster-id"),
        format!("{old_cluster:x}")
    );
    assert_eq!(o.result("restore.revision"), revision.to_string());
    let expected_source = if via_source {
        s.archive.display().to_string()
    } else {
        unit.dir
            .join("juju/resources/snapshot/snapshot.tar.gz")
            .display()
            .to_string()
    };
    assert_eq!(o.result("restore.source"), expected_source);
    assert_ne!(token(unit), old_token, "the config carries the new token");

    // The old data: backed up (0600, checksum), then gone from beside the
    // data dir along with the staging dir.
    let backup = PathBuf::from(o.result("backup.path"));
    assert_eq!(backup.parent(), Some(backups.as_path()));
    assert!(list(&backups)[0].starts_with("etcd-data-"));
    assert_eq!(list(&backups).len(), 1);
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(mode(&backups), 0o700);
    assert_eq!(o.result("backup.sha256"), sha256_file(&backup));
    assert_eq!(
        list(unit.data_dir().parent().expect("parent")),
        ["etcd1.etcd"]
    );

    // Restoring the backup with etcd's own tool gives K2 back.
    let entries = read_archive(&backup);
    let db = entries
        .iter()
        .find(|e| e.0 == "member/snap/db")
        .expect("member/snap/db in the backup");
    let db_path = s.t.path().join("old-db");
    fs::write(&db_path, &db.2).expect("write");
    let spec = Spec::single(5, false);
    let old = Unit::new(s.t.path(), &s.etcd, spec.clone());
    let out = s.etcd.snapshot_cmd(&[
        "restore",
        db_path.to_str().expect("utf8"),
        "--skip-hash-check",
        "--name",
        &spec.member,
        "--initial-cluster",
        &format!("{}={}", spec.member, spec.peer_url()),
        "--initial-advertise-peer-urls",
        &spec.peer_url(),
        "--data-dir",
        old.data_dir().to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    old.start();
    for i in 0..5 {
        assert_eq!(old.get(&format!("/b/{i}")), Some(format!("from-b-{i}")));
    }
    assert!(o.logs.len() <= 10, "{:?}", o.logs);
}

#[test]
fn restore_from_resource_3_4() {
    restore_ok(V34, false);
}

#[test]
fn restore_from_resource_3_5() {
    restore_ok(V35, false);
}

#[test]
fn restore_from_source_path_3_4() {
    restore_ok(V34, true);
}

#[test]
fn restore_from_source_path_3_5() {
    restore_ok(V35, true);
}

fn refuses_three_members(version: &'static str) {
    let t = TestDir::new(&format!("restore-three-{version}"));
    let etcd = Etcd::get(version);
    let units = support::start_cluster(t.path(), &etcd, 3);
    units[0].put("/keep", "me");
    let archive = snapshot(&units[0], &t.path().join("snaps"));
    let (cluster, _, _) = units[0].status();
    let before: Vec<Vec<String>> = units
        .iter()
        .map(|u| tree(&u.root.join("var/snap/etcd/current")))
        .collect();

    attach(&units[1], Some(&archive));
    let backups = t.path().join("backups");
    let o = units[1].run_action("restore", &[&format!("target={}", backups.display())]);
    o.assert_failed_with("the cluster has 3 members (etcd0 http://127.0.0.1:");
    for name in [
        "etcd1",
        "etcd2",
        "deploy a new single-unit etcd application",
        "juju add-unit",
    ] {
        assert!(o.message.contains(name), "{}", o.message);
    }
    for (u, before) in units.iter().zip(&before) {
        assert_eq!(stop_events(u), 0, "etcd was never stopped");
        assert_eq!(&tree(&u.root.join("var/snap/etcd/current")), before);
        assert_eq!(u.get("/keep").as_deref(), Some("me"));
        assert_eq!(u.status().0, cluster);
    }
    assert!(!backups.exists(), "no backup target created");

    // With etcd down, the config's initial-cluster still says three.
    units[1].kill_etcd();
    let o = units[1].run_action("restore", &[&format!("target={}", backups.display())]);
    o.assert_failed_with("the cluster has 3 members");
    assert_eq!(
        tree(&units[1].root.join("var/snap/etcd/current")),
        before[1]
    );
}

#[test]
fn refuses_a_three_member_cluster_3_4() {
    refuses_three_members(V34);
}

#[test]
fn refuses_a_three_member_cluster_3_5() {
    refuses_three_members(V35);
}

#[test]
fn refuses_when_etcd_is_down_and_peers_are_related() {
    let s = scene("restore-peers", V35);
    attach(&s.unit, Some(&s.archive));
    fs::write(
        s.unit.dir.join("juju/relations.json"),
        r#"{"cluster": {"cluster:0": ["etcd/2"]}}"#,
    )
    .expect("relations");
    s.unit.kill_etcd();
    let before = tree(&s.unit.root.join("var/snap"));
    let target = format!("target={}", s.t.path().join("backups").display());
    let o = s.unit.run_action("restore", &[&target]);
    o.assert_failed_with("the cluster has 2 members (etcd1, etcd/2)");
    assert_eq!(tree(&s.unit.root.join("var/snap")), before);
}

/// Old Python charm archives (raw db, no trailer) and bare etcdctl files.
fn other_formats(version: &'static str) {
    let s = scene(&format!("restore-formats-{version}"), version);
    // A raw copy of member/snap/db from a stopped member, tarred as the old
    // charm did (./db).
    let donor = Unit::new(s.t.path(), &s.etcd, Spec::single(3, false));
    donor.start();
    donor.put("/old/charm", "raw-db");
    donor.systemctl("stop");
    let raw = s.t.path().join("raw");
    fs::create_dir_all(&raw).expect("mkdir");
    fs::copy(donor.data_dir().join("member/snap/db"), raw.join("db")).expect("copy db");
    let old_archive = s.t.path().join("etcd-snapshot-2020-01-01-00.00.00.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&old_archive)
        .arg("-C")
        .arg(&raw)
        .arg("./db")
        .status()
        .expect("tar");
    assert!(ok.success());
    let o = s.unit.run_action(
        "restore",
        &[
            &format!("source={}", old_archive.display()),
            "skip-backup=true",
        ],
    );
    o.assert_completed();
    assert_eq!(
        o.result("restore.kind"),
        "old etcd charm snapshot archive (raw db)"
    );
    assert_eq!(s.unit.get("/old/charm").as_deref(), Some("raw-db"));

    // A bare `etcdctl snapshot save` file.
    s.unit.put("/bare", "file");
    let bare = s.t.path().join("bare.db");
    let out = s
        .unit
        .etcdctl(&["snapshot", "save", bare.to_str().expect("utf8")]);
    assert!(out.status.success(), "{out:?}");
    s.unit.put("/bare", "changed-after");
    let o = s.unit.run_action(
        "restore",
        &[&format!("source={}", bare.display()), "skip-backup=true"],
    );
    o.assert_completed();
    assert_eq!(o.result("restore.kind"), "etcdctl snapshot file");
    assert_eq!(s.unit.get("/bare").as_deref(), Some("file"));

    // The same file cut at a 512-byte boundary inside the db: it looks
    // like a raw db with no trailer, but its bbolt meta page declares more
    // than it holds. Refused before etcd is touched.
    let bytes = fs::read(&bare).expect("bare");
    let cut_at = (bytes.len() as u64 - 32) / 512 * 512 - 4096;
    let cut = s.t.path().join("cut.db");
    fs::write(&cut, &bytes[..cut_at as usize]).expect("write cut");
    let o = refused(&s, &cut, "it is truncated");
    assert!(o.message.contains("etcd was not touched"), "{}", o.message);
    assert_eq!(s.unit.get("/bare").as_deref(), Some("file"));

    // A v2-store backup: a tar.gz of a data dir (member/wal, member/snap).
    let v2 = s.t.path().join("v2.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&v2)
        .arg("-C")
        .arg(donor.data_dir())
        .arg("member")
        .status()
        .expect("tar");
    assert!(ok.success());
    refused(&s, &v2, "v2-store backup");
}

/// Restores `source` on the scene's unit, which refuses it with `needle`
/// and touches nothing under `var/snap`.
fn refused(s: &Scene, source: &Path, needle: &str) -> support::Outcome {
    let before = tree(&s.unit.root.join("var/snap"));
    let o = s.unit.run_action(
        "restore",
        &[
            &format!("source={}", source.display()),
            &format!("target={}", s.t.path().join("backups").display()),
        ],
    );
    o.assert_failed_with(needle);
    assert_eq!(tree(&s.unit.root.join("var/snap")), before);
    o
}

#[test]
fn old_charm_and_bare_snapshot_files_3_4() {
    other_formats(V34);
}

#[test]
fn old_charm_and_bare_snapshot_files_3_5() {
    other_formats(V35);
}

/// A tar header written byte by byte, so it can say what the tar crate's
/// builder refuses to (`..`, absolute paths, absurd sizes).
fn raw_header(name: &str, kind: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000600");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{size:011o}");
    h[124..124 + size.len()].copy_from_slice(size.as_bytes());
    h[136..147].copy_from_slice(b"14000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let sum = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(sum.as_bytes());
    h
}

fn gz(path: &Path, parts: &[&[u8]]) {
    let f = fs::File::create(path).expect("create");
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    for p in parts {
        e.write_all(p).expect("write");
    }
    e.finish().expect("finish");
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

fn refuses_bad_archives(version: &'static str) {
    let s = scene(&format!("restore-bad-{version}"), version);
    let unit = &s.unit;
    let dir = s.t.path().join("bad");
    fs::create_dir_all(&dir).expect("mkdir");
    let good = read_archive(&s.archive);
    let db = good[0].2.clone();
    let manifest = good[1].2.clone();
    let end = [0u8; 1024];
    let archive_with = |name: &str, db: &[u8]| {
        let path = dir.join(name);
        gz(
            &path,
            &[
                &raw_header("db", b'0', db.len() as u64, ""),
                &padded(db),
                &raw_header("snapshot.json", b'0', manifest.len() as u64, ""),
                &padded(&manifest),
                &end,
            ],
        );
        path
    };

    let mut flipped = db.clone();
    flipped[db.len() / 2] ^= 0x01;
    let mut bad_trailer = db.clone();
    let n = bad_trailer.len();
    bad_trailer[n - 1] ^= 0xff;
    let truncated = dir.join("truncated.tar.gz");
    let whole = fs::read(&s.archive).expect("read");
    fs::write(&truncated, &whole[..whole.len() * 2 / 3]).expect("write");
    let mut cases: Vec<(PathBuf, &str)> = vec![
        (
            archive_with("flipped.tar.gz", &flipped),
            "fails its SHA-256 check",
        ),
        (
            archive_with("trailer.tar.gz", &bad_trailer),
            "fails its SHA-256 check",
        ),
        (truncated, "damaged"),
    ];
    let entry = |name: &str, h: [u8; 512], body: &[u8]| {
        let path = dir.join(name);
        gz(&path, &[&h, &padded(body), &end]);
        path
    };
    cases.push((
        entry("dotdot.tar.gz", raw_header("../db", b'0', 3, ""), b"abc"),
        "unsafe entry \"../db\"",
    ));
    cases.push((
        entry("abs.tar.gz", raw_header("/etc/db", b'0', 3, ""), b"abc"),
        "unsafe entry \"/etc/db\"",
    ));
    cases.push((
        entry("link.tar.gz", raw_header("db", b'2', 0, "/etc/shadow"), b""),
        "symbolic link",
    ));
    cases.push((
        entry("dev.tar.gz", raw_header("db", b'3', 0, ""), b""),
        "character device",
    ));
    cases.push((
        entry("huge.tar.gz", raw_header("db", b'0', 1 << 40, ""), b"abc"),
        "more than an archive of",
    ));
    cases.push((
        entry(
            "other.tar.gz",
            raw_header("etc/passwd", b'0', 3, ""),
            b"abc",
        ),
        "unexpected entry",
    ));
    let junk = dir.join("junk.bin");
    fs::write(&junk, b"this is not a snapshot at all").expect("write");
    cases.push((
        junk,
        "neither a tar.gz snapshot archive nor an etcd snapshot db",
    ));

    let (cluster, _, _) = unit.status();
    let current = unit.root.join("var/snap/etcd/current");
    let before = tree(&current);
    let backups = s.t.path().join("backups");
    for (path, needle) in &cases {
        let o = unit.run_action(
            "restore",
            &[
                &format!("source={}", path.display()),
                &format!("target={}", backups.display()),
            ],
        );
        o.assert_failed_with(needle);
        assert!(o.message.contains("etcd was not touched"), "{}", o.message);
        assert_eq!(tree(&current), before, "{}", path.display());
        assert!(
            list(&backups).is_empty(),
            "no backup for {}",
            path.display()
        );
    }

    // No snapshot supplied: missing, then zero-byte resource.
    let o = unit.run_action(
        "restore",
        &[&format!("target={}", dir.join("backups").display())],
    );
    o.assert_failed_with("juju attach-resource etcd snapshot=");
    let empty = dir.join("empty.tar.gz");
    fs::write(&empty, b"").expect("write");
    attach(unit, Some(&empty));
    let o = unit.run_action(
        "restore",
        &[&format!("target={}", dir.join("backups").display())],
    );
    o.assert_failed_with("juju attach-resource etcd snapshot=");

    assert_eq!(stop_events(unit), 0, "etcd was never stopped");
    assert_eq!(unit.status().0, cluster);
    assert_eq!(unit.get("/b/0").as_deref(), Some("from-b-0"));
    assert_eq!(tree(&current), before);
}

#[test]
fn refuses_bad_archives_without_touching_etcd_3_4() {
    refuses_bad_archives(V34);
}

#[test]
fn refuses_bad_archives_without_touching_etcd_3_5() {
    refuses_bad_archives(V35);
}

/// After a failed restore: the old data, the old cluster, etcd running,
/// and nothing left beside the data dir.
fn assert_rolled_back(s: &Scene, cluster: u64, before: &[String], o: &support::Outcome) {
    assert!(
        o.message
            .contains("the old data is back and etcd serves it as cluster"),
        "{}",
        o.message
    );
    assert!(o.message.contains(&format!("{cluster:x}")), "{}", o.message);
    assert_eq!(s.unit.status().0, cluster);
    for i in 0..5 {
        assert_eq!(s.unit.get(&format!("/b/{i}")), Some(format!("from-b-{i}")));
    }
    assert_eq!(s.unit.get("/a/0"), None);
    assert_eq!(tree(&s.unit.root.join("var/snap/etcd/current")), before);
}

fn faults(version: &'static str) {
    let s = scene(&format!("restore-faults-{version}"), version);
    let unit = &s.unit;
    attach(unit, Some(&s.archive));
    let (cluster, _, _) = unit.status();
    let old_token = token(unit);
    let before = tree(&unit.root.join("var/snap/etcd/current"));
    let backups = s.t.path().join("backups");
    let target = format!("target={}", backups.display());

    // systemctl refuses to start etcd on the restored data.
    fs::write(unit.dir.join("svc/refuse-start"), "1").expect("fault");
    let o = unit.run_action("restore", &[&target]);
    o.assert_failed_with("the restore failed while starting etcd on the restored data");
    assert_rolled_back(&s, cluster, &before, &o);
    assert_eq!(token(unit), old_token);
    assert!(list(&backups).is_empty());

    // etcd starts but never becomes healthy; meanwhile a snapshot is
    // refused at once on the unit's lock.
    fs::write(unit.dir.join("svc/start-unhealthy"), "1").expect("fault");
    let child = unit.spawn_action("restore", &[&target, "start-timeout=8"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stop_events(unit) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "restore never stopped etcd"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let snap = unit.run_action(
        "snapshot",
        &[&format!("target={}", s.t.path().join("x").display())],
    );
    snap.assert_failed_with("another restore (pid");
    assert!(!s.t.path().join("x").exists());
    let o = Unit::finish_action(child, Duration::from_secs(120));
    o.assert_failed_with("did not become healthy within 8 seconds");
    assert_rolled_back(&s, cluster, &before, &o);

    // etcd's restore tool fails: nothing was stopped at all.
    let stops = stop_events(unit);
    let tool = if unit.etcd.bin.join("etcdutl").exists() {
        "etcdutl"
    } else {
        "etcdctl"
    };
    let real = unit.etcd.tool(tool);
    let fake = unit.dir.join("bin").join(tool);
    fs::remove_file(&fake).expect("rm link");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$2\" = restore ] && [ \"$3\" != --help ]; then echo 'Error: disk on fire' >&2; exit 1; fi\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .expect("write fake tool");
    Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .expect("chmod");
    let o = unit.run_action("restore", &[&target]);
    o.assert_failed_with("snapshot restore failed: Error: disk on fire");
    assert!(o.message.contains("etcd was not touched"), "{}", o.message);
    assert_eq!(stop_events(unit), stops);
    assert_eq!(unit.status().0, cluster);
    assert_eq!(tree(&unit.root.join("var/snap/etcd/current")), before);
    assert!(list(&backups).is_empty());
}

#[test]
fn faults_put_the_old_data_back_3_4() {
    faults(V34);
}

#[test]
fn faults_put_the_old_data_back_3_5() {
    faults(V35);
}

#[test]
fn bump_revision_on_3_5_16() {
    let s = scene("restore-bump", V35);
    let o = s.unit.run_action(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            "bump-revision=1000000000",
            "skip-backup=true",
        ],
    );
    o.assert_completed();
    let (_, _, revision) = s.unit.status();
    assert!(revision >= s.snap_revision + 1_000_000_000, "{revision}");
    assert_eq!(s.unit.get("/a/3").as_deref(), Some("from-a-3"));
}

fn bump_refused(version: &'static str) {
    let s = scene(&format!("restore-nobump-{version}"), version);
    let before = tree(&s.unit.root.join("var/snap"));
    let o = s.unit.run_action(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            &format!("target={}", s.t.path().join("backups").display()),
            "bump-revision=1000",
        ],
    );
    o.assert_failed_with("bump-revision needs an etcd restore tool with --bump-revision");
    assert_eq!(tree(&s.unit.root.join("var/snap")), before);
    assert_eq!(stop_events(&s.unit), 0);
    assert_eq!(s.unit.get("/b/1").as_deref(), Some("from-b-1"));
}

#[test]
fn bump_revision_refused_on_3_4_23() {
    bump_refused(V34);
}

#[test]
fn bump_revision_refused_on_3_5_1() {
    bump_refused(V351);
}

#[test]
fn skip_backup_writes_no_backup() {
    let s = scene("restore-skip", V35);
    let backups = s.t.path().join("backups");
    let o = s.unit.run_action(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            &format!("target={}", backups.display()),
            "skip-backup=true",
        ],
    );
    o.assert_completed();
    assert!(!backups.exists());
    assert!(!o.results.contains_key("backup.path"));
    assert_eq!(
        list(s.unit.data_dir().parent().expect("parent")),
        ["etcd1.etcd"]
    );
    assert_eq!(s.unit.get("/a/1").as_deref(), Some("from-a-1"));
}

/// What a failed restore says on a unit that had no data before it.
const NO_OLD_DATA: &str = "this unit had no data before the restore, so the restored data stays in";

/// A unit with an etcd config and no data dir yet: a restore whose data
/// etcd will not serve says what is really on disk (there is no "old
/// data" to bring back), and the status says whether etcd runs.
#[test]
fn a_unit_without_old_data_is_told_the_truth() {
    let s = scene("restore-no-old-data", V35);
    let fresh = Unit::new(s.t.path(), &s.etcd, Spec::single(2, false));
    assert!(!fresh.data_dir().exists());
    let source = format!("source={}", s.archive.display());

    // The restored etcd starts but never serves; undoing it puts the
    // config back and etcd then serves the restored data, the only data.
    fs::write(fresh.dir.join("svc/start-unhealthy"), "1").expect("fault");
    let o = fresh.run_action("restore", &[&source, "skip-backup=true", "start-timeout=8"]);
    o.assert_failed_with("did not become healthy within 8 seconds")
        .assert_failed_with(NO_OLD_DATA)
        .assert_failed_with("etcd serves it as cluster");
    assert!(!o.message.contains("old data is back"), "{}", o.message);
    assert_eq!(fresh.get("/a/3").as_deref(), Some("from-a-3"));
    assert_eq!(fresh.status_line().0, "active");
    let statuses = fresh.calls_of("status-set");
    assert!(
        statuses
            .iter()
            .any(|a| a[0] == "maintenance" && a.join(" ").contains("etcd is stopped")),
        "{statuses:?}"
    );
}

/// etcd will not start at all, on the restored data nor after the undo:
/// the undo still finishes (data and config final, the journal gone, etcd
/// enabled at boot again), says what is on disk, and the unit is
/// `blocked` with why etcd is not serving, until etcd starts.
#[test]
fn a_restore_that_cannot_bring_etcd_back_blocks() {
    let s = scene("restore-cannot-start", V35);
    let fresh = Unit::new(s.t.path(), &s.etcd, Spec::single(2, false));
    fs::write(fresh.dir.join("svc/refuse-start"), "2").expect("fault");
    let o = fresh.run_action(
        "restore",
        &[
            &format!("source={}", s.archive.display()),
            "skip-backup=true",
        ],
    );
    o.assert_failed_with("the restore failed while starting etcd on the restored data")
        .assert_failed_with(NO_OLD_DATA)
        .assert_failed_with("but etcd did not start on it");
    assert!(!o.message.contains("old data is back"), "{}", o.message);
    let (status, msg) = fresh.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("this unit's etcd is not serving"), "{msg}");
    let parent = fresh.data_dir().parent().expect("parent").to_path_buf();
    assert_eq!(list(&parent), ["etcd2.etcd"], "no journal, no staging");
    assert!(fresh.is_enabled(), "etcd starts at boot again");
    // The fault is spent: once etcd starts, it serves the restored data.
    fresh.start();
    let hook = fresh.run_hook("update-status");
    assert_eq!(hook["status"]["status"], "active", "{hook}");
    assert_eq!(fresh.get("/a/3").as_deref(), Some("from-a-3"));
}

/// A snapshot taken while etcd's NOSPACE alarm was raised carries the
/// alarm in its db: restoring it completes (the data is what was asked
/// for) and the status says NOSPACE. An undo onto such data finishes too:
/// the alarm is reported, never a reason to keep the journal.
#[test]
fn alarms_neither_fail_a_restore_nor_trap_its_undo() {
    let t = TestDir::new("restore-alarm");
    let unit = Unit::out_of_space(t.path(), &Etcd::get(V35), Spec::single(0, false));
    let archive = snapshot(&unit, &t.path().join("snaps"));
    let source = format!("source={}", archive.display());
    let target = format!("target={}", t.path().join("backups").display());

    let o = unit.run_action("restore", &[&source, &target, "start-timeout=20"]);
    o.assert_completed();
    assert!(o.result("restore.alarms").contains("NOSPACE"), "{o:?}");
    let (status, msg) = unit.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("NOSPACE"), "{msg}");
    assert_eq!(unit.get("/kept").as_deref(), Some("before-the-alarm"));

    fs::write(unit.dir.join("svc/refuse-start"), "1").expect("fault");
    let o = unit.run_action("restore", &[&source, &target, "start-timeout=20"]);
    o.assert_failed_with("the restore failed while starting etcd on the restored data");
    assert!(o.message.contains("the old data is back"), "{}", o.message);
    assert!(o.message.contains("NOSPACE"), "{}", o.message);
    let parent = unit.data_dir().parent().expect("parent").to_path_buf();
    assert_eq!(list(&parent), ["etcd0.etcd"], "no journal, no staging");
    assert!(unit.is_enabled(), "etcd starts at boot again");
    assert_eq!(unit.get("/kept").as_deref(), Some("before-the-alarm"));
}
