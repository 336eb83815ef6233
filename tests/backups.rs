//! Backups in object stores, against moto's S3 server on loopback: the
//! s3-credentials relation as s3-integrator fills it, snapshot to the store
//! in the same pass as the local archive, list-backups, restore by ID, and
//! every fault an operator may meet on the way.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use support::stores::{Proxy, S3Server, BUCKET};
use support::{sha256_file, Etcd, Model, TestDir, Unit};

const V35: &str = "3.5.16";
const INTEGRATOR: &str = "s3-integrator/0";
const STATE_DIR: &str = "var/lib/etcd-charm";

/// A one-unit model related to an s3-integrator that answered with
/// `endpoint` (the server, or a proxy in front of it).
fn one_unit_with_store(t: &TestDir, s3: &S3Server, endpoint: &str) -> (Model, String) {
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let rid = model.relate("s3-credentials", INTEGRATOR);
    // The leader asks for a bucket; the integrator answers only then.
    let asked = model.relation_data(&rid, "etcd");
    assert_eq!(
        asked.get("bucket").map(String::as_str),
        Some("etcd-backups")
    );
    model.remote_set(
        &rid,
        INTEGRATOR,
        &s3.integrator_data(endpoint, "/team/"),
        true,
    );
    model.unit("etcd/0").remember_secret(&s3.secret);
    (model, rid)
}

fn snap(u: &Unit, t: &TestDir, extra: &[&str]) -> support::Outcome {
    let target = format!("target={}", t.path().join("snaps").display());
    let mut params = vec![target.as_str()];
    params.extend_from_slice(extra);
    u.run_action("snapshot", &params)
}

fn record(s3: &S3Server, key: &str, t: &TestDir) -> serde_json::Value {
    let out = t.path().join("record.json");
    s3.admin(&[
        "get",
        BUCKET,
        &format!("{key}.json"),
        &out.display().to_string(),
    ]);
    serde_json::from_slice(&fs::read(out).expect("record")).expect("record json")
}

#[test]
fn snapshots_go_to_s3_are_listed_and_restore_by_id() {
    let t = TestDir::new("s3-roundtrip");
    let s3 = S3Server::start(t.path());
    let (model, _) = one_unit_with_store(&t, &s3, &s3.endpoint());
    let u = model.unit("etcd/0");

    // The store's settings are kept for actions and the scheduled run,
    // private to root.
    let state = u.root.join(STATE_DIR).join("stores.json");
    assert_eq!(support::mode(&state) & 0o777, 0o600);

    u.put("/before/first", "in-every-backup");
    let first = snap(u, &t, &[]);
    first.assert_completed();
    // Default destination with a store related: both, in one pass.
    assert_eq!(first.result("snapshot.destination"), "both");
    let id = first.result("snapshot.name").to_string();
    let key = format!("team/etcd/{id}");
    assert_eq!(first.result("store.key"), key);
    assert_eq!(first.result("store.url"), format!("s3://{BUCKET}/team"));
    let local = std::path::PathBuf::from(first.result("snapshot.path"));
    assert_eq!(
        first.result("store.bytes"),
        fs::metadata(&local).expect("local").len().to_string()
    );
    // The object is byte for byte the local archive, its record says so,
    // and its metadata carries the manifest's fields.
    let got = t.path().join("got.tar.gz");
    s3.admin(&["get", BUCKET, &key, &got.display().to_string()]);
    assert_eq!(sha256_file(&got), sha256_file(&local));
    assert_eq!(sha256_file(&got), first.result("snapshot.sha256"));
    let rec = record(&s3, &key, &t);
    assert_eq!(rec["sha256"], first.result("snapshot.sha256"));
    assert_eq!(rec["archive"], id);
    assert_eq!(
        rec["manifest"]["revision"].to_string(),
        first.result("snapshot.revision")
    );
    let head = s3.admin(&["head", BUCKET, &key]);
    assert_eq!(head["metadata"]["etcd-version"], V35);
    assert_eq!(
        head["metadata"]["cluster-id"],
        first.result("snapshot.cluster-id")
    );
    // The local archive has its record too, private like the archive.
    let local_rec = std::path::PathBuf::from(format!("{}.json", local.display()));
    assert_eq!(support::mode(&local_rec) & 0o777, 0o600);
    assert!(s3.uploads().is_empty(), "{:?}", s3.uploads());

    // destination=store writes nothing locally.
    std::thread::sleep(Duration::from_millis(1100));
    u.put("/after/first", "only-in-the-second");
    let second = snap(u, &t, &["destination=store"]);
    second.assert_completed();
    assert!(
        !second.results.contains_key("snapshot.path"),
        "{:?}",
        second.results
    );
    let id2 = second.result("snapshot.name").to_string();
    assert!(!t.path().join("snaps").join(&id2).exists());

    // list-backups: newest first, local and stored, with what they hold.
    let listed = u.run_action(
        "list-backups",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    listed.assert_completed();
    assert_eq!(listed.result("count"), "3");
    let rows: Vec<serde_json::Value> =
        serde_yaml::from_str(listed.result("backups")).expect("backups yaml");
    assert_eq!(rows[0]["id"], id2.as_str());
    assert_eq!(rows[0]["location"], format!("s3://{BUCKET}/team"));
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, [id2.as_str(), id.as_str(), id.as_str()]);
    for r in &rows {
        assert_eq!(r["recorded"], true, "{r:?}");
        assert_eq!(r["etcd_version"], V35);
    }
    let table = listed.result("output");
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id2) && table.contains("local"), "{table}");

    // Restore by ID, streamed from the store: the first backup's data,
    // under a new cluster ID.
    let (cluster_before, _, _) = u.status();
    let restored = u.run_action(
        "restore",
        &[
            &format!("backup-id={id}"),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    restored.assert_completed();
    assert!(restored.result("restore.source").contains(&key));
    let (cluster_after, _, _) = u.status();
    assert_ne!(cluster_after, cluster_before);
    assert_eq!(u.get("/before/first").as_deref(), Some("in-every-backup"));
    assert_eq!(u.get("/after/first"), None);
}

#[test]
fn altered_truncated_and_unknown_backups_are_refused_before_etcd_is_touched() {
    let t = TestDir::new("s3-hostile");
    let s3 = S3Server::start(t.path());
    let (model, _) = one_unit_with_store(&t, &s3, &s3.endpoint());
    let u = model.unit("etcd/0");
    u.put("/k", "v-original-value");
    let o = snap(u, &t, &["destination=store"]);
    o.assert_completed();
    let id = o.result("snapshot.name").to_string();
    let key = format!("team/etcd/{id}");
    let good = t.path().join("good.tar.gz");
    s3.admin(&["get", BUCKET, &key, &good.display().to_string()]);
    let bytes = fs::read(&good).expect("archive");
    let before = u.status();
    let restore = |extra: &str| {
        u.run_action(
            "restore",
            &[
                extra,
                &format!("target={}", t.path().join("backups").display()),
            ],
        )
    };

    // One byte changed in the middle of the compressed stream.
    let mut altered = bytes.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x40;
    let f = t.path().join("altered.tar.gz");
    fs::write(&f, &altered).expect("write");
    s3.admin(&["put", BUCKET, &key, &f.display().to_string()]);
    restore(&format!("backup-id={id}")).assert_failed_with("etcd was not touched");
    assert_eq!(u.status().0, before.0);

    // A valid archive of another time under this ID: only the record
    // tells, and it does.
    let other = snap(u, &t, &["destination=local"]);
    other.assert_completed();
    s3.admin(&["put", BUCKET, &key, other.result("snapshot.path")]);
    restore(&format!("backup-id={id}")).assert_failed_with("altered or damaged in the store");

    // Cut short.
    fs::write(&f, &bytes[..bytes.len() * 2 / 3]).expect("write");
    s3.admin(&["put", BUCKET, &key, &f.display().to_string()]);
    restore(&format!("backup-id={id}")).assert_failed_with("etcd was not touched");

    // The good archive back, but its record gone: nothing proves it.
    s3.admin(&["put", BUCKET, &key, &good.display().to_string()]);
    s3.admin(&["delete", BUCKET, &format!("{key}.json")]);
    restore(&format!("backup-id={id}")).assert_failed_with("has no record of what it holds");

    // Unknown and malformed IDs, and two sources at once.
    restore("backup-id=etcd-snapshot-2001-01-01-00.00.00.tar.gz")
        .assert_failed_with("there is no backup etcd-snapshot-2001-01-01-00.00.00.tar.gz");
    restore("backup-id=../../etc/passwd").assert_failed_with("is not a backup ID");
    u.run_action(
        "restore",
        &[&format!("backup-id={id}"), "source=/tmp/x.tar.gz"],
    )
    .assert_failed_with("not both");
    assert_eq!(u.status().0, before.0);
    assert_eq!(u.get("/k").as_deref(), Some("v-original-value"));
    // Staging is gone each time.
    let data_parent = u.root.join("var/snap/etcd/current");
    let left: Vec<String> = support::list(&data_parent)
        .into_iter()
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn store_faults_fail_the_upload_and_keep_the_local_archive() {
    let t = TestDir::new("s3-faults");
    let s3 = S3Server::start(t.path());
    let proxy = Proxy::start(s3.port);
    let (model, rid) = one_unit_with_store(&t, &s3, &proxy.endpoint());
    let u = model.unit("etcd/0");
    // Incompressible data, so the archive spans several 8 MiB parts.
    u.fill(40 << 20, 1 << 20);
    let set = |data: BTreeMap<String, String>| {
        model.remote_set(&rid, INTEGRATOR, &data, true);
    };
    let snapshots = t.path().join("snaps");
    let verify_local = |o: &support::Outcome| {
        let path = o.result("snapshot.path");
        assert_eq!(
            sha256_file(std::path::Path::new(path)),
            o.result("snapshot.sha256")
        );
    };

    // The server dies a few parts in: the action fails saying so, the local
    // archive is complete, no object appears. The upload the dead server
    // still holds is aborted by the next run.
    proxy.cut_after(20 << 20);
    let o = snap(u, &t, &["stall-timeout=10"]);
    o.assert_failed_with("the snapshot was written to");
    assert!(
        o.message.contains("no object was left in the store"),
        "{}",
        o.message
    );
    assert!(proxy.is_cut());
    verify_local(&o);
    proxy.restore();
    assert!(s3.list("team/").is_empty(), "{:?}", s3.list("team/"));
    assert_eq!(
        s3.uploads().len(),
        1,
        "the cut upload is still open on the server"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let next = snap(u, &t, &["destination=store"]);
    next.assert_completed();
    assert!(
        next.logs
            .iter()
            .any(|l| l.contains("aborted the unfinished upload")),
        "{:?}",
        next.logs
    );
    assert!(s3.uploads().is_empty(), "{:?}", s3.uploads());

    // A server that stops answering mid-upload: the stall timeout applies,
    // and the next run aborts the upload once the server answers again.
    proxy.stall_after(12 << 20);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(1100));
    let o = snap(u, &t, &["destination=store", "stall-timeout=3"]);
    o.assert_failed_with("stalled: nothing moved for 3 s");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    let objects = s3.list("team/");
    assert_eq!(
        objects.len(),
        2,
        "only the good archive and its record: {objects:?}"
    );
    u.run_action("list-backups", &[]).assert_completed();

    // Wrong credentials.
    let mut wrong = s3.integrator_data(&proxy.endpoint(), "/team/");
    wrong.insert("secret-key".into(), "not-the-secret-key".into());
    set(wrong);
    std::thread::sleep(Duration::from_millis(1100));
    let o = snap(u, &t, &[]);
    o.assert_failed_with("refused the credentials");
    verify_local(&o);
    u.run_action("list-backups", &[])
        .assert_failed_with("refused the credentials");

    // No such bucket.
    let mut nobucket = s3.integrator_data(&proxy.endpoint(), "/team/");
    nobucket.insert("bucket".into(), "no-such-bucket".into());
    set(nobucket);
    std::thread::sleep(Duration::from_millis(1100));
    snap(u, &t, &["destination=store"]).assert_failed_with("no-such-bucket");

    // Nothing listening at all.
    let closed = support::free_port(&["127.0.0.1"]);
    set(s3.integrator_data(&format!("http://127.0.0.1:{closed}"), "/team/"));
    std::thread::sleep(Duration::from_millis(1100));
    let o = snap(u, &t, &["destination=store", "stall-timeout=5"]);
    o.assert_failed_with("no archive was");
    assert_eq!(s3.list("team/").len(), 2);
    assert!(s3.uploads().is_empty(), "{:?}", s3.uploads());
    // Every local archive written on the way is whole.
    for name in support::list(&snapshots) {
        assert!(!name.ends_with(".part"), "{name}");
    }
}

/// Runs the backup timer's service as systemd would: its ExecStart with
/// its Environment= lines and systemd's default PATH (no hook tools).
fn scheduled_cmd(u: &Unit) -> std::process::Command {
    let text = fs::read_to_string(u.root.join(UNIT_DIR).join("etcd-charm-backup.service"))
        .expect("the backup service file");
    let unquote = |s: &str| s.trim().trim_matches('"').to_string();
    let mut exec = None;
    let mut env = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Environment=") {
            let kv = unquote(v);
            let (k, v) = kv.split_once('=').expect("K=V");
            env.push((k.to_string(), v.to_string()));
        } else if let Some(v) = line.strip_prefix("ExecStart=") {
            let (path, arg) = v.rsplit_once(' ').expect("ExecStart path and argument");
            exec = Some((unquote(path), arg.to_string()));
        }
    }
    let (path, arg) = exec.expect("ExecStart");
    let mut cmd = std::process::Command::new(path);
    cmd.arg(arg)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(env);
    cmd
}

fn run_scheduled(u: &Unit) -> std::process::Output {
    scheduled_cmd(u).output().expect("scheduled run")
}

const UNIT_DIR: &str = "etc/systemd/system";

fn timer_on(u: &Unit) -> bool {
    let states: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(u.dir.join("svc/units.json")).unwrap_or_default())
            .unwrap_or_default();
    let file = u
        .root
        .join(UNIT_DIR)
        .join("etcd-charm-backup.timer")
        .exists();
    let st = &states["etcd-charm-backup.timer"];
    assert_eq!(
        file,
        st["enabled"] == true && st["active"] == true,
        "{}: timer file and systemd disagree: {states}",
        u.spec.unit
    );
    file
}

#[test]
fn scheduled_backups_run_on_the_leader_prune_and_report() {
    let t = TestDir::new("s3-schedule");
    let s3 = S3Server::start(t.path());
    let proxy = Proxy::start(s3.port);
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    model.add_unit(1);
    let rid = model.relate("s3-credentials", INTEGRATOR);
    model.remote_set(
        &rid,
        INTEGRATOR,
        &s3.integrator_data(&proxy.endpoint(), "team"),
        true,
    );
    for u in &model.units {
        u.remember_secret(&s3.secret);
    }
    model.config(&["backup_schedule=*-*-* 02:30:00", "backup_retention_count=2"]);
    let leader = model.leader();
    let other = if leader == "etcd/0" {
        "etcd/1"
    } else {
        "etcd/0"
    };
    let (lu, ou) = (model.unit(&leader), model.unit(other));
    assert!(timer_on(lu) && !timer_on(ou));
    let timer =
        fs::read_to_string(lu.root.join(UNIT_DIR).join("etcd-charm-backup.timer")).expect("timer");
    assert!(timer.contains("OnCalendar=*-*-* 02:30:00"), "{timer}");

    // Objects that are not this charm's archives are never pruned.
    let foreign = t.path().join("foreign");
    fs::write(&foreign, "not a backup").expect("write");
    for key in [
        "team/etcd/notes.txt",
        "team/etcd/etcd-snapshot-latest.tar.gz",
    ] {
        s3.admin(&["put", BUCKET, key, &foreign.display().to_string()]);
    }
    for _ in 0..3 {
        let out = run_scheduled(lu);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    let mut keys: Vec<String> = s3.list("team/").into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys.len(), 6, "2 archives, 2 records, 2 foreign: {keys:?}");
    assert!(keys.contains(&"team/etcd/notes.txt".to_string()));
    lu.run_hook("update-status");
    let (status, msg) = lu.status_line();
    assert_eq!(status, "active", "{msg}");
    assert!(msg.contains("last backup") && msg.contains("ago"), "{msg}");

    // Killed mid-upload: nothing half-stored; the status and the next run
    // say so, and the next run aborts the upload it left.
    lu.fill(30 << 20, 1 << 20);
    proxy.stall_after(10 << 20);
    let mut child = scheduled_cmd(lu).spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !proxy.is_stalled() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile no action runs beside it.
    lu.run_action("snapshot", &["destination=local"])
        .assert_failed_with("another scheduled backup");
    let _ = child.kill();
    let _ = child.wait();
    proxy.restore();
    lu.run_hook("update-status");
    let (status, msg) = lu.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("did not finish"), "{msg}");
    assert_eq!(s3.list("team/").len(), 6, "no half object");
    let out = run_scheduled(lu);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("did not finish") && said.contains("aborted the unfinished upload"),
        "{said}"
    );
    assert!(s3.uploads().is_empty(), "{:?}", s3.uploads());
    lu.run_hook("update-status");
    assert_eq!(lu.status_line().0, "active");

    // A store that cannot be reached: the run fails, the status says since
    // when and why.
    let closed = support::free_port(&["127.0.0.1"]);
    model.remote_set(
        &rid,
        INTEGRATOR,
        &s3.integrator_data(&format!("http://127.0.0.1:{closed}"), "team"),
        true,
    );
    let out = run_scheduled(lu);
    assert_eq!(out.status.code(), Some(1));
    lu.run_hook("update-status");
    let (status, msg) = lu.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(
        msg.contains("scheduled backup failing since") && msg.contains("cannot reach"),
        "{msg}"
    );

    // A schedule systemd would not understand: refused, no timer runs.
    model.config(&["backup_schedule=every tuesday-ish"]);
    let (status, msg) = lu.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("not a systemd calendar expression"), "{msg}");
    assert!(!timer_on(lu));
    model.config(&["backup_schedule=daily"]);
    assert!(timer_on(lu));

    // Leadership moves: exactly one timer afterwards, on the new leader.
    model.elect(other);
    assert!(timer_on(model.unit(other)));
    assert!(!timer_on(model.unit(&leader)));
    assert!(!model.unit(&leader).status_line().1.contains("backup"));
}

#[test]
fn azure_takes_the_same_backups_beside_s3_and_restores_them() {
    use support::stores::{AzureServer, AZURE_KEY, CONTAINER};
    let t = TestDir::new("azure");
    let s3 = S3Server::start(t.path());
    let az = AzureServer::start(t.path());
    let (model, s3_rid) = one_unit_with_store(&t, &s3, &s3.endpoint());
    let rid = model.relate("azure-credentials", "azure-storage-integrator/0");
    let asked = model.relation_data(&rid, "etcd");
    assert_eq!(
        asked.get("container").map(String::as_str),
        Some("etcd-backups")
    );
    model.remote_set(
        &rid,
        "azure-storage-integrator/0",
        &az.integrator_data(&az.endpoint(), AZURE_KEY),
        true,
    );
    let u = model.unit("etcd/0");
    u.remember_secret(AZURE_KEY);
    u.put("/in/azure", "stored-in-both-clouds");

    // One pass, three copies: local, S3 and Azure, byte for byte the same.
    let o = snap(u, &t, &[]);
    o.assert_completed();
    let id = o.result("snapshot.name").to_string();
    let urls = [o.result("store.url"), o.result("store-2.url")];
    assert!(
        urls.contains(&format!("azure://devstoreaccount1/{CONTAINER}/etcd-team").as_str()),
        "{urls:?}"
    );
    let blobs = az.list("etcd-team/");
    let key = format!("etcd-team/etcd/{id}");
    assert_eq!(
        blobs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [key.as_str(), &format!("{key}.json")]
    );
    let got = t.path().join("from-azure.tar.gz");
    az.admin(&["get", CONTAINER, &key, &got.display().to_string()]);
    assert_eq!(sha256_file(&got), o.result("snapshot.sha256"));
    let listed = u.run_action(
        "list-backups",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    listed.assert_completed();
    assert_eq!(listed.result("count"), "3");

    // Without S3, the same ID restores from Azure.
    model.unrelate(&s3_rid);
    let (cluster, _, _) = u.status();
    u.put("/after/backup", "gone-after-restore");
    let r = u.run_action(
        "restore",
        &[
            &format!("backup-id={id}"),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    r.assert_completed();
    assert!(
        r.result("restore.source").contains("azure://"),
        "{:?}",
        r.results
    );
    assert_ne!(u.status().0, cluster);
    assert_eq!(u.get("/in/azure").as_deref(), Some("stored-in-both-clouds"));
    assert_eq!(u.get("/after/backup"), None);

    // An altered blob is refused; wrong keys are said plainly.
    let mut bytes = fs::read(&got).expect("archive");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let f = t.path().join("altered");
    fs::write(&f, &bytes).expect("write");
    az.admin(&["put", CONTAINER, &key, &f.display().to_string()]);
    let before = u.status().0;
    u.run_action("restore", &[&format!("backup-id={id}"), "skip-backup=true"])
        .assert_failed_with("etcd was not touched");
    assert_eq!(u.status().0, before);
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    model.remote_set(
        &rid,
        "azure-storage-integrator/0",
        &az.integrator_data(&az.endpoint(), wrong),
        true,
    );
    std::thread::sleep(Duration::from_millis(1100));
    snap(u, &t, &["destination=store"]).assert_failed_with("refused the credentials");
    assert_eq!(az.list("etcd-team/").len(), 2);
}

#[test]
fn encrypted_backups_restore_only_with_the_right_identity() {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("s3-age");
    let s3 = S3Server::start(t.path());
    let (model, _) = one_unit_with_store(&t, &s3, &s3.endpoint());
    let u = model.unit("etcd/0");
    let mine = age::x25519::Identity::generate();
    let theirs = age::x25519::Identity::generate();
    let write_id = |name: &str, id: &age::x25519::Identity, mode: u32| {
        let path = t.path().join(name);
        fs::write(
            &path,
            format!("# test identity\n{}\n", id.to_string().expose_secret()),
        )
        .expect("identity");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        u.remember_secret(id.to_string().expose_secret());
        path
    };
    let good = write_id("mine.key", &mine, 0o600);
    let loose = write_id("loose.key", &mine, 0o644);
    let wrong = write_id("theirs.key", &theirs, 0o600);

    // Not a recipient: refused before anything goes out.
    model.config(&["backup_encryption_recipients=ssh-ed25519 AAAAC3Nza"]);
    snap(u, &t, &["destination=store"]).assert_failed_with("not an age X25519 recipient");
    assert!(s3.list("team/").is_empty());

    let public = mine.to_public().to_string();
    model.config(&[&format!("backup_encryption_recipients={public}")]);
    u.put("/secret/data", "only-for-the-identity-holder");
    let o = snap(u, &t, &[]);
    o.assert_completed();
    let key = o.result("store.key").to_string();
    assert!(key.ends_with(".tar.gz.age"), "{key}");
    let id = key.rsplit('/').next().expect("name").to_string();
    let got = t.path().join("object");
    s3.admin(&["get", BUCKET, &key, &got.display().to_string()]);
    let object = fs::read(&got).expect("object");
    assert!(
        object.starts_with(b"age-encryption.org/v1\n"),
        "an age file"
    );
    // The local archive stays plain; the object is not it.
    assert_ne!(sha256_file(&got), o.result("snapshot.sha256"));
    let rec = record(&s3, &key, &t);
    assert_eq!(rec["sha256"], o.result("snapshot.sha256"));
    assert_eq!(rec["encrypted"]["sha256"], sha256_file(&got));
    assert_eq!(rec["encrypted"]["recipients"][0], public);
    let listed = u.run_action("list-backups", &[]);
    listed.assert_completed();
    assert!(
        listed.result("backups").contains("encrypted: true"),
        "{}",
        listed.result("backups")
    );

    u.put("/after", "gone");
    let before = u.status().0;
    let restore = |extra: &[&str]| {
        let mut params = vec![format!("backup-id={id}"), "skip-backup=true".to_string()];
        params.extend(extra.iter().map(|s| s.to_string()));
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        u.run_action("restore", &params)
    };
    restore(&[]).assert_failed_with("is encrypted: give identity-file=");
    restore(&[&format!("identity-file={}", loose.display())]).assert_failed_with("chmod 600");
    restore(&[&format!("identity-file={}", wrong.display())]).assert_failed_with("cannot decrypt");
    assert_eq!(u.status().0, before);
    assert_eq!(u.get("/after").as_deref(), Some("gone"));
    restore(&[&format!("identity-file={}", good.display())]).assert_completed();
    assert_ne!(u.status().0, before);
    assert_eq!(
        u.get("/secret/data").as_deref(),
        Some("only-for-the-identity-holder")
    );
    assert_eq!(u.get("/after"), None);
}
