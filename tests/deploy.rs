//! The charm as Juju runs it: units deployed into one fake model on their
//! own loopback addresses, hooks in Juju's order, relation data and leader
//! settings passed between units, real etcd started through the fake
//! `snap` and `systemctl`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::{assert_one_at_a_time, now, restarts, Etcd, Model, Relay, TestDir, Unit};

const V35: &str = "3.5.16";

/// (voting members, learners) as the unit's etcd lists them.
fn members(unit: &Unit) -> (Vec<String>, usize) {
    let out = unit.etcdctl(&["member", "list", "-w", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut names = Vec::new();
    let mut learners = 0;
    for m in v["members"].as_array().cloned().unwrap_or_default() {
        if m["isLearner"].as_bool().unwrap_or(false) {
            learners += 1;
        } else {
            names.push(m["name"].as_str().unwrap_or_default().to_string());
        }
    }
    names.sort();
    (names, learners)
}

fn assert_healthy(unit: &Unit, n: usize) {
    let (status, message) = unit.status_line();
    let plural = if n == 1 { "" } else { "s" };
    assert_eq!(status, "active", "{}: {message}", unit.spec.unit);
    assert!(
        message.starts_with(&format!("Healthy with {n} known peer{plural}")),
        "{}: {message}",
        unit.spec.unit
    );
}

fn cluster_id(unit: &Unit) -> u64 {
    unit.status().0
}

#[test]
fn three_units_form_shrink_restore_and_grow() {
    let t = TestDir::new("deploy-three");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let u0 = model.unit("etcd/0");
    assert_eq!(model.leader(), "etcd/0");
    assert_healthy(u0, 1);
    // Installed from the snap at the configured channel; no second cluster.
    // Then the machine's refresh timer, from snapd_refresh ("max":
    // monthly, on yesterday's weekday and week of the month).
    let snaps = u0.calls_of("snap");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0], ["install", "etcd", "--channel=3.5/stable"]);
    assert_eq!(snaps[1][..2], ["set", "core"]);
    let timer = snaps[1][2].trim_start_matches("refresh.timer=").to_string();
    assert!(
        timer.len() == 4 && timer.ends_with(|c: char| ('1'..='5').contains(&c)),
        "{timer}"
    );

    model.add_unit(1);
    model.add_unit(2);
    // Promotions etcd refused at first are retried by later hooks.
    model.run_all("update-status");
    for name in ["etcd/0", "etcd/1", "etcd/2"] {
        let u = model.unit(name);
        assert_eq!(
            members(u),
            (vec!["etcd-0".into(), "etcd-1".into(), "etcd-2".into()], 0),
            "{name}"
        );
        assert_healthy(u, 3);
        // Each on its own address, as network-get gave it.
        let conf = fs::read_to_string(&u.conf).expect("config");
        assert!(conf.contains(&format!("http://{}:", u.spec.ip)), "{conf}");
    }
    // Every unit applies the leader's timer; a new one reaches them all
    // without a restart, one snapd refuses is logged once and the last good
    // one stays, and "" (snapd's default) reaches every unit too.
    let applied = |u: &Unit| {
        let v: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(u.dir.join("svc/snapd-config.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        v["refresh.timer"].as_str().map(String::from)
    };
    for u in &model.units {
        assert_eq!(
            applied(u).as_deref(),
            Some(timer.as_str()),
            "{}",
            u.spec.unit
        );
    }
    let starts: Vec<usize> = model.units.iter().map(Unit::starts).collect();
    model.config(&["snapd_refresh=fri5"]);
    model.config(&["snapd_refresh=every-full-moon"]);
    model.run_all("update-status");
    for u in &model.units {
        assert_eq!(applied(u).as_deref(), Some("fri5"), "{}", u.spec.unit);
        let warned = u
            .calls_of("juju-log")
            .iter()
            .filter(|c| {
                c.iter()
                    .any(|a| a.contains("cannot set snapd's refresh timer to \"every-full-moon\""))
            })
            .count();
        assert_eq!(warned, 1, "{}: warned once, not every hook", u.spec.unit);
        assert_healthy(u, 3);
    }
    model.config(&["snapd_refresh="]);
    for u in &model.units {
        assert_eq!(applied(u).as_deref(), Some(""), "{}", u.spec.unit);
    }
    assert_eq!(
        starts,
        model.units.iter().map(Unit::starts).collect::<Vec<_>>()
    );

    let id = cluster_id(model.unit("etcd/0"));
    for name in ["etcd/1", "etcd/2"] {
        assert_eq!(cluster_id(model.unit(name)), id, "one cluster");
    }
    model.unit("etcd/0").put("/written/on/0", "seen-everywhere");
    model.unit("etcd/2").put("/written/on/2", "seen-on-0-too");
    for name in ["etcd/0", "etcd/1", "etcd/2"] {
        let u = model.unit(name);
        assert_eq!(u.get("/written/on/0").as_deref(), Some("seen-everywhere"));
        assert_eq!(u.get("/written/on/2").as_deref(), Some("seen-on-0-too"));
    }

    // A config change restarts each etcd once, with the new value, one
    // unit after another, raft leadership handed away before its holder
    // stops; the same config again restarts nothing.
    let before: Vec<usize> = model.units.iter().map(Unit::starts).collect();
    let since = now();
    model.config(&["heartbeat_interval=150", "election_timeout=1500"]);
    let rolled = restarts(&model.units, since);
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    assert_one_at_a_time(&rolled);
    for (unit, _, _, led) in &rolled {
        assert_eq!(
            *led,
            Some(false),
            "{unit} led the raft as it stopped: {rolled:?}"
        );
    }
    let moved = model
        .units
        .iter()
        .flat_map(|u| u.calls_of("juju-log"))
        .filter(|c| c.iter().any(|a| a.contains("moved etcd leadership")))
        .count();
    // Whoever led the raft when its turn came handed it away first.
    assert!(moved >= 1, "no leadership moved: {rolled:?}");
    for (u, was) in model.units.iter().zip(&before) {
        assert_eq!(u.starts(), was + 1, "{} restarted once", u.spec.unit);
        let conf = fs::read_to_string(&u.conf).expect("config");
        assert!(conf.contains("heartbeat-interval: 150\n"), "{conf}");
        let log = fs::read_to_string(u.dir.join("svc/etcd.log")).expect("etcd log");
        let last_start = log
            .rsplit("\"starting an etcd server\"")
            .next()
            .unwrap_or("");
        assert!(
            last_start.contains("\"heartbeat-interval\":\"150ms\""),
            "{}",
            u.spec.unit
        );
        assert_healthy(u, 3);
    }
    let before: Vec<usize> = model.units.iter().map(Unit::starts).collect();
    model.config(&["heartbeat_interval=150"]);
    model.run_all("upgrade-charm");
    let after: Vec<usize> = model.units.iter().map(Unit::starts).collect();
    assert_eq!(after, before, "nothing changed, nothing restarted");

    // Shrink to one: each departing member is removed from the cluster.
    let snapshot = model.unit("etcd/0").run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    snapshot.assert_completed();
    model
        .unit("etcd/0")
        .put("/after/snapshot", "gone-after-restore");
    model.remove_unit("etcd/2");
    assert_eq!(
        members(model.unit("etcd/0")),
        (vec!["etcd-0".into(), "etcd-1".into()], 0)
    );
    assert_healthy(model.unit("etcd/0"), 2);
    model.remove_unit("etcd/1");
    let u0 = model.unit("etcd/0");
    assert_eq!(members(u0), (vec!["etcd-0".into()], 0));
    model.run_all("update-status");
    assert_healthy(u0, 1);

    // Now restore is allowed, and a unit added later joins the restored
    // cluster and reads its data.
    let o = u0.run_action(
        "restore",
        &[
            &format!("source={}", snapshot.result("snapshot.path")),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    o.assert_completed();
    let restored = cluster_id(u0);
    assert_ne!(restored, id);
    assert_eq!(u0.get("/after/snapshot"), None);
    model.add_unit(3);
    model.run_all("update-status");
    let u3 = model.unit("etcd/3");
    assert_eq!(cluster_id(u3), restored);
    assert_eq!(members(u3), (vec!["etcd-0".into(), "etcd-3".into()], 0));
    assert_eq!(u3.get("/written/on/0").as_deref(), Some("seen-everywhere"));
    assert_eq!(u3.get("/after/snapshot"), None);
    assert_healthy(u3, 2);
    assert_healthy(model.unit("etcd/0"), 2);
}

/// Leadership moves to a unit that has no member yet: it must neither
/// bootstrap a second cluster nor wait for itself; it adds itself through
/// a started member, and is promoted through one.
#[test]
fn a_new_unit_that_becomes_leader_joins_the_existing_cluster() {
    let t = TestDir::new("deploy-new-leader");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    model.add_unit(1);
    model.run_all("update-status");
    model
        .unit("etcd/0")
        .put("/before/leader/change", "from-the-first-cluster");
    let id = cluster_id(model.unit("etcd/0"));
    model.add_leading_unit(2);
    assert_eq!(model.leader(), "etcd/2");
    model.run_all("update-status");
    for name in ["etcd/0", "etcd/1", "etcd/2"] {
        let u = model.unit(name);
        assert_eq!(cluster_id(u), id, "{name}: one cluster");
        assert_eq!(
            members(u),
            (vec!["etcd-0".into(), "etcd-1".into(), "etcd-2".into()], 0),
            "{name}"
        );
        assert_healthy(u, 3);
    }
    assert_eq!(
        model.unit("etcd/2").get("/before/leader/change").as_deref(),
        Some("from-the-first-cluster")
    );
}

/// An upstream release tarball, as etcd publishes them.
fn release_tarball(etcd: &Etcd, version: &str, dir: &Path) -> std::path::PathBuf {
    let top = format!("etcd-v{version}-linux-amd64");
    let top = top.as_str();
    let stage = dir.join(format!("release-{version}"));
    fs::create_dir_all(stage.join(top)).expect("stage");
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        fs::copy(etcd.tool(tool), stage.join(top).join(tool)).expect("copy");
    }
    fs::write(stage.join(top).join("README.md"), "etcd\n").expect("readme");
    let out = dir.join(format!("{top}.tar.gz"));
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&stage)
        .arg(top)
        .status()
        .expect("tar");
    assert!(ok.success());
    out
}

fn attach(unit: &Unit, name: &str, file: &Path) {
    let ok = Command::new("python3")
        .arg(support::fakejuju())
        .arg("resource")
        .arg(&unit.dir)
        .arg(name)
        .arg(file)
        .status()
        .expect("attach");
    assert!(ok.success());
}

#[test]
fn installs_from_an_etcd_resource_tarball() {
    let t = TestDir::new("deploy-resource");
    let etcd = Etcd::get(V35);
    let mut model = Model::new(t.path(), &etcd);
    let unit = model.prepare(0);
    attach(&unit, "etcd", &release_tarball(&etcd, V35, t.path()));
    model.deploy(unit);
    let u = model.unit("etcd/0");
    assert!(u.calls_of("snap").is_empty(), "no snap with a resource");
    assert_healthy(u, 1);
    let installed = u.root.join("var/lib/etcd-charm/etcd/3.5.16/etcd");
    let pid = u.etcd_pid().expect("etcd runs");
    assert_eq!(
        fs::canonicalize(format!("/proc/{pid}/exe")).expect("exe"),
        fs::canonicalize(&installed).expect("installed")
    );
    let unit_file = fs::read_to_string(u.root.join("etc/systemd/system/snap.etcd.etcd.service"))
        .expect("unit file");
    assert!(unit_file.contains("ExecStart="), "{unit_file}");
    assert!(
        unit_file.contains("etcd-charm/etcd/current/etcd"),
        "{unit_file}"
    );
    u.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    )
    .assert_completed();

    // A member nobody accounts for is reported, never removed by a hook.
    let added = u.etcdctl(&[
        "member",
        "add",
        "stray",
        "--learner",
        "--peer-urls=http://127.0.0.9:2380",
    ]);
    assert!(added.status.success(), "{added:?}");
    model.run_all("update-status");
    let (_, message) = u.status_line();
    assert!(message.contains("members without a unit:"), "{message}");
    assert!(message.contains("http://127.0.0.9:2380"), "{message}");
    let listed = u.etcdctl(&["member", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("http://127.0.0.9:2380"), "{listed}");
    let id = listed
        .lines()
        .find(|l| l.contains("127.0.0.9"))
        .and_then(|l| l.split(',').next())
        .expect("stray id")
        .to_string();
    assert!(u.etcdctl(&["member", "remove", &id]).status.success());

    // A new release attached as the resource: upgrade-charm installs it
    // and restarts etcd on it, with the data.
    let older = Etcd::get("3.5.1");
    attach(u, "etcd", &release_tarball(&older, "3.5.1", t.path()));
    u.put("/kept/over/upgrade", "still-here-after");
    let starts = u.starts();
    model.run_all("upgrade-charm");
    assert_eq!(u.starts(), starts + 1);
    let pid = u.etcd_pid().expect("etcd runs");
    assert_eq!(
        fs::canonicalize(format!("/proc/{pid}/exe")).expect("exe"),
        fs::canonicalize(u.root.join("var/lib/etcd-charm/etcd/3.5.1/etcd")).expect("installed")
    );
    assert_eq!(
        u.get("/kept/over/upgrade").as_deref(),
        Some("still-here-after")
    );
    let (status, message) = u.status_line();
    assert_eq!(status, "active");
    assert!(message.contains("(etcd 3.5.1)"), "{message}");

    // Removal stops etcd and drops the charm's unit file, keeps the data.
    model.remove_unit("etcd/0");
    let u = model.prepare(0);
    assert!(u.etcd_pid().is_none());
    assert!(!u
        .root
        .join("etc/systemd/system/snap.etcd.etcd.service")
        .exists());
    assert!(u.data_dir().join("member").is_dir());
}

#[test]
fn a_bad_etcd_resource_blocks_with_a_reason() {
    let t = TestDir::new("deploy-bad-resource");
    let model = Model::new(t.path(), &Etcd::get(V35));
    // Not a tarball; layer-etcd's etcd.snap (squashfs), installed as
    // layer-etcd installs it; an empty placeholder, as Charmhub ships,
    // which means "use the snap store".
    let mut snap = b"hsqs".to_vec();
    snap.extend([0u8; 60]);
    let cases: [(&[u8], Option<&str>); 3] = [
        (
            b"not a tarball at all",
            Some("is not an etcd release tarball"),
        ),
        (&snap, None),
        (b"", None),
    ];
    for (n, (bytes, refused)) in cases.into_iter().enumerate() {
        let unit = model.prepare(n);
        let file = t.path().join(format!("resource-{n}"));
        fs::write(&file, bytes).expect("resource");
        attach(&unit, "etcd", &file);
        let dir = model.dir.display().to_string();
        let udir = unit.dir.display().to_string();
        let out = Command::new("python3")
            .arg(support::fakejuju())
            .args(["add-unit", &dir, &udir])
            .output()
            .expect("add-unit");
        let ran: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(ran[0]["hook"], "install");
        let (status, message) = unit.status_line();
        let Some(why) = refused else {
            assert_eq!(ran[0]["exit_code"], 0, "{ran:?}");
            let snaps = unit.calls_of("snap");
            if bytes.is_empty() {
                assert_eq!(snaps[0], ["install", "etcd", "--channel=3.5/stable"]);
            } else {
                let given = unit.dir.join("juju/resources/etcd/etcd.snap");
                assert_eq!(
                    snaps[0],
                    ["install", "--dangerous", &given.display().to_string()]
                );
            }
            continue;
        };
        assert_ne!(ran[0]["exit_code"], 0, "install fails so Juju retries it");
        assert_eq!(status, "blocked");
        assert!(message.contains(why), "{message}");
        assert!(unit.etcd_pid().is_none());
    }
}

/// etcdctl as a related client: only what the db relation handed it.
fn client_etcdctl(etcd: &Etcd, creds: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new(etcd.tool("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg("--dial-timeout=3s")
        .arg(format!("--cacert={}", creds.join("ca").display()))
        .arg(format!("--cert={}", creds.join("cert").display()))
        .arg(format!("--key={}", creds.join("key").display()))
        .args(args)
        .output()
        .expect("etcdctl")
}

#[test]
fn tls_cluster_serves_related_clients_and_restores() {
    let t = TestDir::new("deploy-tls");
    let etcd = Etcd::get(V35);
    let mut model = Model::new_tls(t.path(), &etcd);
    for n in 0..3 {
        model.add_unit(n);
    }
    model.run_all("update-status");
    for u in &model.units {
        assert_healthy(u, 3);
        let conf = fs::read_to_string(&u.conf).expect("config");
        assert!(
            conf.contains(&format!("https://{}:{}", u.spec.ip, model.peer_port)),
            "{conf}"
        );
        assert!(conf.contains("client-cert-auth: true"), "{conf}");
        assert!(conf.contains("peer-transport-security:"), "{conf}");
        let common = u.conf.parent().expect("common");
        for f in [
            "ca.crt",
            "server.crt",
            "server.key",
            "client.crt",
            "client.key",
        ] {
            assert_eq!(support::mode(&common.join(f)), 0o600, "{f}");
        }
        // Plain HTTP gets nowhere.
        let plain = Command::new(etcd.tool("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints=http://{}:{}",
                u.spec.ip, model.client_port
            ))
            .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "/x"])
            .output()
            .expect("etcdctl");
        assert!(!plain.status.success());
    }

    // A related client gets every member and credentials, and they work.
    let rid = model.relate("db", "client/0");
    let data = model.relation_data(&rid, "etcd/0");
    let urls: Vec<&str> = data["connection_string"].split(',').collect();
    assert_eq!(urls.len(), 3, "{data:?}");
    assert_eq!(data["version"], V35);
    let creds = t.path().join("client-creds");
    fs::create_dir_all(&creds).expect("creds");
    fs::write(creds.join("ca"), &data["client_ca"]).expect("ca");
    fs::write(creds.join("cert"), &data["client_cert"]).expect("cert");
    fs::write(creds.join("key"), &data["client_key"]).expect("key");
    assert_eq!(
        data["client_cert"].trim(),
        support::tls().client_cert.trim()
    );
    let put = client_etcdctl(
        &etcd,
        &creds,
        urls[0],
        &["put", "/from/client", "hello-over-tls"],
    );
    assert!(put.status.success(), "{put:?}");
    for url in &urls {
        let got = client_etcdctl(
            &etcd,
            &creds,
            url,
            &["get", "/from/client", "--print-value-only"],
        );
        assert!(got.status.success(), "{url}: {got:?}");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            "hello-over-tls"
        );
    }
    for u in &model.units {
        assert_eq!(
            model.relation_data(&rid, &u.spec.unit)["connection_string"],
            data["connection_string"]
        );
    }

    // Snapshot and the credentials package work over TLS too.
    let u0 = model.unit("etcd/0");
    let snap = u0.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    snap.assert_completed();
    let o = u0.run_action(
        "package-client-credentials",
        &[&format!("target={}", t.path().join("creds").display())],
    );
    o.assert_completed();
    let pkg = Path::new(o.result("credentials.path"));
    assert_eq!(support::mode(pkg), 0o600);
    assert_eq!(support::mode(&t.path().join("creds")), 0o700);
    assert_eq!(o.result("credentials.sha256"), support::sha256_file(pkg));
    assert_eq!(o.result("connection-string"), data["connection_string"]);
    assert_eq!(
        o.result("copy.cmd"),
        format!("juju scp etcd/0:{} .", pkg.display())
    );
    let entries = support::read_archive(pkg);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["ca.crt", "client.crt", "client.key", "README.md"]);
    assert_eq!(
        entries[2].2,
        support::tls()
            .client_key
            .trim()
            .as_bytes()
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>()
    );
    for e in &entries {
        assert_eq!(e.1, 0o600, "{}", e.0);
    }

    // Units leave: the client sees the list shrink.
    model.remove_unit("etcd/2");
    let two = model.relation_data(&rid, "etcd/0")["connection_string"].clone();
    assert_eq!(two.split(',').count(), 2, "{two}");
    assert_eq!(
        model.relation_data(&rid, "etcd/1")["connection_string"],
        two
    );
    assert!(model.relation_data(&rid, "etcd/2").is_empty());
    model.remove_unit("etcd/1");
    let one = model.relation_data(&rid, "etcd/0")["connection_string"].clone();
    assert_eq!(
        one,
        format!(
            "https://{}:{}",
            model.unit("etcd/0").spec.ip,
            model.client_port
        )
    );

    // Restore on the last unit, over TLS.
    let u0 = model.unit("etcd/0");
    u0.put("/after/snapshot", "dropped-by-restore");
    let o = u0.run_action(
        "restore",
        &[
            &format!("source={}", snap.result("snapshot.path")),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    o.assert_completed();
    assert_eq!(u0.get("/from/client").as_deref(), Some("hello-over-tls"));
    assert_eq!(u0.get("/after/snapshot"), None);
    model.run_all("update-status");
    assert_healthy(u0, 1);
}

#[test]
fn credentials_need_tls() {
    let t = TestDir::new("deploy-no-tls-creds");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let o = model.unit("etcd/0").run_action(
        "package-client-credentials",
        &[&format!("target={}", t.path().join("creds").display())],
    );
    o.assert_failed_with("serves clients without TLS");
    assert!(!t.path().join("creds").exists());
}

fn status_of(hook: &serde_json::Value) -> (String, String) {
    (
        hook["status"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        hook["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Three units, formed and healthy.
fn three_units(name: &str) -> (TestDir, Model) {
    let t = TestDir::new(name);
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    for n in 0..3 {
        model.add_unit(n);
    }
    model.run_all("update-status");
    for u in &model.units {
        assert_healthy(u, 3);
    }
    (t, model)
}

/// etcd/1's etcd is down and its client port is taken by a relay to
/// etcd/0's member: a probe of etcd/1's URL is answered, but not by
/// etcd/1's member, and its etcd cannot start. Not `active`.
#[test]
fn a_unit_whose_etcd_cannot_start_is_not_healthy() {
    let (_t, model) = three_units("deploy-port-taken");
    let port = model.client_port;
    let u1 = model.unit("etcd/1");
    assert!(u1.systemctl("stop").status.success());
    let relay = Relay::start((&u1.spec.ip, port), (&model.unit("etcd/0").spec.ip, port));
    let hook = u1.run_hook("update-status");
    let (status, msg) = status_of(&hook);
    println!("etcd/1 with its port taken: {status}: {msg}");
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("this unit's etcd is not serving"), "{msg}");
    assert!(msg.contains("answered by member etcd-0"), "{msg}");
    assert!(msg.contains("systemd: failed"), "{msg}");
    assert!(msg.contains("address already in use"), "{msg}");
    drop(relay);
    let hook = u1.run_hook("update-status");
    let (status, msg) = status_of(&hook);
    assert_eq!(status, "active", "{msg}");
    assert!(msg.starts_with("Healthy with 3 known peers"), "{msg}");
}

/// Two of three members stopped: the third answers for itself, but the
/// cluster cannot commit. Then the leader departs: it cannot remove its
/// member, so etcd keeps running and the unit says why; its stop hook
/// tries once more, then stops etcd, saying so loudly.
#[test]
fn no_quorum_is_not_healthy_and_a_member_that_cannot_leave_says_so() {
    let (_t, model) = three_units("deploy-no-quorum");
    for name in ["etcd/1", "etcd/2"] {
        assert!(model.unit(name).systemctl("stop").status.success());
    }
    let u0 = model.unit("etcd/0");
    let hook = u0.run_hook("update-status");
    let (status, msg) = status_of(&hook);
    println!("etcd/0 without quorum: {status}: {msg}");
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("no quorum"), "{msg}");

    let hook = u0.run_hook_with(
        "cluster-relation-departed",
        &[
            "--relation",
            "cluster:0",
            "--remote",
            "etcd/1",
            "--departing",
            "etcd/0",
        ],
    );
    assert_eq!(hook["exit_code"], 0, "{hook}");
    let (status, msg) = status_of(&hook);
    assert_eq!(status, "blocked", "{msg}");
    assert!(
        msg.contains("could not remove this unit's member etcd-0"),
        "{msg}"
    );
    assert!(msg.contains("etcd keeps running"), "{msg}");
    assert!(
        u0.etcd_pid().is_some(),
        "etcd was stopped with its member still voting"
    );
    let hook = u0.run_hook("stop");
    assert_eq!(hook["exit_code"], 0, "{hook}");
    assert!(u0.etcd_pid().is_none());
    let errors: Vec<String> = u0
        .calls_of("juju-log")
        .into_iter()
        .map(|a| a.join(" "))
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("still in the cluster") && l.contains("etcdctl member remove")),
        "{errors:?}"
    );
}

/// A NOSPACE alarm (a small quota, filled) keeps the unit from `active`.
#[test]
fn an_alarm_is_not_healthy() {
    let t = TestDir::new("deploy-alarm");
    let unit = Unit::out_of_space(t.path(), &Etcd::get(V35), support::Spec::single(0, false));
    let hook = unit.run_hook("update-status");
    let (status, msg) = status_of(&hook);
    println!("with NOSPACE: {status}: {msg}");
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("NOSPACE"), "{msg}");
}

/// Units whose etcd the charm did not install (left by another charm that
/// `juju refresh` replaced with this one) form a cluster; a new unit that
/// becomes leader must not bootstrap a second one beside it.
#[test]
fn a_new_leader_never_bootstraps_beside_hand_laid_units() {
    let t = TestDir::new("deploy-hand-laid");
    let etcd = Etcd::get(V35);
    let mut model = Model::new(t.path(), &etcd);
    let specs: Vec<support::Spec> = (0..2)
        .map(|n| support::Spec {
            unit: format!("etcd/{n}"),
            member: format!("etcd{n}"),
            ip: support::unit_ip(n),
            client_port: model.client_port,
            peer_port: model.peer_port,
            tls: false,
            initial_cluster: None,
            token: "hand-laid".into(),
        })
        .collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.member, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let units: Vec<Unit> = specs
        .into_iter()
        .map(|mut s| {
            s.initial_cluster = Some(initial.clone());
            Unit::hand_laid(t.path(), &etcd, s, &model.dir)
        })
        .collect();
    for u in &units {
        u.start_no_wait();
    }
    for u in &units {
        u.wait_healthy(std::time::Duration::from_secs(30));
    }
    let id = cluster_id(&units[0]);
    units[0].put("/hand/laid", "the-only-cluster");
    for u in units {
        model.adopt(u);
    }
    for u in &model.units {
        assert_healthy(u, 2);
    }
    model.add_leading_unit(2);
    assert_eq!(model.leader(), "etcd/2");
    model.run_all("update-status");
    let u2 = model.unit("etcd/2");
    let (status, msg) = u2.status_line();
    println!("etcd/2, the new leader: {status}: {msg}");
    if u2.etcd_pid().is_some() {
        assert_eq!(cluster_id(u2), id, "etcd/2 started a second cluster");
        assert_eq!(u2.get("/hand/laid").as_deref(), Some("the-only-cluster"));
    }
    for name in ["etcd/0", "etcd/1"] {
        let u = model.unit(name);
        assert_eq!(cluster_id(u), id, "{name}");
        let (names, _) = members(u);
        assert!(names.contains(&"etcd0".to_string()), "{names:?}");
    }
    // Clients are never pointed at a cluster of etcd/2's own: its
    // connection string names the hand-laid members too.
    let rid = model.relate("db", "client/0");
    let data = model.relation_data(&rid, "etcd/2");
    let urls = data.get("connection_string").cloned().unwrap_or_default();
    for name in ["etcd/0", "etcd/1", "etcd/2"] {
        let ip = &model.unit(name).spec.ip;
        assert!(urls.contains(&format!("//{ip}:")), "{name}: {urls}");
    }
}

/// A unit whose etcd does not come back from its rolling restart keeps the
/// lock: no other unit restarts, and the cluster keeps its quorum. Once it
/// comes back, the roll goes on.
#[test]
fn a_unit_that_cannot_come_back_stops_the_roll() {
    let (_t, model) = three_units("deploy-roll-stops");
    let before: Vec<usize> = model.units.iter().map(Unit::starts).collect();
    // etcd/0 restarts first (the lowest unit number asking); systemd will
    // refuse to start it again.
    let u0 = model.unit("etcd/0");
    fs::write(u0.dir.join("svc/refuse-start"), "100").expect("fault");
    let since = now();
    model.config(&["heartbeat_interval=120"]);
    let (status, msg) = u0.status_line();
    println!("etcd/0: {status}: {msg}");
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("this unit's etcd is not serving"), "{msg}");
    assert!(
        msg.contains("the rolling restart waits until this member is healthy again"),
        "{msg}"
    );
    for (u, was) in model.units.iter().zip(&before).skip(1) {
        assert_eq!(
            u.starts(),
            *was,
            "{} restarted beside a member that is down",
            u.spec.unit
        );
        let (status, msg) = u.status_line();
        assert_eq!(status, "active", "{msg}");
        assert!(msg.starts_with("Healthy with 3 known peers"), "{msg}");
        assert!(
            msg.contains("restart pending (config changed): etcd/0 restarts first"),
            "{msg}"
        );
    }
    // systemd starts it again: the roll goes on, one unit at a time.
    fs::write(u0.dir.join("svc/refuse-start"), "0").expect("fault cleared");
    model.run_all("update-status");
    let rolled = restarts(&model.units, since);
    assert_one_at_a_time(&rolled);
    for u in &model.units {
        assert_healthy(u, 3);
        let conf = fs::read_to_string(&u.conf).expect("config");
        assert!(conf.contains("heartbeat-interval: 120\n"), "{conf}");
    }
    for (u, was) in model.units.iter().zip(&before).skip(1) {
        assert_eq!(u.starts(), was + 1, "{}", u.spec.unit);
    }

    // A new snap channel rolls too: each unit refreshes and restarts in
    // its turn.
    let since = now();
    model.config(&["channel=3.5/candidate"]);
    let rolled = restarts(&model.units, since);
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    assert_one_at_a_time(&rolled);
    for u in &model.units {
        assert!(
            u.calls_of("snap").contains(&vec![
                "refresh".into(),
                "etcd".into(),
                "--channel=3.5/candidate".into()
            ]),
            "{}",
            u.spec.unit
        );
        assert_healthy(u, 3);
    }
}

/// nrpe-external-master: the NRPE commands, the root cron job behind them
/// and the relation's monitors; each check reports what the member is
/// (OK, then CRITICAL with etcd down, CRITICAL once its result is stale),
/// and the relation gone, every file goes.
#[test]
fn nrpe_checks_report_the_member_and_leave_with_the_relation() {
    let t = TestDir::new("deploy-nrpe");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let unit = model.unit("etcd/0");
    // The nrpe subordinate makes the export dir Nagios collects from.
    let export = unit.root.join("var/lib/nagios/export");
    fs::create_dir_all(&export).expect("export dir");
    let rid = model.relate("nrpe-external-master", "nrpe/0");
    let data = model.relation_data(&rid, "etcd/0");
    assert_eq!(data["primary"], "False");
    for check in ["health", "alarms"] {
        let f = export.join(format!("service__juju-etcd-0_check_etcd-{check}.cfg"));
        let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            text.contains("host_name                       juju-etcd-0\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "check_command                   check_nrpe!check_etcd-{check}\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("servicegroups                   juju\n"),
            "{text}"
        );
    }
    // The subordinate names the host: the definitions follow it.
    let mut named = std::collections::BTreeMap::new();
    named.insert("nagios_hostname".to_string(), "k8s-etcd-0".to_string());
    model.remote_set(&rid, "nrpe/0", &named, false);
    assert!(export
        .join("service__k8s-etcd-0_check_etcd-health.cfg")
        .is_file());
    assert!(!export
        .join("service__juju-etcd-0_check_etcd-health.cfg")
        .exists());
    let monitors: serde_yaml::Value = serde_yaml::from_str(&data["monitors"]).expect("yaml");
    for check in ["health", "alarms"] {
        let cmd = &monitors["monitors"]["remote"]["nrpe"][format!("etcd-{check}")]["command"];
        assert_eq!(cmd.as_str(), Some(format!("check_etcd-{check}").as_str()));
    }
    let root = &unit.root;
    let cfg = fs::read_to_string(root.join("etc/nagios/nrpe.d/check_etcd-health.cfg"))
        .expect("nrpe command file");
    let plugin = root.join("usr/local/lib/nagios/plugins/check_etcd_charm");
    assert!(
        cfg.contains(&format!(
            "command[check_etcd-health]={} health",
            plugin.display()
        )),
        "{cfg}"
    );
    assert_eq!(support::mode(&plugin) & 0o777, 0o755);
    let cron = fs::read_to_string(root.join("etc/cron.d/etcd-charm-nagios")).expect("cron");
    let job = cron
        .lines()
        .find_map(|l| l.strip_prefix("* * * * * root "))
        .unwrap_or_else(|| panic!("no root job every minute: {cron}"))
        .to_string();
    // What cron runs, then what NRPE runs (as nagios it only reads).
    let run_cron = || {
        let out = Command::new("sh")
            .args(["-c", &job])
            .output()
            .expect("cron job");
        assert!(out.status.code().is_some(), "{out:?}");
    };
    let nrpe = |check: &str| {
        let out = Command::new("sh")
            .arg(&plugin)
            .arg(check)
            .output()
            .expect("plugin");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert_eq!(nrpe("health").0, Some(3), "UNKNOWN before the first run");
    run_cron();
    let (code, line) = nrpe("health");
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("OK - etcd-0 healthy"), "{line}");
    assert_eq!(
        nrpe("alarms"),
        (Some(0), "OK - no active alarms".to_string())
    );
    let result = root.join("var/lib/nagios/etcd-charm-health.txt");
    assert_eq!(support::mode(&result) & 0o777, 0o644);

    unit.systemctl("stop");
    run_cron();
    let (code, line) = nrpe("health");
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.starts_with("CRITICAL - this unit's etcd is not serving"),
        "{line}"
    );
    let stale = Command::new("touch")
        .args(["-d", "10 minutes ago"])
        .arg(&result)
        .status()
        .expect("touch");
    assert!(stale.success());
    let (code, line) = nrpe("health");
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("has not run for over 5 minutes"), "{line}");
    unit.assert_no_secrets();

    model.unrelate(&rid);
    for f in [
        "etc/cron.d/etcd-charm-nagios",
        "etc/nagios/nrpe.d/check_etcd-health.cfg",
        "etc/nagios/nrpe.d/check_etcd-alarms.cfg",
        "usr/local/lib/nagios/plugins/check_etcd_charm",
        "var/lib/nagios/etcd-charm-health.txt",
        "var/lib/nagios/export/service__k8s-etcd-0_check_etcd-health.cfg",
        "var/lib/nagios/export/service__k8s-etcd-0_check_etcd-alarms.cfg",
    ] {
        assert!(!root.join(f).exists(), "{f} left behind");
    }
}

/// A channel move etcd's upgrade path forbids is refused before the snap
/// moves: the unit says why and goes on serving and managing the cluster.
/// Under `channel: auto`, a joining unit installs what the leader runs.
#[test]
fn a_channel_move_off_etcds_upgrade_path_is_refused() {
    let t = TestDir::new("deploy-channel-path");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let unit = model.unit("etcd/0");
    unit.put("/kept", "served-throughout");
    let refreshes = |u: &Unit| -> Vec<Vec<String>> {
        u.calls_of("snap")
            .into_iter()
            .filter(|c| c.first().map(String::as_str) == Some("refresh"))
            .collect()
    };
    // Within a minor version: allowed, and rolled.
    model.config(&["channel=3.5/candidate"]);
    assert_eq!(
        refreshes(unit),
        [["refresh", "etcd", "--channel=3.5/candidate"]]
    );
    for (channel, why) in [
        (
            "3.6/stable",
            "3.5.32 or later before any moves to 3.6, and one runs 3.5.16",
        ),
        ("3.4/stable", "cannot go from 3.5 down to 3.4"),
        ("latest/stable", "names no etcd version"),
    ] {
        model.config(&[&format!("channel={channel}")]);
        let (status, msg) = unit.status_line();
        assert_eq!(status, "blocked", "{channel}: {msg}");
        assert!(msg.contains(why), "{channel}: {msg}");
        assert_eq!(unit.get("/kept").as_deref(), Some("served-throughout"));
    }
    assert_eq!(
        refreshes(unit).len(),
        1,
        "the snap moved: {:?}",
        refreshes(unit)
    );
    // Back to auto: nothing moves; a unit added now installs the leader's
    // channel, not the default, and joins.
    model.config(&["channel=auto"]);
    model.add_unit(1);
    let joined = model.unit("etcd/1");
    assert_eq!(
        joined.calls_of("snap")[0],
        ["install", "etcd", "--channel=3.5/candidate"]
    );
    model.run_all("update-status");
    for u in &model.units {
        assert_healthy(u, 2);
    }
    assert_eq!(refreshes(model.unit("etcd/0")).len(), 1);
}

/// The `data` storage on a real block device: attached to a running unit,
/// the member's data moves onto it at the unit's restart, nothing lost; a
/// restore works there; detached, the data moves back before the volume
/// goes. A device holding another filesystem is never formatted.
#[test]
fn data_storage_takes_the_data_and_gives_it_back() {
    let t = TestDir::new("deploy-storage");
    // The size the storage declares as its minimum (1G).
    let disk = support::LoopDevice::new(t.path(), "data", 1 << 30);
    let foreign = support::LoopDevice::new(t.path(), "foreign", 64 << 20);
    let made = Command::new("mkfs.ext2")
        .args(["-q", &foreign.dev])
        .output()
        .expect("mkfs.ext2");
    assert!(made.status.success(), "{made:?}");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    model.add_unit(0);
    let u = model.unit("etcd/0");
    u.put("/on/the/way", "kept-on-storage");
    let id = cluster_id(u);
    let data_dir = |u: &Unit| {
        let conf = fs::read_to_string(&u.conf).expect("config");
        let line = conf
            .lines()
            .find(|l| l.starts_with("data-dir:"))
            .expect("data-dir");
        std::path::PathBuf::from(line["data-dir:".len()..].trim().trim_matches('"'))
    };
    let snap_dir = u.root.join("var/snap/etcd/current/etcd-0.etcd");
    assert_eq!(data_dir(u), snap_dir);

    let starts = u.starts();
    // Killed between moving the data and naming it in the config: etcd
    // stays down, even across a reboot (a member with its name and no data
    // must never start); Juju's retry of the hook finishes the move.
    let mount = u.root.join("media/etcd");
    let killed = Command::new("python3")
        .arg(support::fakejuju())
        .args([
            "attach-storage",
            &u.dir.display().to_string(),
            "data/0",
            &disk.dev,
        ])
        .env("ETCD_CHARM_TEST_ABORT_AT", "data-moved")
        .output()
        .expect("attach-storage");
    let ran: Vec<serde_json::Value> = serde_json::from_slice(&killed.stdout).expect("json");
    assert_ne!(ran[0]["exit_code"], 0, "{ran:?}");
    assert!(u.etcd_pid().is_none());
    assert!(mount.join("data/member").is_dir());
    assert!(!snap_dir.join("member").exists());
    assert_eq!(
        data_dir(u),
        snap_dir,
        "the config still names the old place"
    );
    assert!(
        !u.reboot(),
        "etcd started at boot on a dir without its data"
    );
    let retried = u.run_hook_with("data-storage-attached", &["--storage", "data/0"]);
    assert_eq!(retried["exit_code"], 0, "{retried}");
    assert_eq!(disk.mounts(), vec![mount.clone()]);
    assert_eq!(disk.fs_type(), "ext4");
    assert_eq!(data_dir(u), mount.join("data"));
    assert!(mount.join("data/member/wal").is_dir());
    assert!(!snap_dir.join("member").exists());
    assert_eq!(u.starts(), starts + 1, "one restart moved it");
    assert_eq!(u.get("/on/the/way").as_deref(), Some("kept-on-storage"));
    assert_eq!(cluster_id(u), id);
    assert_healthy(u, 1);
    let fstab = fs::read_to_string(u.root.join("etc/fstab")).expect("fstab");
    assert!(
        fstab.lines().any(|l| l.starts_with("UUID=")
            && l.contains(&format!(" {} ext4 defaults,nofail 0 2", mount.display()))),
        "{fstab}"
    );

    // A restore swaps the data on the storage itself.
    let snap = u.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("snaps").display())],
    );
    snap.assert_completed();
    u.put("/after/snapshot", "gone");
    let restore = u.run_action(
        "restore",
        &[
            &format!("source={}", snap.result("snapshot.path")),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    restore.assert_completed();
    assert_eq!(data_dir(u), mount.join("data"));
    assert_eq!(u.get("/on/the/way").as_deref(), Some("kept-on-storage"));
    assert_eq!(u.get("/after/snapshot"), None);
    let restored = cluster_id(u);

    // Detached: the data comes back before the volume goes.
    model.detach_storage("etcd/0", "data/0");
    assert!(disk.mounts().is_empty(), "{:?}", disk.mounts());
    assert_eq!(data_dir(u), snap_dir);
    assert!(snap_dir.join("member/wal").is_dir());
    assert_eq!(u.get("/on/the/way").as_deref(), Some("kept-on-storage"));
    assert_eq!(cluster_id(u), restored);
    assert_healthy(u, 1);
    let fstab = fs::read_to_string(u.root.join("etc/fstab")).expect("fstab");
    assert!(!fstab.contains("media/etcd"), "{fstab}");

    // Another filesystem is left alone, and the unit says why.
    model.attach_storage("etcd/0", "data/1", &foreign.dev);
    let (status, msg) = u.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(msg.contains("holds a ext2 filesystem"), "{msg}");
    assert!(foreign.mounts().is_empty());
    assert_eq!(foreign.fs_type(), "ext2");
    assert_eq!(u.get("/on/the/way").as_deref(), Some("kept-on-storage"));
    u.assert_no_secrets();
}

/// layer-etcd's resources as it used them: a `core` snap installed first,
/// an `etcd.snap` installed with `snap install --dangerous`; a new etcd.snap
/// is installed at the unit's restart; a tarball cannot replace a snap.
#[test]
fn snap_resources_install_as_layer_etcd_installs_them() {
    let t = TestDir::new("deploy-snap-resource");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    let unit = model.prepare(0);
    let squashfs = |name: &str, fill: u8| {
        let mut bytes = b"hsqs".to_vec();
        bytes.extend([fill; 60]);
        let file = t.path().join(name);
        fs::write(&file, bytes).expect("snap file");
        file
    };
    attach(&unit, "core", &squashfs("core.snap", 1));
    attach(&unit, "etcd", &squashfs("etcd.snap", 2));
    model.deploy(unit);
    let u = model.unit("etcd/0");
    let res = |n: &str, f: &str| {
        u.dir
            .join(format!("juju/resources/{n}/{f}"))
            .display()
            .to_string()
    };
    let snaps = u.calls_of("snap");
    assert_eq!(
        snaps[0],
        ["install", "--dangerous", &res("core", "core.snap")]
    );
    assert_eq!(
        snaps[1],
        ["install", "--dangerous", &res("etcd", "etcd.snap")]
    );
    assert_healthy(u, 1);
    u.put("/over/snap/resource", "kept");

    // A new etcd.snap: installed at the unit's turn, etcd back on it.
    attach(u, "etcd", &squashfs("etcd.snap", 3));
    let before = u.calls_of("snap").len();
    let starts = u.starts();
    model.run_all("upgrade-charm");
    let snaps = u.calls_of("snap");
    assert!(
        snaps[before..].contains(&vec![
            "install".to_string(),
            "--dangerous".to_string(),
            res("etcd", "etcd.snap")
        ]),
        "{snaps:?}"
    );
    assert!(u.starts() > starts, "etcd restarted onto it");
    assert_healthy(u, 1);
    assert_eq!(u.get("/over/snap/resource").as_deref(), Some("kept"));
    let out = u.run_action("snap-upgrade", &[]);
    out.assert_completed();

    // A release tarball cannot replace the snap on a running unit.
    attach(u, "etcd", &release_tarball(&Etcd::get(V35), V35, t.path()));
    model.run_all("upgrade-charm");
    let (status, msg) = u.status_line();
    assert_eq!(status, "blocked", "{msg}");
    assert!(
        msg.contains("does not switch between a snap and a release tarball"),
        "{msg}"
    );
    assert_eq!(u.get("/over/snap/resource").as_deref(), Some("kept"));
}
