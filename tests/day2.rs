//! layer-etcd's day-2 actions (health, compact, defrag, alarm-list,
//! alarm-disarm, snap-upgrade) and snapshot's keys-version, each checked by
//! what it changes on a real member.

mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Etcd, Spec, TestDir, Unit};

const V34: &str = "3.4.23";
const V35: &str = "3.5.16";

fn db_file_size(unit: &Unit) -> u64 {
    fs::metadata(unit.data_dir().join("member/snap/db"))
        .expect("db file")
        .len()
}

/// Holds the unit's action lock as a running snapshot would, until dropped.
struct HeldLock(std::process::Child);

impl HeldLock {
    fn take(unit: &Unit) -> HeldLock {
        let state = unit.root.join("var/lib/etcd-charm");
        fs::create_dir_all(&state).expect("state dir");
        let lock = state.join("action.lock");
        fs::write(&lock, "snapshot").expect("lock holder");
        // Dropped (killed and reaped) on every path, the panic's included.
        let held = HeldLock(
            // -o: flock itself holds the lock, not the sleep it runs.
            Command::new("flock")
                .arg("-o")
                .arg(&lock)
                .args(["sleep", "60"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("flock (util-linux)"),
        );
        // flock takes the lock before it runs sleep: wait until it shows.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let probe = Command::new("flock")
                .args(["-n", "-E", "75"])
                .arg(&lock)
                .arg("true")
                .status()
                .expect("flock probe");
            if probe.code() == Some(75) {
                return held;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flock did not take {}", lock.display());
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-P", &self.0.id().to_string(), "sleep"])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn day_two_actions(version: &'static str) {
    let t = TestDir::new(&format!("day2-{version}"));
    let unit = Unit::new(t.path(), &Etcd::get(version), Spec::single(0, false));
    unit.start();

    // health: one line for the member, then the verdict layer-etcd's
    // runbooks grep for.
    let health = unit.run_action("health", &[]);
    health.assert_completed();
    let output = health.result("output");
    assert!(output.ends_with("cluster is healthy"), "{output}");
    assert!(
        output.contains(&format!("{} is healthy", unit.spec.client_url())),
        "{output}"
    );

    // compact: an old revision is readable before, not after.
    unit.put("/day2/key", "first-value-of-the-key");
    let (_, _, old) = unit.status();
    for i in 0..5 {
        unit.put("/day2/key", &format!("later-value-number-{i}"));
    }
    let old_rev = format!("--rev={old}");
    let before = unit.etcdctl(&["get", "/day2/key", &old_rev, "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&before.stdout).trim(),
        "first-value-of-the-key"
    );
    let (_, _, latest) = unit.status();
    unit.run_action("compact", &["revision=abc"])
        .assert_failed_with("not a revision number");
    // `juju run` reads key=value as YAML: a number must be quoted to be the
    // string layer-etcd's schema asks for (or given with --string-args).
    unit.run_action("compact", &[&format!("revision='{}'", latest + 1000)])
        .assert_failed_with("ahead of the latest revision");
    let compact = unit.run_action("compact", &[]);
    compact.assert_completed();
    assert_eq!(
        compact.result("output"),
        format!("compacted revision {latest}")
    );
    let after = unit.etcdctl(&["get", "/day2/key", &old_rev]);
    assert!(!after.status.success(), "{after:?}");
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("required revision has been compacted"),
        "{after:?}"
    );
    assert_eq!(
        unit.get("/day2/key").as_deref(),
        Some("later-value-number-4")
    );

    // defrag: after deletes and a compaction the file shrinks.
    unit.fill(4 << 20, 64 * 1024);
    let del = unit.etcdctl(&["del", "/fill/", "--prefix"]);
    assert!(del.status.success(), "{del:?}");
    unit.run_action("compact", &["physical=true"])
        .assert_completed();
    let full = db_file_size(&unit);
    {
        let _held = HeldLock::take(&unit);
        unit.run_action("defrag", &[])
            .assert_failed_with("another snapshot is running on this unit");
        assert_eq!(db_file_size(&unit), full, "a refused defrag changed the db");
    }
    let defrag = unit.run_action("defrag", &[]);
    defrag.assert_completed();
    let shrunk = db_file_size(&unit);
    println!("{version}: db file {full} bytes before defrag, {shrunk} after");
    assert!(
        shrunk < full,
        "defrag left the db at {shrunk} of {full} bytes"
    );
    let reported: u64 = defrag.result("db-size-after").parse().expect("size");
    assert!(reported < defrag.result("db-size-before").parse().expect("size"));
    assert!(
        defrag
            .result("output")
            .starts_with("Finished defragmenting etcd member["),
        "{defrag:?}"
    );

    // No alarm: an empty list, and disarm has nothing to clear.
    let alarms = unit.run_action("alarm-list", &[]);
    alarms.assert_completed();
    assert_eq!(alarms.result("output"), "");
    assert_eq!(alarms.result("count"), "0");

    // snap-upgrade says what applies instead of failing a runbook.
    let snap = unit.run_action("snap-upgrade", &[]);
    snap.assert_completed();
    assert!(!snap.result("output").is_empty());

    // snapshot keys-version: v3 is today's snapshot, v2 refused with why.
    let target = t.path().join("snapshots");
    let target_param = format!("target={}", target.display());
    unit.run_action("snapshot", &["keys-version=v2", &target_param])
        .assert_failed_with("keys-version=v2 is refused");
    assert!(!target.exists() || support::list(&target).is_empty());
    let snap = unit.run_action("snapshot", &["keys-version=v3", &target_param]);
    snap.assert_completed();
    assert!(std::path::Path::new(snap.result("snapshot.path")).is_file());

    // With the member down, health fails in one sentence.
    unit.kill_etcd();
    unit.run_action("health", &[])
        .assert_failed_with("cannot reach etcd");
    unit.assert_no_secrets();
}

#[test]
fn day_two_actions_do_what_they_claim_3_4() {
    day_two_actions(V34);
}

#[test]
fn day_two_actions_do_what_they_claim_3_5() {
    day_two_actions(V35);
}

/// A NOSPACE alarm (small quota, filled) is listed; once space is freed
/// (delete, compact, defrag) it is disarmed and writes work again.
#[test]
fn a_nospace_alarm_is_listed_then_disarmed() {
    let t = TestDir::new("day2-alarm");
    let unit = Unit::out_of_space(t.path(), &Etcd::get(V35), Spec::single(0, false));
    let (_, member, _) = unit.status();
    let listed = unit.run_action("alarm-list", &[]);
    listed.assert_completed();
    assert_eq!(
        listed.result("output"),
        format!("memberID:{member} alarm:NOSPACE")
    );
    let refused = unit.etcdctl(&["put", "/after", "refused-while-the-alarm-is-raised"]);
    assert!(!refused.status.success(), "{refused:?}");

    let del = unit.etcdctl(&["del", "/fill/", "--prefix"]);
    assert!(del.status.success(), "{del:?}");
    unit.run_action("compact", &["physical=true"])
        .assert_completed();
    unit.run_action("defrag", &[]).assert_completed();
    let disarmed = unit.run_action("alarm-disarm", &[]);
    disarmed.assert_completed();
    assert_eq!(
        disarmed.result("output"),
        format!("memberID:{member} alarm:NOSPACE")
    );
    assert_eq!(disarmed.result("disarmed"), "1");
    unit.put("/after", "accepted-once-the-alarm-is-cleared");
    assert_eq!(
        unit.get("/after").as_deref(),
        Some("accepted-once-the-alarm-is-cleared")
    );
    assert_eq!(
        unit.get("/kept").as_deref(),
        Some("before-the-alarm"),
        "data from before the alarm"
    );
    let after = unit.run_action("alarm-list", &[]);
    assert_eq!(after.result("count"), "0");
}
