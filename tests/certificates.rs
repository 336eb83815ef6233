//! TLS from the `certificates` relation: the charm asks a provider played by
//! the test (easyrsa's legacy protocol, or a v4 provider) for certificates a
//! real CA signs, and etcd serves clients and peers only over TLS with them.
//! A running HTTP cluster moves to TLS one member at a time while a client
//! writes through the `db` relation.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::certs::{serve, Client, Easyrsa, V4Provider, EASYRSA, V4};
use support::{assert_one_at_a_time, mode, now, restarts, Etcd, Model, TestDir};

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

/// Runs update-status until every unit is active with `n` peers, as Juju's
/// periodic hook would, at most a few rounds (a learner that was not yet
/// in sync when the leader last looked is promoted by a later hook).
fn settle(model: &Model, n: usize) {
    for _ in 0..4 {
        let done = model.units.iter().all(|u| {
            let (status, msg) = u.status_line();
            status == "active" && msg.starts_with(&format!("Healthy with {n} known peers"))
        });
        if done {
            break;
        }
        model.run_all("update-status");
    }
    assert_status(model, n);
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
    let (client, urls) = db_client(model, t, &db, "etcd/0", "db-client");
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    assert!(urls.split(',').all(|u| u.starts_with("https://")), "{urls}");
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
        easyrsa.client().0
    );
    settle(&model, 3);
    let db = assert_tls_everywhere(&model, &t, &easyrsa.ca_pem());
    charmed_kubernetes_relations(&model, &t, &easyrsa);
    let sans_before = model.relation_data(&rid, "etcd/0")["sans"].clone();

    // A unit added now joins over TLS with a certificate for its address;
    // one removed leaves the others' certificates and the clients' data right.
    model.add_unit(3);
    serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    settle(&model, 4);
    model.remove_unit("etcd/1");
    settle(&model, 3);
    assert_eq!(model.relation_data(&rid, "etcd/0")["sans"], sans_before);
    let data = model.relation_data(&db, "etcd/3");
    let mut want: Vec<String> = model
        .units
        .iter()
        .map(|u| format!("https://{}:{}", u.spec.ip, model.client_port))
        .collect();
    want.sort();
    assert_eq!(data["connection_string"], want.join(","));
    let (client, urls) = db_client(&model, &t, &db, "etcd/3", "after-scale");
    let got = client.run(&urls, &["get", "/over/tls", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "yes",
        "{got:?}"
    );
    let list = client.run(&urls, &["member", "list"]);
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
    let got = client.run(&urls, &["get", "/over/tls", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "yes",
        "{got:?}"
    );
    for u in &model.units {
        u.assert_no_secrets();
    }
}

/// GET `url` with the client pair a relation handed out (Python's ssl, as
/// a scraper would), returning the body.
fn https_get(dir: &std::path::Path, ca: &str, cert: &str, key: &str, url: &str) -> String {
    fs::create_dir_all(dir).expect("scrape dir");
    for (name, text) in [("ca", ca), ("cert", cert), ("key", key)] {
        fs::write(dir.join(name), text).expect("scrape file");
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import ssl, sys, urllib.request\nc = ssl.create_default_context(cafile=sys.argv[1])\nc.load_cert_chain(sys.argv[2], sys.argv[3])\nsys.stdout.write(urllib.request.urlopen(sys.argv[4], context=c, timeout=10).read().decode())",
        ])
        .arg(dir.join("ca"))
        .arg(dir.join("cert"))
        .arg(dir.join("key"))
        .arg(url)
        .output()
        .expect("python3");
    assert!(out.status.success(), "GET {url}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rest of a Charmed Kubernetes model around etcd, played as the real
/// charms play it: an etcd proxy on `proxy`, Prometheus on `prometheus`
/// (prometheus-manual) scraping `/metrics` with what it receives, Grafana
/// on `grafana` receiving the dashboard.
fn charmed_kubernetes_relations(model: &Model, t: &TestDir, easyrsa: &Easyrsa) {
    let proxy = model.relate("proxy", "proxy/0");
    let prometheus = model.relate("prometheus", "prometheus/0");
    let grafana = model.relate("grafana", "grafana/0");
    model.run_all("update-status");
    let mut peers: Vec<String> = model
        .units
        .iter()
        .map(|u| {
            format!(
                "{}=https://{}:{}",
                u.spec.member, u.spec.ip, model.peer_port
            )
        })
        .collect();
    peers.sort();
    let (client_cert, client_key) = easyrsa.client();
    for u in &model.units {
        let data = model.relation_data(&proxy, &u.spec.unit);
        let mut cluster: Vec<String> = data["cluster"].split(',').map(String::from).collect();
        cluster.sort();
        assert_eq!(cluster, peers, "{}: proxy cluster", u.spec.unit);
        assert_eq!(data["client_ca"].trim(), easyrsa.ca_pem().trim());
        assert_eq!(data["client_cert"], client_cert);
        assert_eq!(data["client_key"], client_key);
    }
    // One scrape job, from the leader only.
    let leader = model.leader();
    let mut jobs = Vec::new();
    for u in &model.units {
        let data = model.relation_data(&prometheus, &u.spec.unit);
        let requests: Vec<&String> = data
            .iter()
            .filter(|(k, v)| k.starts_with("request_") && !v.is_empty())
            .map(|(_, v)| v)
            .collect();
        if u.spec.unit == leader {
            assert_eq!(requests.len(), 1, "{data:?}");
            jobs.push(requests[0].clone());
        } else {
            assert!(requests.is_empty(), "{} asks too: {data:?}", u.spec.unit);
        }
    }
    let job: serde_json::Value = serde_json::from_str(&jobs[0]).expect("job json");
    assert_eq!(job["job_name"], "etcd");
    assert_eq!(job["job_data"]["scheme"], "https");
    let targets = job["job_data"]["static_configs"][0]["targets"]
        .as_array()
        .expect("targets");
    assert_eq!(targets.len(), model.units.len(), "{job}");
    let mut scraped = String::new();
    for target in targets {
        let url = format!("https://{}/metrics", target.as_str().expect("target"));
        scraped = https_get(
            &t.path().join("prometheus"),
            job["ca_cert"].as_str().expect("ca_cert"),
            job["client_cert"].as_str().expect("client_cert"),
            job["client_key"].as_str().expect("client_key"),
            &url,
        );
        assert!(scraped.contains("etcd_server_has_leader 1"), "{url}");
    }
    // The dashboard reads the datasource Prometheus names after itself,
    // and only metrics this etcd exports.
    let data = model.relation_data(&grafana, &leader);
    let request = data
        .iter()
        .find(|(k, v)| k.starts_with("request_") && !v.is_empty())
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no dashboard from {leader}: {data:?}"));
    let request: serde_json::Value = serde_json::from_str(&request).expect("dashboard json");
    assert_eq!(request["name"], "etcd");
    let panels = request["dashboard"]["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for p in panels {
        assert_eq!(p["datasource"], "prometheus - Juju generated source");
        for target in p["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("etcd_"))
                .collect();
            assert!(!metrics.is_empty() || expr.contains("process_"), "{expr}");
            for m in metrics {
                assert!(
                    scraped.lines().any(|l| l.starts_with(m)),
                    "{m} (in {expr}) is not exported by etcd"
                );
            }
        }
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
    // The first certificates are close to their expiry: each unit asks
    // for new ones (same key) and rolls onto them.
    provider.expiring.set(true);
    serve(&model, &rid, &|m, r| {
        let fresh = provider.answer(m, r);
        provider.expiring.set(false);
        fresh
    });
    model.run_all("update-status");
    settle(&model, 3);
    for u in &model.units {
        let pem =
            fs::read_to_string(common(&model, &u.spec.unit).join("server.crt")).expect("cert");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let cert = p.parse_x509().expect("x509");
        let left = cert.validity().not_after.timestamp() - now() as i64;
        assert!(
            left > 3600,
            "{} still runs the expiring certificate",
            u.spec.unit
        );
        let published = model.relation_data(&rid, &u.spec.unit);
        let csrs: Vec<serde_json::Value> =
            serde_json::from_str(&published["certificate_signing_requests"]).expect("csrs");
        assert_eq!(csrs.len(), 2, "the renewal became the current request");
        assert_eq!(
            mode(&common(&model, &u.spec.unit).join("server.key")) & 0o777,
            0o600
        );
    }
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

/// A client as `client/0` is now: with what `unit` last published on `db`
/// (connection string and credentials).
fn db_now(
    reldata: &std::path::Path,
    db: &str,
    unit: &str,
    etcd: &Etcd,
    dir: &std::path::Path,
) -> (Client, String) {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(reldata).unwrap_or_default()).unwrap_or_default();
    let d = &v[db][unit];
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let c = Client::new(
        etcd,
        dir,
        &s("client_ca"),
        &s("client_cert"),
        &s("client_key"),
    );
    (c, s("connection_string"))
}

/// `client/0` with what `unit` published on `db` now, its files under `name`.
fn db_client(model: &Model, t: &TestDir, db: &str, unit: &str, name: &str) -> (Client, String) {
    db_now(
        &model.dir.join("reldata.json"),
        db,
        unit,
        &model.etcd,
        &t.path().join(name),
    )
}

/// Counts, at each sample, the members that answer neither over http nor
/// https to a client with the `db` relation's credentials; and a writer that
/// puts a key every 100 ms through whatever the `db` relation says now. Both
/// stop when the flag drops.
struct Watch {
    stop: Arc<AtomicBool>,
    down: Arc<Mutex<Vec<usize>>>,
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn watch(model: &Model, t: &TestDir, db: &str, prefix: &str) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    let hosts: Vec<String> = model
        .units
        .iter()
        .map(|u| format!("{}:{}", u.spec.ip, model.client_port))
        .collect();
    let reldata = model.dir.join("reldata.json");
    {
        let (stop, down) = (stop.clone(), down.clone());
        let (reldata, db, etcd) = (reldata.clone(), db.to_string(), model.etcd.clone());
        let dir = t.path().join("probe");
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(900);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (probe, urls) = db_now(&reldata, &db, "etcd/0", &etcd, &dir);
                // The scheme clients are told first: a probe in the other
                // one waits for its dial timeout.
                let schemes = if urls.starts_with("https://") {
                    ["https", "http"]
                } else {
                    ["http", "https"]
                };
                let n = hosts
                    .iter()
                    .filter(|h| !schemes.iter().any(|s| probe.healthy(&format!("{s}://{h}"))))
                    .count();
                down.lock().expect("samples").push(n);
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
    {
        let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
        let (db, etcd, prefix) = (db.to_string(), model.etcd.clone(), prefix.to_string());
        let dir = t.path().join("writer");
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(900);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (c, urls) = db_now(&reldata, &db, "etcd/0", &etcd, &dir);
                let key = format!("/writer/{prefix}/{i:05}");
                if c.put(&urls, &key, "v") {
                    acked.lock().expect("acked").push(key);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
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
        refused,
        threads,
    }
}

impl Watch {
    fn finish(self) -> (Vec<usize>, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("watcher thread");
        }
        let down = self.down.lock().expect("samples").clone();
        let acked = self.acked.lock().expect("acked").clone();
        (down, acked, self.refused.load(Ordering::Relaxed))
    }
}

/// Runs `change` while a writer and a sampler watch the cluster through the
/// `db` relation; then checks no member was down beside another, the writer
/// got through, and each etcd restarted `per_unit` times, one at a time.
/// Returns the writes acknowledged.
fn watched(
    what: &str,
    model: &Model,
    t: &TestDir,
    db: &str,
    per_unit: usize,
    change: &dyn Fn(),
) -> Vec<String> {
    let since = now();
    let w = watch(model, t, db, &what.replace(' ', "-"));
    std::thread::sleep(Duration::from_secs(2));
    change();
    model.run_all("update-status");
    std::thread::sleep(Duration::from_secs(2));
    let (down, acked, refused) = w.finish();
    let mut seen = BTreeMap::new();
    for d in &down {
        *seen.entry(*d).or_insert(0) += 1;
    }
    let rolled = restarts(&model.units, since);
    println!(
        "{what}: members down per sample {seen:?}; {} writes acknowledged, {refused} refused; {} restarts",
        acked.len(),
        rolled.len()
    );
    // The sampler and the writer ran through the change (how often depends
    // on this machine's speed).
    assert!(down.len() >= 3, "{what}: too few samples: {down:?}");
    assert!(
        down.iter().all(|d| *d <= 1),
        "{what}: two members down at once: {seen:?}"
    );
    assert!(
        acked.len() >= 3,
        "{what}: the writer got few writes through: {}",
        acked.len()
    );
    assert_eq!(
        rolled.len(),
        per_unit * model.units.len(),
        "{what}: {rolled:?}"
    );
    assert_one_at_a_time(&rolled);
    assert_status(model, 3);
    acked
}

#[test]
fn a_running_http_cluster_moves_to_tls_then_renews_and_rotates_its_ca() {
    let t = TestDir::new("certs-switch");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    for n in 0..3 {
        model.add_unit(n);
    }
    settle(&model, 3);
    let db = model.relate("db", "client/0");
    let easyrsa = Easyrsa::new();
    let rid = model.relate("certificates", EASYRSA);
    let mut acked = Vec::new();
    // Two rolls: peers get their TLS identity, then everything moves.
    acked.extend(watched("HTTP to TLS", &model, &t, &db, 2, &|| {
        serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    }));
    assert_tls_everywhere(&model, &t, &easyrsa.ca_pem());
    // New server certificates from the same CA: one roll.
    acked.extend(watched(
        "certificates re-issued",
        &model,
        &t,
        &db,
        1,
        &|| {
            easyrsa.renew();
            serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
        },
    ));
    // A new CA: trusted beside the old one, then presented, then the old
    // one dropped: three rolls.
    let old_client = easyrsa.client();
    let old_ca = easyrsa.ca_pem();
    acked.extend(watched("CA rotated", &model, &t, &db, 3, &|| {
        easyrsa.rotate();
        serve(&model, &rid, &|m, r| easyrsa.answer(m, r));
    }));
    assert_ne!(easyrsa.ca_pem(), old_ca);
    assert_tls_everywhere(&model, &t, &easyrsa.ca_pem());
    let data = model.relation_data(&db, "etcd/0");
    assert_eq!(data["client_ca"], easyrsa.ca_pem());
    assert_eq!(data["client_cert"], easyrsa.client().0);
    // The old client pair is no longer let in.
    let old = Client::new(
        &model.etcd,
        &t.path().join("old"),
        &easyrsa.ca_pem(),
        &old_client.0,
        &old_client.1,
    );
    let refused = old.run(
        &data["connection_string"],
        &["get", "/writer/", "--prefix", "--limit=1"],
    );
    assert!(
        !refused.status.success(),
        "the old CA's client still gets in"
    );
    let (client, urls) = db_client(&model, &t, &db, "etcd/0", "check");
    let got = client.run(&urls, &["get", "/writer/", "--prefix", "--keys-only"]);
    let keys: Vec<String> = String::from_utf8_lossy(&got.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for k in &acked {
        assert!(keys.contains(k), "acknowledged write {k} lost");
    }
}

/// The `tls_*` options set on a running HTTP cluster move it the same way:
/// two rolls, one unit at a time.
#[test]
fn tls_options_on_a_running_cluster_move_it_to_tls() {
    use base64::Engine;
    let t = TestDir::new("certs-options");
    let mut model = Model::new(t.path(), &Etcd::get(V35));
    for n in 0..3 {
        model.add_unit(n);
    }
    settle(&model, 3);
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let tls = support::tls();
    let pairs: Vec<String> = [
        ("tls_ca_certificate", &tls.ca),
        ("tls_server_certificate", &tls.server_cert),
        ("tls_server_key", &tls.server_key),
        ("tls_client_certificate", &tls.client_cert),
        ("tls_client_key", &tls.client_key),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", b64(v)))
    .collect();
    let since = now();
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    model.config(&pairs);
    model.run_all("update-status");
    let rolled = restarts(&model.units, since);
    assert_eq!(rolled.len(), 6, "{rolled:?}");
    assert_one_at_a_time(&rolled);
    assert_status(&model, 3);
    assert_tls_everywhere(&model, &t, &tls.ca);
}

/// The cluster's ID and its members' IDs, asked through `endpoints`.
fn cluster_and_members(client: &Client, endpoints: &str) -> (u64, Vec<u64>) {
    let out = client.run(endpoints, &["member", "list", "-w", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut ids: Vec<u64> = v["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["ID"].as_u64())
        .collect();
    ids.sort();
    (v["header"]["cluster_id"].as_u64().unwrap_or(0), ids)
}

/// The keys under `prefix`, through `endpoints`.
fn keys_under(client: &Client, endpoints: &str, prefix: &str) -> Vec<String> {
    let out = client.run(endpoints, &["get", prefix, "--prefix", "--keys-only"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Charmed Kubernetes' etcd as layer-etcd leaves it (three members of etcd
/// 3.4 from the snap, easyrsa's certificates, a control plane on `db`) is
/// switched to this charm with `juju refresh` while a client writes through
/// `db` every 100 ms: same members, data, certificates and client URLs;
/// one restart per unit, one at a time; then snapshot and restore work.
#[test]
fn a_layer_etcd_cluster_is_refreshed_in_place() {
    use support::layer_etcd;
    let t = TestDir::new("refresh-layer-etcd");
    let easyrsa = Easyrsa::new();
    let old = layer_etcd::deploy(t.path(), &easyrsa, 3);
    let model = &old.model;
    let all = old.endpoints();
    let (cluster, members) = cluster_and_members(&old.client, &all);
    assert_eq!(members.len(), 3);
    assert!(old.client.put(&all, "/before/refresh", "kept"));
    let common = |u: &support::Unit| u.root.join("var/snap/etcd/common");
    let server_certs: Vec<String> = model
        .units
        .iter()
        .map(|u| fs::read_to_string(common(u).join("server.crt")).expect("server.crt"))
        .collect();
    let clients_before = model.relation_data(&old.db, "etcd/0")["connection_string"].clone();

    // Juju refuses a charm that drops an endpoint in use: the fake too.
    let lacking = t.path().join("lacking-db");
    fs::create_dir_all(&lacking).expect("dir");
    fs::write(
        lacking.join("metadata.yaml"),
        "name: etcd\npeers: {cluster: {interface: etcd}}\nrequires: {certificates: {interface: tls-certificates}}\n",
    )
    .expect("metadata");
    let refused = model
        .refresh_to(&lacking, &["etcd/0"])
        .expect_err("a refresh that breaks db");
    assert!(
        refused.contains("would break relation \"etcd:db\""),
        "{refused}"
    );

    let acked = watched("refresh from layer-etcd", model, &t, &old.db, 1, &|| {
        model
            .refresh(&["etcd/1", "etcd/0", "etcd/2"])
            .expect("refresh");
        serve(model, &old.certificates, &|m, r| easyrsa.answer(m, r));
    });

    // Same cluster, members, data, certificates and client URLs.
    assert_eq!(cluster_and_members(&old.client, &all), (cluster, members));
    let got = old
        .client
        .run(&all, &["get", "/before/refresh", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "kept");
    let written = keys_under(&old.client, &all, "/writer/refresh-from-layer-etcd/");
    for key in &acked {
        assert!(written.contains(key), "{key} was acknowledged and is gone");
    }
    assert_eq!(
        model.relation_data(&old.db, "etcd/0")["connection_string"],
        clients_before
    );
    for (u, cert) in model.units.iter().zip(&server_certs) {
        let name = &u.spec.member;
        assert_eq!(
            &fs::read_to_string(common(u).join("server.crt")).expect("crt"),
            cert
        );
        let conf = fs::read_to_string(&u.conf).expect("config");
        for gone in ["enable-v2", "proxy", "discovery"] {
            assert!(
                !conf.contains(gone),
                "{name}: {gone} still rendered:\n{conf}"
            );
        }
        assert!(conf.contains(&format!("name: \"{name}\"")), "{conf}");
        // The member moved out of the snap's data dir (a link snapd keeps)
        // into a dir of its own, in the same revision's dir.
        let snap_data = u.root.join("var/snap/etcd");
        assert!(fs::symlink_metadata(snap_data.join("current"))
            .expect("link")
            .is_symlink());
        assert!(snap_data
            .join(format!("230/{name}.etcd/member/wal"))
            .is_dir());
        assert!(!snap_data.join("230/member").exists());
        assert!(conf.contains(&format!("{name}.etcd\"")), "{conf}");
        for f in TLS_FILES {
            assert_eq!(mode(&common(u).join(f)) & 0o077, 0, "{name} {f}");
        }
        u.assert_no_secrets();
    }
    // The refresh's one restart: the data moved while etcd was down.
    let logs: Vec<String> = model.units[0]
        .calls_of("juju-log")
        .into_iter()
        .map(|c| c.join(" "))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("took over the etcd layer-etcd installed")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l.contains("data location")), "{logs:?}");

    // Snapshot and restore work on the adopted units.
    let u0 = model.unit("etcd/0");
    let snap = u0.run_action(
        "snapshot",
        &[
            "keys-version=v3",
            &format!("target={}", t.path().join("snaps").display()),
        ],
    );
    snap.assert_completed();
    assert_eq!(snap.result("snapshot.version"), layer_etcd::VERSION);
    let archive = snap.result("snapshot.path").to_string();
    assert!(old
        .client
        .put(&all, "/after/snapshot", "gone-after-restore"));
    let mut model = old.model;
    model.remove_unit("etcd/2");
    model.remove_unit("etcd/1");
    let u0 = model.unit("etcd/0");
    let one = format!("https://{}:{}", u0.spec.ip, model.client_port);
    assert_eq!(cluster_and_members(&old.client, &one).1.len(), 1);
    let restore = u0.run_action(
        "restore",
        &[
            &format!("source={archive}"),
            &format!("target={}", t.path().join("backups").display()),
        ],
    );
    restore.assert_completed();
    let (restored, _) = cluster_and_members(&old.client, &one);
    assert_ne!(restored, cluster, "a restore makes a new cluster");
    let got = old
        .client
        .run(&one, &["get", "/before/refresh", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "kept");
    let got = old
        .client
        .run(&one, &["get", "/after/snapshot", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "");
    assert!(
        fs::symlink_metadata(u0.root.join("var/snap/etcd/current"))
            .expect("link")
            .is_symlink(),
        "the restore swapped the member's dir, not the snap's data link"
    );
}
