//! TLS from the `certificates` relation: the charm asks a provider played by
//! the test (easyrsa's legacy protocol, or a v4 provider) for certificates a
//! real CA signs, and etcd serves clients and peers only over TLS with them.
//! A running HTTP cluster moves to TLS one member at a time while a client
//! writes through the `db` relation.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::certs::{serve, Client, Easyrsa, V4Provider, EASYRSA, V4};
use support::{mode, Etcd, Model, TestDir};

const V35: &str = "3.5.16";
const TLS_FILES: [&str; 5] = [
    "ca.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

fn common(model: &Model, unit: &str) -> std::path::PathBuf {
    model.unit(unit).root.join("var/snap/etcd/common")
}

fn assert_status(model: &Model, n: usize) {
    for u in &model.units {
        let (status, msg) = u.status_line();
        assert_eq!(status, "active", "{}: {msg}", u.spec.unit);
        assert!(
            msg.starts_with(&format!("Healthy with {n} known peers")),
            "{}: {msg}",
            u.spec.unit
        );
    }
}

/// Every member serves clients and peers over TLS only: the files are in
/// place and private, the member list names https peer URLs, a client with
/// the `db` relation's data reads and writes, plain HTTP is refused.
fn assert_tls_everywhere(model: &Model, t: &TestDir, ca: &str) -> String {
    for u in &model.units {
        let dir = common(model, &u.spec.unit);
        for f in TLS_FILES {
            assert_eq!(mode(&dir.join(f)) & 0o777, 0o600, "{} {f}", u.spec.unit);
        }
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).expect("ca"), ca);
        let conf = fs::read_to_string(&u.conf).expect("config");
        assert!(conf.contains("client-cert-auth: true"), "{conf}");
        assert!(!conf.contains("\"http://"), "{conf}");
    }
    let db = model.relate("db", "client/0");
    let data = model.relation_data(&db, "etcd/0");
    let urls = data["connection_string"].clone();
    assert_eq!(urls.split(',').count(), 3, "{data:?}");
    assert!(urls.split(',').all(|u| u.starts_with("https://")), "{urls}");
    let client = Client::new(
        &model.etcd,
        &t.path().join("db-client"),
        &data["client_ca"],
        &data["client_cert"],
        &data["client_key"],
    );
    let put = client.run(&urls, &["put", "/over/tls", "yes"]);
    assert!(put.status.success(), "{put:?}");
    let list = client.run(&urls, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("member list");
    for m in v["members"].as_array().expect("members") {
        for p in m["peerURLs"].as_array().expect("peer urls") {
            assert!(p.as_str().unwrap_or("").starts_with("https://"), "{m}");
        }
    }
    for u in &model.units {
        let url = format!("https://{}:{}", u.spec.ip, model.client_port);
        let got = client.run(&url, &["get", "/over/tls", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "yes", "{url}");
        let plain = client.run(
            &format!("http://{}:{}", u.spec.ip, model.client_port),
            &["get", "/over/tls"],
        );
        assert!(
            !plain.status.success(),
            "plain HTTP answered on {}",
            u.spec.unit
        );
    }
    db
}

#[test]
fn easyrsa_at_deploy_gives_three_units_tls() {
    let t = TestDir::new("certs-easyrsa");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    let easyrsa = Easyrsa::new();
    let rid = model.relate("certificates", EASYRSA);
    for n in 0..3 {
        model.add_unit(n);
    }
    // Nothing starts on plain HTTP before the provider answers.
    for u in &model.units {
        assert!(u.etcd_pid().is_none(), "{} started", u.spec.unit);
        let (status, msg) = u.status_line();
        assert_eq!(status, "waiting", "{msg}");
        assert!(msg.contains("waiting for easyrsa to sign"), "{msg}");
    }
    serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    model.run_all("update-status");
    if std::env::var("DEBUG_CALLS").is_ok() {
        let u = model.unit("etcd/1");
        let calls = fs::read_to_string(u.dir.join("juju/calls.jsonl")).unwrap_or_default();
        let mut last = 0.0;
        for l in calls
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let at = v["time"].as_f64().unwrap_or(0.0);
            println!(
                "DEBUG +{:.3} {} {}",
                at - last,
                v["tool"],
                v["args"].to_string().chars().take(80).collect::<String>()
            );
            last = at;
        }
    }
    // What each unit asked for, as layer-etcd asks it.
    let req = model.relation_data(&rid, "etcd/1");
    assert_eq!(req["unit_name"], "etcd_1");
    assert_eq!(req["certificate_name"], "etcd_1");
    assert_eq!(req["common_name"], model.unit("etcd/1").spec.ip);
    let sans: Vec<String> = serde_json::from_str(&req["sans"]).expect("sans");
    assert!(sans.contains(&model.unit("etcd/1").spec.ip), "{sans:?}");
    assert!(sans.contains(&"127.0.0.1".to_string()), "{sans:?}");
    // The shared client pair is used as layer-etcd uses it.
    assert_eq!(
        fs::read_to_string(common(&model, "etcd/2").join("client.crt")).expect("client"),
        easyrsa.client.0
    );
    assert_status(&model, 3);
    let db = assert_tls_everywhere(&model, &t, &easyrsa.ca.pem);
    let sans_before = model.relation_data(&rid, "etcd/0")["sans"].clone();

    // A unit added now joins over TLS with a certificate for its address;
    // one removed leaves the others' certificates and the clients' data right.
    model.add_unit(3);
    serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    model.run_all("update-status");
    assert_status(&model, 4);
    model.remove_unit("etcd/1");
    model.run_all("update-status");
    assert_status(&model, 3);
    assert_eq!(model.relation_data(&rid, "etcd/0")["sans"], sans_before);
    let data = model.relation_data(&db, "etcd/3");
    let mut want: Vec<String> = model
        .units
        .iter()
        .map(|u| format!("https://{}:{}", u.spec.ip, model.client_port))
        .collect();
    want.sort();
    assert_eq!(data["connection_string"], want.join(","));
    let client = Client::new(
        &model.etcd,
        &t.path().join("after-scale"),
        &data["client_ca"],
        &data["client_cert"],
        &data["client_key"],
    );
    let got = client.run(
        &data["connection_string"],
        &["get", "/over/tls", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "yes",
        "{got:?}"
    );
    let list = client.run(&data["connection_string"], &["member", "list"]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        text.contains("etcd-3") && !text.contains("etcd-1,"),
        "{text}"
    );

    // The provider goes away: etcd keeps serving TLS, and says why it is
    // blocked.
    model.unrelate(&rid);
    for u in &model.units {
        let (status, msg) = u.status_line();
        assert_eq!(status, "blocked", "{msg}");
        assert!(msg.contains("the certificates relation is gone"), "{msg}");
    }
    let got = client.run(
        &data["connection_string"],
        &["get", "/over/tls", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "yes",
        "{got:?}"
    );
    for u in &model.units {
        u.assert_no_secrets();
    }
}

#[test]
fn a_v4_provider_at_deploy_gives_three_units_tls() {
    let t = TestDir::new("certs-v4");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    let provider = V4Provider::new();
    let rid = model.relate("certificates", V4);
    for n in 0..3 {
        model.add_unit(n);
    }
    serve(&model, &rid, &|m, r| provider.answer(m, r));
    model.run_all("update-status");
    assert_status(&model, 3);
    // The keys never left the units: what they published holds none.
    for u in &model.units {
        let published = model.relation_data(&rid, &u.spec.unit);
        let key = fs::read_to_string(common(&model, &u.spec.unit).join("server.key")).expect("key");
        assert!(published.values().all(|v| !v.contains(key.trim())));
        assert!(!published.values().any(|v| v.contains("PRIVATE KEY")));
    }
    // No shared client pair: `db` clients get the CA, and bring a
    // certificate of their own from the same provider.
    let db = model.relate("db", "client/0");
    let data = model.relation_data(&db, "etcd/0");
    assert!(!data.contains_key("client_key"), "{data:?}");
    assert_eq!(data["client_ca"], provider.ca.pem);
    let (cert, key) = provider.ca.issue("kube-apiserver", &[], false);
    let client = Client::new(
        &model.etcd,
        &t.path().join("c"),
        &data["client_ca"],
        &cert,
        &key,
    );
    let put = client.run(&data["connection_string"], &["put", "/v4", "ok"]);
    assert!(put.status.success(), "{put:?}");
    let plain = client.run(
        &format!(
            "http://{}:{}",
            model.unit("etcd/1").spec.ip,
            model.client_port
        ),
        &["get", "/v4"],
    );
    assert!(!plain.status.success());
}

/// Counts, at each sample, the members that answer neither over http nor
/// https; and a writer that puts a key every 100 ms through whatever the
/// `db` relation says now. Both stop when the flag drops.
struct Watch {
    stop: Arc<AtomicBool>,
    down: Arc<Mutex<Vec<usize>>>,
    acked: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn watch(model: &Model, t: &TestDir, db: &str, ca: &Easyrsa) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let probe = Client::new(
        &model.etcd,
        &t.path().join("probe"),
        &ca.ca.pem,
        &ca.client.0,
        &ca.client.1,
    );
    let hosts: Vec<String> = model
        .units
        .iter()
        .map(|u| format!("{}:{}", u.spec.ip, model.client_port))
        .collect();
    {
        let (stop, down) = (stop.clone(), down.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = hosts
                    .iter()
                    .filter(|h| {
                        !["http", "https"].iter().any(|s| {
                            probe
                                .run(&format!("{s}://{h}"), &["endpoint", "health"])
                                .status
                                .success()
                        })
                    })
                    .count();
                down.lock().expect("samples").push(n);
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
    {
        let (stop, acked) = (stop.clone(), acked.clone());
        let reldata = model.dir.join("reldata.json");
        let db = db.to_string();
        let dir = t.path().join("writer");
        let etcd = model.etcd.clone();
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let v: serde_json::Value =
                    serde_json::from_str(&fs::read_to_string(&reldata).unwrap_or_default())
                        .unwrap_or_default();
                let d = &v[&db]["etcd/0"];
                let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
                let c = Client::new(
                    &etcd,
                    &dir,
                    &s("client_ca"),
                    &s("client_cert"),
                    &s("client_key"),
                );
                let key = format!("/writer/{i:05}");
                if c.run(&s("connection_string"), &["put", &key, "v"])
                    .status
                    .success()
                {
                    acked.lock().expect("acked").push(key);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    Watch {
        stop,
        down,
        acked,
        threads,
    }
}

impl Watch {
    fn finish(self) -> (Vec<usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("watcher thread");
        }
        let down = self.down.lock().expect("samples").clone();
        let acked = self.acked.lock().expect("acked").clone();
        (down, acked)
    }
}

#[test]
fn a_running_http_cluster_moves_to_tls_one_member_at_a_time() {
    let t = TestDir::new("certs-switch");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    for n in 0..3 {
        model.add_unit(n);
    }
    model.run_all("update-status");
    assert_status(&model, 3);
    let db = model.relate("db", "client/0");
    let easyrsa = Easyrsa::new();
    let w = watch(&model, &t, &db, &easyrsa);
    std::thread::sleep(Duration::from_secs(2));
    let rid = model.relate("certificates", EASYRSA);
    serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    model.run_all("update-status");
    std::thread::sleep(Duration::from_secs(2));
    let (down, acked) = w.finish();
    let mut seen = BTreeMap::new();
    for d in &down {
        *seen.entry(*d).or_insert(0) += 1;
    }
    println!(
        "members down per sample: {seen:?}; {} writes acknowledged",
        acked.len()
    );
    assert!(down.len() > 10, "too few samples: {down:?}");
    assert!(
        down.iter().all(|d| *d <= 1),
        "two members down at once: {seen:?}"
    );
    assert!(
        acked.len() > 20,
        "the writer got few writes through: {}",
        acked.len()
    );
    assert_status(&model, 3);
    let db2 = assert_tls_everywhere(&model, &t, &easyrsa.ca.pem);
    assert_ne!(db2, db);
    let data = model.relation_data(&db, "etcd/0");
    let client = Client::new(
        &model.etcd,
        &t.path().join("check"),
        &data["client_ca"],
        &data["client_cert"],
        &data["client_key"],
    );
    let got = client.run(
        &data["connection_string"],
        &["get", "/writer/", "--prefix", "--keys-only"],
    );
    let keys: Vec<String> = String::from_utf8_lossy(&got.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for k in &acked {
        assert!(keys.contains(k), "acknowledged write {k} lost");
    }
}
