//! Test support: real etcd servers on loopback, each inside a simulated
//! Juju unit (its own root dir, config file and fake hook tools), and the
//! charm's built binary run as `dispatch` exactly as the unit agent runs it.
//! The Juju side is played by `fakejuju.py` beside this file.

#![allow(dead_code)]

pub mod certs;
pub mod layer_etcd;
pub mod stores;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fakejuju() -> PathBuf {
    repo().join("tests/support/fakejuju.py")
}

fn deps_dir() -> PathBuf {
    std::env::var_os("ETCD_CHARM_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/deps"))
}

/// One installed etcd build (server and tools).
#[derive(Debug, Clone)]
pub struct Etcd {
    pub version: &'static str,
    pub bin: PathBuf,
}

impl Etcd {
    pub fn get(version: &'static str) -> Etcd {
        let bin = deps_dir().join(format!("etcd-{version}/bin"));
        assert!(
            bin.join("etcd").is_file(),
            "etcd {version} is not in {}; run ./charm deps (./charm test does)",
            bin.display()
        );
        Etcd { version, bin }
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// `snapshot status` / `snapshot restore` live in etcdutl from 3.5 on.
    pub fn snapshot_tool(&self) -> PathBuf {
        let utl = self.bin.join("etcdutl");
        if utl.is_file() {
            utl
        } else {
            self.bin.join("etcdctl")
        }
    }

    /// Runs a snapshot subcommand (`status`, `restore`) with this build's tool.
    pub fn snapshot_cmd(&self, args: &[&str]) -> Output {
        let out = Command::new(self.snapshot_tool())
            .arg("snapshot")
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcd snapshot tool");
        out
    }
}

/// A directory removed when dropped.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "etcd-charm-tests/{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Kept for a post-mortem when asked (hooks, calls, etcd logs).
        if std::env::var_os("ETCD_CHARM_KEEP_TEST_DIRS").is_some() {
            return;
        }
        // Read-only mounts a test made must not stop the cleanup.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.0.join("ro"))
            .output();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Claims `port` for this test run across processes (a test runner may
/// run each test in its own process): the first to create the claim file
/// has it. Claims live in a directory per run.
fn claim_port(port: u16) -> bool {
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| std::process::id().to_string());
    let dir = std::env::temp_dir().join(format!("etcd-charm-tests/ports-{run}"));
    let _ = fs::create_dir_all(&dir);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(port.to_string()))
        .is_ok()
}

/// A port free on every given address, never handed out twice in a run.
pub fn free_port(ips: &[&str]) -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..200 {
        let l = TcpListener::bind((ips[0], 0)).expect("bind loopback");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let all_free = ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok());
        let mut t = taken.lock().expect("port set");
        if all_free && t.insert(port) && claim_port(port) {
            return port;
        }
    }
    panic!("no free port found on {ips:?}");
}

/// TLS material for the whole test run: one CA, one server certificate
/// valid for every loopback address the tests use (with clientAuth too, as
/// etcd members use theirs as clients), and one client certificate.
pub struct Tls {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            SanType,
        };
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "etcd charm test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let leaf = |cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            p.distinguished_name.push(DnType::CommonName, cn);
            for i in 1..=8u8 {
                p.subject_alt_names
                    .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, i])));
            }
            p.extended_key_usages = usages;
            let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            "etcd server",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) =
            leaf("etcd client", vec![ExtendedKeyUsagePurpose::ClientAuth]);
        Tls {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    })
}

/// How a unit's etcd member is laid out.
#[derive(Debug, Clone)]
pub struct Spec {
    pub unit: String,
    pub member: String,
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub tls: bool,
    /// `name=peer-url,…` for every member; None: this member alone.
    pub initial_cluster: Option<String>,
    pub token: String,
}

impl Spec {
    pub fn single(index: usize, tls: bool) -> Spec {
        let ip = "127.0.0.1";
        Spec {
            unit: format!("etcd/{index}"),
            member: format!("etcd{index}"),
            ip: ip.to_string(),
            client_port: free_port(&[ip]),
            peer_port: free_port(&[ip]),
            tls,
            initial_cluster: None,
            token: format!("test-token-{}-{index}", std::process::id()),
        }
    }

    pub fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }
}

/// Three members on 127.0.0.1 with their own ports, one cluster.
pub fn cluster_specs(n: usize, tls: bool) -> Vec<Spec> {
    let mut specs: Vec<Spec> = (0..n).map(|i| Spec::single(i, tls)).collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.member, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let token = format!("test-cluster-{}", std::process::id());
    for s in &mut specs {
        s.initial_cluster = Some(initial.clone());
        s.token = token.clone();
    }
    specs
}

/// `n` units forming one cluster, started together and healthy.
pub fn start_cluster(under: &Path, etcd: &Etcd, n: usize) -> Vec<Unit> {
    let units: Vec<Unit> = cluster_specs(n, false)
        .into_iter()
        .map(|s| Unit::new(under, etcd, s))
        .collect();
    // Members wait for each other: start all, then wait for each.
    for u in &units {
        u.start_no_wait();
    }
    for u in &units {
        u.wait_healthy(Duration::from_secs(30));
    }
    units
}

/// The charm directory as Juju unpacks it, with the freshly built binary
/// as `dispatch`.
pub fn charm_dir(under: &Path) -> PathBuf {
    let dir = under.join("charm");
    if dir.join("dispatch").exists() {
        return dir;
    }
    fs::create_dir_all(&dir).expect("charm dir");
    for f in [
        "metadata.yaml",
        "actions.yaml",
        "config.yaml",
        "manifest.yaml",
    ] {
        fs::copy(repo().join(f), dir.join(f)).expect("copy charm file");
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_etcd-charm"), dir.join("dispatch"))
        .expect("link dispatch");
    dir
}

/// What `juju run` would report for one action.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: String,
    pub message: String,
    pub results: BTreeMap<String, String>,
    pub logs: Vec<String>,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn parse(out: &Output) -> Outcome {
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "fakejuju printed no outcome ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Outcome {
            status: s("status"),
            message: s("message"),
            results: v["results"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            logs: v["logs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            exit_code: v["exit_code"].as_i64().unwrap_or(-1),
            stdout: s("stdout"),
            stderr: s("stderr"),
        }
    }

    pub fn result(&self, key: &str) -> &str {
        self.results
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no result {key} in {:?}", self.results))
    }

    pub fn assert_completed(&self) -> &Self {
        assert_eq!(
            self.status, "completed",
            "action did not complete: {} (stderr: {})",
            self.message, self.stderr
        );
        self
    }

    /// A failure an operator can read: one sentence from action-fail, not
    /// "exit status N", not Rust debug output.
    pub fn assert_failed_with(&self, needle: &str) -> &Self {
        assert_eq!(self.status, "failed", "action should fail: {self:?}");
        assert!(
            self.message.contains(needle),
            "failure message {:?} lacks {needle:?}",
            self.message
        );
        assert!(!self.message.starts_with("exit status"), "{self:?}");
        for bad in ["panicked", "Error {", "Os {", "kind:", "\n"] {
            assert!(
                !self.message.contains(bad),
                "debug output in {:?}",
                self.message
            );
        }
        self
    }
}

pub struct Unit {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub conf: PathBuf,
    pub spec: Spec,
    pub etcd: Etcd,
    /// Values this test wrote into etcd (long enough to be unmistakable):
    /// none may ever appear in what the charm prints or logs.
    secrets: std::cell::RefCell<Vec<String>>,
}

fn python() -> Command {
    Command::new("python3")
}

pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Unit {
    pub fn new(under: &Path, etcd: &Etcd, spec: Spec) -> Unit {
        let dir = under.join(spec.unit.replace('/', "-"));
        let root = dir.join("root");
        let common = root.join("var/snap/etcd/common");
        fs::create_dir_all(&common).expect("unit dirs");
        let conf = common.join("etcd.conf.yml");
        let data_dir = root.join(format!("var/snap/etcd/current/{}.etcd", spec.member));
        let initial = spec
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", spec.member, spec.peer_url()));
        let mut yaml = format!(
            "name: {member}\n\
             data-dir: {data}\n\
             listen-client-urls: {client}\n\
             advertise-client-urls: {client}\n\
             listen-peer-urls: {peer}\n\
             initial-advertise-peer-urls: {peer}\n\
             initial-cluster: {initial}\n\
             initial-cluster-token: {token}\n\
             initial-cluster-state: new\n\
             logger: zap\n\
             log-level: warn\n",
            member = spec.member,
            data = data_dir.display(),
            client = spec.client_url(),
            peer = spec.peer_url(),
            token = spec.token,
        );
        if spec.tls {
            let t = tls();
            for (name, pem) in [
                ("ca.crt", &t.ca),
                ("server.crt", &t.server_cert),
                ("server.key", &t.server_key),
            ] {
                fs::write(common.join(name), pem).expect("write tls file");
            }
            yaml.push_str(&format!(
                "client-transport-security:\n  cert-file: {c}/server.crt\n  key-file: {c}/server.key\n  trusted-ca-file: {c}/ca.crt\n  client-cert-auth: true\n",
                c = common.display()
            ));
        }
        fs::write(&conf, yaml).expect("write etcd config");
        Unit::init(under, etcd, spec, conf, &[])
    }

    /// A unit whose etcd was laid out by hand (config, data dir, service)
    /// in the shared `model`: the charm finds it there and only reports.
    pub fn hand_laid(under: &Path, etcd: &Etcd, spec: Spec, model: &Path) -> Unit {
        let unit = Unit::new(under, etcd, spec);
        let model = model.display().to_string();
        let ip = unit.spec.ip.clone();
        Unit::init(
            under,
            etcd,
            unit.spec.clone(),
            unit.conf.clone(),
            &["--model", &model, "--address", &ip],
        )
    }

    /// A unit as Juju deploys it: nothing on it yet, its address from
    /// `network-get`, sharing `model` with the other units. The charm
    /// installs and configures etcd itself.
    pub fn deployed(under: &Path, etcd: &Etcd, spec: Spec, model: &Path) -> Unit {
        let dir = under.join(spec.unit.replace('/', "-"));
        let conf = dir.join("root/var/snap/etcd/common/etcd.conf.yml");
        let model = model.display().to_string();
        let ip = spec.ip.clone();
        Unit::init(
            under,
            etcd,
            spec,
            conf,
            &["--model", &model, "--address", &ip],
        )
    }

    fn init(under: &Path, etcd: &Etcd, spec: Spec, conf: PathBuf, extra: &[&str]) -> Unit {
        Unit::init_with(under, etcd, spec, conf, extra, &charm_dir(under))
    }

    /// A unit in `model` that another charm (at `charm`) runs.
    pub fn placed(under: &Path, etcd: &Etcd, spec: Spec, model: &Path, charm: &Path) -> Unit {
        let dir = under.join(spec.unit.replace('/', "-"));
        let conf = dir.join("root/var/snap/etcd/common/etcd.conf.yml");
        let model = model.display().to_string();
        let ip = spec.ip.clone();
        let extra = ["--model", model.as_str(), "--address", ip.as_str()];
        Unit::init_with(under, etcd, spec, conf, &extra, charm)
    }

    fn init_with(
        under: &Path,
        etcd: &Etcd,
        spec: Spec,
        conf: PathBuf,
        extra: &[&str],
        charm: &Path,
    ) -> Unit {
        let dir = under.join(spec.unit.replace('/', "-"));
        let root = dir.join("root");
        let out = python()
            .arg(fakejuju())
            .arg("init-unit")
            .arg(&dir)
            .args(["--unit", &spec.unit, "--charm-dir"])
            .arg(charm)
            .arg("--etcd-bin")
            .arg(&etcd.bin)
            .arg("--conf")
            .arg(&conf)
            .arg("--root")
            .arg(&root)
            .args(extra)
            .output()
            .expect("run fakejuju init-unit");
        assert!(out.status.success(), "init-unit: {out:?}");
        Unit {
            dir,
            root,
            conf,
            spec,
            etcd: etcd.clone(),
            secrets: Default::default(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root
            .join(format!("var/snap/etcd/current/{}.etcd", self.spec.member))
    }

    /// How many times the fake systemd started etcd on this unit.
    pub fn starts(&self) -> usize {
        fs::read_to_string(self.dir.join("svc/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"event\": \"start\""))
            .count()
    }

    /// What the fake systemd did to etcd on this unit (start, stop with
    /// whether the member led its raft then, enable, …), in order.
    pub fn events(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("svc/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The unit's workload status as `juju status` shows it.
    pub fn status_line(&self) -> (String, String) {
        let v: Value = serde_json::from_str(
            &fs::read_to_string(self.dir.join("juju/status.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        (
            v["status"].as_str().unwrap_or_default().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    }

    pub fn systemctl(&self, verb: &str) -> Output {
        Command::new(self.dir.join("bin/systemctl"))
            .args([verb, "snap.etcd.etcd"])
            .output()
            .expect("fake systemctl")
    }

    /// A started member with a 2 MiB backend quota, filled until etcd
    /// raises its NOSPACE alarm and refuses writes.
    pub fn out_of_space(under: &Path, etcd: &Etcd, spec: Spec) -> Unit {
        let unit = Unit::new(under, etcd, spec);
        let conf = fs::read_to_string(&unit.conf).expect("conf");
        fs::write(&unit.conf, format!("{conf}quota-backend-bytes: 2097152\n")).expect("quota");
        unit.start();
        unit.put("/kept", "before-the-alarm");
        let value = "x".repeat(64 * 1024);
        let refused = (0..200).any(|i| {
            let out = unit.etcdctl(&["put", &format!("/fill/{i}"), &value]);
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("database space exceeded")
        });
        assert!(refused, "a 2 MiB quota took 12 MiB of writes");
        unit
    }

    /// Whether the fake systemd starts etcd at boot.
    pub fn is_enabled(&self) -> bool {
        self.systemctl("is-enabled").status.success()
    }

    /// The machine restarts: etcd is killed at once, then started if it is
    /// enabled at boot. Returns whether it was started.
    pub fn reboot(&self) -> bool {
        let out = python()
            .arg(fakejuju())
            .arg("reboot")
            .arg(&self.dir)
            .output()
            .expect("fakejuju reboot");
        assert!(out.status.success(), "reboot: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("reboot json");
        v["started_at_boot"].as_bool().expect("started_at_boot")
    }

    /// Starts etcd through the fake systemctl and waits until it serves.
    pub fn start(&self) {
        let out = self.systemctl("start");
        assert!(out.status.success(), "systemctl start: {out:?}");
        self.wait_healthy(Duration::from_secs(30));
    }

    pub fn start_no_wait(&self) {
        let out = self.systemctl("start");
        assert!(out.status.success(), "systemctl start: {out:?}");
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.etcdctl(&["endpoint", "health", "--command-timeout=2s"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} did not become healthy: {}\nlog: {}",
                self.spec.member,
                String::from_utf8_lossy(&out.stderr),
                self.etcd_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn etcd_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("svc/etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn etcd_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.dir.join("svc/etcd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state != "Z" && state != "X").then_some(pid)
    }

    pub fn kill_etcd(&self) {
        if let Some(pid) = self.etcd_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.etcd_pid().is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.etcd.tool("etcdctl"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.spec.client_url()))
            .arg("--dial-timeout=2s");
        if self.spec.tls {
            let common = self.root.join("var/snap/etcd/common");
            let client = self.dir.join("client");
            if !client.join("client.crt").exists() {
                fs::create_dir_all(&client).expect("client dir");
                fs::write(client.join("client.crt"), &tls().client_cert).expect("client crt");
                fs::write(client.join("client.key"), &tls().client_key).expect("client key");
            }
            cmd.arg(format!("--cacert={}", common.join("ca.crt").display()))
                .arg(format!("--cert={}", client.join("client.crt").display()))
                .arg(format!("--key={}", client.join("client.key").display()));
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    /// A secret (a store's key) that must never appear in what the charm
    /// says on this unit.
    pub fn remember_secret(&self, value: &str) {
        self.remember(value.as_bytes());
    }

    fn remember(&self, value: &[u8]) {
        const MIN: usize = 10;
        let mut secrets = self.secrets.borrow_mut();
        if value.len() >= MIN && secrets.len() < 256 {
            let sample = &value[..value.len().min(40)];
            secrets.push(String::from_utf8_lossy(sample).into_owned());
        }
    }

    /// Everything the charm said on this unit (every hook-tool call and
    /// every action or hook outcome, stdout and stderr included) holds no
    /// key material and no value a test stored in etcd.
    pub fn assert_no_secrets(&self) {
        // What an operator sees: action results, failures and progress,
        // the unit log, the status, and any stdout/stderr. (Relation data
        // is not among them: the db relation hands clients their key.)
        const SEEN: [&str; 6] = [
            "action-set",
            "action-fail",
            "action-log",
            "juju-log",
            "status-set",
            "application-version-set",
        ];
        let mut said = String::new();
        for call in self.calls() {
            if SEEN.contains(&call["tool"].as_str().unwrap_or_default()) {
                said.push_str(&call["args"].to_string());
            }
        }
        said.push_str(
            &fs::read_to_string(self.dir.join("juju/outcomes.jsonl")).unwrap_or_default(),
        );
        for marker in ["PRIVATE KEY", "-----BEGIN"] {
            assert!(
                !said.contains(marker),
                "{marker} in the charm's output: {said}"
            );
        }
        if self.spec.tls {
            let t = tls();
            for pem in [&t.server_key, &t.client_key] {
                for line in pem
                    .lines()
                    .filter(|l| l.len() > 20 && !l.starts_with("-----"))
                {
                    assert!(
                        !said.contains(line),
                        "TLS key material in the charm's output"
                    );
                }
            }
        }
        for v in self.secrets.borrow().iter() {
            assert!(
                !said.contains(v.as_str()),
                "etcd value {v:?} in the charm's output"
            );
        }
    }

    pub fn put(&self, key: &str, value: &str) {
        self.remember(value.as_bytes());
        let out = self.etcdctl(&["put", key, value]);
        assert!(out.status.success(), "put {key}: {out:?}");
    }

    /// Puts a value read from stdin (values over the argv limit).
    pub fn put_stdin(&self, key: &str, value: &[u8]) {
        self.remember(value);
        let mut cmd = Command::new(self.etcd.tool("etcdctl"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.spec.client_url()))
            .args(["put", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("etcdctl put");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value)
            .expect("write value");
        let out = child.wait_with_output().expect("etcdctl put");
        assert!(out.status.success(), "put {key}: {out:?}");
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        assert!(out.status.success(), "get {key}: {out:?}");
        let v = String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string();
        (!v.is_empty()).then_some(v)
    }

    /// (cluster ID, member ID, revision) as etcd reports them.
    pub fn status(&self) -> (u64, u64, i64) {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        assert!(out.status.success(), "endpoint status: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("status json");
        let h = &v[0]["Status"]["header"];
        (
            h["cluster_id"].as_u64().expect("cluster_id"),
            h["member_id"].as_u64().expect("member_id"),
            h["revision"].as_i64().expect("revision"),
        )
    }

    /// Fills etcd with about `bytes` of values that compress like real
    /// data (not at all well), `chunk` bytes each.
    pub fn fill(&self, bytes: usize, chunk: usize) {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for i in 0..bytes.div_ceil(chunk) {
            let value: Vec<u8> = (0..chunk)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % 64) as usize]
                })
                .collect();
            self.put_stdin(&format!("/fill/{i:06}"), &value);
        }
    }

    fn action_cmd(&self, name: &str, params: &[&str]) -> Command {
        let mut cmd = python();
        cmd.arg(fakejuju())
            .arg("run-action")
            .arg(&self.dir)
            .arg(name)
            .args(params)
            .arg("--json");
        cmd
    }

    /// Runs an action as `juju run` would and returns what it reports.
    pub fn run_action(&self, name: &str, params: &[&str]) -> Outcome {
        self.run_action_env(name, params, &[])
    }

    /// An action with test-only environment (`ETCD_CHARM_TEST_*`).
    pub fn run_action_env(&self, name: &str, params: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut cmd = self.action_cmd(name, params);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run-action");
        Outcome::parse(&out)
    }

    pub fn spawn_action(&self, name: &str, params: &[&str]) -> Child {
        self.action_cmd(name, params)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run-action")
    }

    pub fn finish_action(mut child: Child, limit: Duration) -> Outcome {
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("action did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_end(&mut stdout);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_end(&mut stderr);
        }
        let status = child.wait().expect("wait");
        Outcome::parse(&Output {
            status,
            stdout,
            stderr,
        })
    }

    pub fn run_hook(&self, name: &str) -> Value {
        self.run_hook_with(name, &[])
    }

    pub fn run_hook_with(&self, name: &str, flags: &[&str]) -> Value {
        let out = python()
            .arg(fakejuju())
            .arg("run-hook")
            .arg(&self.dir)
            .arg(name)
            .arg("--json")
            .args(flags)
            .output()
            .expect("run-hook");
        serde_json::from_slice(&out.stdout).expect("hook outcome")
    }

    /// Runs this unit's hooks and actions from another charm directory
    /// (for example the packed charm, unzipped).
    pub fn use_charm_dir(&self, dir: &Path) {
        let path = self.dir.join("juju/unit.json");
        let mut info: Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("unit.json")).expect("json");
        info["charm_dir"] = Value::String(dir.display().to_string());
        fs::write(&path, info.to_string()).expect("write unit.json");
    }

    /// Every hook-tool call the charm made, in order.
    pub fn calls(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("juju/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn calls_of(&self, tool: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c["tool"] == tool)
            .map(|c| {
                c["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.kill_etcd();
        // Every test is also a grep of what the charm said.
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

/// Files in a dir, sorted by name (empty if missing).
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

/// The entries of a tar.gz: (name, mode, bytes).
pub fn read_archive(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let f = fs::File::open(path).expect("open archive");
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
    ar.entries()
        .expect("tar entries")
        .map(|e| {
            let mut e = e.expect("tar entry");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read entry");
            (
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
                data,
            )
        })
        .collect()
}

/// A tmpfs of a given size mounted for one test (the suite runs as root, as
/// CI does); unmounted when dropped. For full-disk faults.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: u64) -> Tmpfs {
        fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount");
        assert!(
            ok.success(),
            "this test needs root to mount a tmpfs at {}",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }

    /// tmpfs can change size while mounted.
    pub fn resize(&self, size: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(ok.success(), "remount {}", self.0.display());
    }

    pub fn used(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df used")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Several units sharing one fake Juju model: the test plays `juju
/// deploy`, `add-unit`, `remove-unit` and `config`; the fake runs the hooks
/// Juju would, in Juju's order, until the model settles.
pub struct Model {
    pub dir: PathBuf,
    pub under: PathBuf,
    pub etcd: Etcd,
    pub units: Vec<Unit>,
    pub client_port: u16,
    pub peer_port: u16,
    pub tls: bool,
}

pub fn unit_ip(n: usize) -> String {
    format!("127.0.0.{}", n + 2)
}

impl Model {
    pub fn new(under: &Path, etcd: &Etcd) -> Model {
        Model::create(under, etcd, false)
    }

    /// With the tls_* options set at deploy time (base64 PEM, as `juju
    /// config` carries them): etcd speaks only TLS, to clients and peers.
    pub fn new_tls(under: &Path, etcd: &Etcd) -> Model {
        Model::create(under, etcd, true)
    }

    fn create(under: &Path, etcd: &Etcd, tls_on: bool) -> Model {
        let ips: Vec<String> = (0..6).map(unit_ip).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let client_port = free_port(&ips);
        let mut peer_port = free_port(&ips);
        while peer_port == client_port {
            peer_port = free_port(&ips);
        }
        let dir = under.join("model");
        fs::create_dir_all(&dir).expect("model dir");
        // The application's config as `juju deploy --config` gives it.
        let mut config = serde_json::json!({
            "leader": null,
            "units": {},
            "config": {
                "port": client_port,
                "management_port": peer_port,
                "bind_to_all_interfaces": false,
            },
        });
        if tls_on {
            use base64::Engine;
            let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
            let t = tls();
            for (k, v) in [
                ("tls_ca_certificate", &t.ca),
                ("tls_server_certificate", &t.server_cert),
                ("tls_server_key", &t.server_key),
                ("tls_client_certificate", &t.client_cert),
                ("tls_client_key", &t.client_key),
            ] {
                config["config"][k] = Value::String(b64(v));
            }
        }
        fs::write(dir.join("model.json"), config.to_string()).expect("model.json");
        Model {
            dir,
            under: under.to_path_buf(),
            etcd: etcd.clone(),
            units: Vec::new(),
            client_port,
            peer_port,
            tls: tls_on,
        }
    }

    /// A unit laid out but not yet deployed (to attach resources first).
    pub fn prepare(&self, n: usize) -> Unit {
        let spec = Spec {
            unit: format!("etcd/{n}"),
            member: format!("etcd-{n}"),
            ip: unit_ip(n),
            client_port: self.client_port,
            peer_port: self.peer_port,
            tls: self.tls,
            initial_cluster: None,
            token: String::new(),
        };
        Unit::deployed(&self.under, &self.etcd, spec, &self.dir)
    }

    fn fake(&self, args: &[&str]) -> Vec<Value> {
        let out = python()
            .arg(fakejuju())
            .args(args)
            .output()
            .expect("run fakejuju");
        assert!(out.status.success(), "fakejuju {args:?}: {out:?}");
        hooks_succeeded(&out.stdout)
    }

    /// `juju add-unit`: install, leader-elected (first) or
    /// leader-settings-changed, config-changed, start, the peer relation.
    pub fn deploy(&mut self, unit: Unit) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        let udir = unit.dir.display().to_string();
        self.units.push(unit);
        self.fake(&["add-unit", &dir, &udir])
    }

    /// A unit that another charm ran until `juju refresh` switched it to
    /// this one: it joins the model without this charm's install hook.
    pub fn adopt(&mut self, unit: Unit) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        let udir = unit.dir.display().to_string();
        self.units.push(unit);
        self.fake(&["add-unit", &dir, &udir, "--refreshed"])
    }

    /// `juju attach-storage <unit> data/0=<device>`: storage-attached.
    pub fn attach_storage(&self, unit: &str, id: &str, location: &str) -> Vec<Value> {
        let udir = self.unit(unit).dir.display().to_string();
        self.fake(&["attach-storage", &udir, id, location])
    }

    /// `juju detach-storage <id>`: storage-detaching, then it is gone.
    pub fn detach_storage(&self, unit: &str, id: &str) -> Vec<Value> {
        let udir = self.unit(unit).dir.display().to_string();
        self.fake(&["detach-storage", &udir, id])
    }

    /// A unit another charm has run in this model all along: no hook runs.
    pub fn existing(&mut self, unit: Unit) {
        let dir = self.dir.display().to_string();
        let udir = unit.dir.display().to_string();
        self.units.push(unit);
        self.fake(&["existing-unit", &dir, &udir]);
    }

    /// A relation that was there before this charm: no hook runs.
    pub fn relate_existing(&self, endpoint: &str, remote_unit: &str) -> String {
        let dir = self.dir.display().to_string();
        let out = python()
            .arg(fakejuju())
            .args(["relate", &dir, endpoint, remote_unit, "--existing"])
            .output()
            .expect("relate");
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["relation"].as_str().unwrap_or_default().to_string()
    }

    /// Leader settings and relation data as the charm before left them.
    pub fn seed(&self, seed: &Value) {
        let file = self.dir.join(format!("seed-{}.json", std::process::id()));
        fs::write(&file, seed.to_string()).expect("seed file");
        let dir = self.dir.display().to_string();
        self.fake(&["seed", &dir, &file.display().to_string()]);
        let _ = fs::remove_file(&file);
    }

    /// `juju refresh --switch` to this charm; units run upgrade-charm and
    /// config-changed in `order`. Err: Juju's refusal.
    pub fn refresh(&self, order: &[&str]) -> Result<Vec<Value>, String> {
        self.refresh_to(&charm_dir(&self.under), order)
    }

    /// `juju refresh --switch` to the charm at `charm`.
    pub fn refresh_to(&self, charm: &Path, order: &[&str]) -> Result<Vec<Value>, String> {
        let dir = self.dir.display().to_string();
        let charm = charm.display().to_string();
        let order = order.join(",");
        let out = python()
            .arg(fakejuju())
            .args(["refresh", &dir, &charm, "--order", &order])
            .output()
            .expect("run fakejuju refresh");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(hooks_succeeded(&out.stdout))
    }

    pub fn add_unit(&mut self, n: usize) -> Vec<Value> {
        let unit = self.prepare(n);
        self.deploy(unit)
    }

    /// A new unit that becomes the leader as it arrives, before it has a
    /// member of its own.
    pub fn add_leading_unit(&mut self, n: usize) -> Vec<Value> {
        let unit = self.prepare(n);
        let dir = self.dir.display().to_string();
        let udir = unit.dir.display().to_string();
        self.units.push(unit);
        self.fake(&["add-unit", &dir, &udir, "--lead"])
    }

    /// Leadership moves to `unit`.
    pub fn elect(&self, unit: &str) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        self.fake(&["elect", &dir, unit])
    }

    /// `juju remove-unit`: departed on both sides, stop, remove.
    pub fn remove_unit(&mut self, name: &str) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        let ran = self.fake(&["remove-unit", &dir, name]);
        self.units.retain(|u| u.spec.unit != name);
        ran
    }

    pub fn config(&self, pairs: &[&str]) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        let mut args = vec!["config", dir.as_str()];
        args.extend_from_slice(pairs);
        self.fake(&args)
    }

    /// `juju integrate etcd:<endpoint> <remote app>`; returns the relation id.
    pub fn relate(&self, endpoint: &str, remote_unit: &str) -> String {
        let dir = self.dir.display().to_string();
        let out = python()
            .arg(fakejuju())
            .args(["relate", &dir, endpoint, remote_unit])
            .output()
            .expect("relate");
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        for hook in v["ran"].as_array().cloned().unwrap_or_default() {
            assert_eq!(hook["exit_code"], 0, "{hook}");
        }
        v["relation"].as_str().unwrap_or_default().to_string()
    }

    /// `juju remove-relation`: departed and broken on every unit.
    pub fn unrelate(&self, rid: &str) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        self.fake(&["unrelate", &dir, rid])
    }

    /// The remote application sets its unit's (or with `app`, its
    /// application's) data; every unit runs relation-changed; settle.
    pub fn remote_set(
        &self,
        rid: &str,
        who: &str,
        data: &BTreeMap<String, String>,
        app: bool,
    ) -> Vec<Value> {
        let file = self
            .dir
            .join(format!("remote-set-{}.json", std::process::id()));
        fs::write(&file, serde_json::to_string(data).expect("json")).expect("remote data");
        let dir = self.dir.display().to_string();
        let f = file.display().to_string();
        let mut args = vec!["remote-set", dir.as_str(), rid, who, f.as_str()];
        if app {
            args.push("--app");
        }
        let ran = self.fake(&args);
        let _ = fs::remove_file(&file);
        ran
    }

    /// What `unit` published in relation `rid`, as the other side reads it.
    pub fn relation_data(&self, rid: &str, unit: &str) -> BTreeMap<String, String> {
        let v: Value = serde_json::from_str(
            &fs::read_to_string(self.dir.join("reldata.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        v[rid][unit]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn run_all(&self, hook: &str) -> Vec<Value> {
        let dir = self.dir.display().to_string();
        self.fake(&["run-all", &dir, hook])
    }

    pub fn unit(&self, name: &str) -> &Unit {
        self.units
            .iter()
            .find(|u| u.spec.unit == name)
            .unwrap_or_else(|| panic!("no unit {name}"))
    }

    pub fn leader(&self) -> String {
        let v: Value = serde_json::from_str(
            &fs::read_to_string(self.dir.join("model.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        v["leader"].as_str().unwrap_or_default().to_string()
    }
}

/// The hooks a fake-model command ran (its JSON on stdout), each asserted
/// to have succeeded.
fn hooks_succeeded(stdout: &[u8]) -> Vec<Value> {
    let ran: Vec<Value> = serde_json::from_slice(stdout).expect("hook outcomes");
    for hook in &ran {
        assert_eq!(
            hook["exit_code"], 0,
            "hook {} on {} failed: {}",
            hook["hook"], hook["unit"], hook["stderr"]
        );
    }
    ran
}

/// A real block device for a test: a loop device over a sparse file,
/// unmounted wherever it is mounted and released when dropped.
pub struct LoopDevice {
    pub dev: String,
}

impl LoopDevice {
    pub fn new(dir: &Path, name: &str, size: u64) -> LoopDevice {
        let file = dir.join(format!("{name}.img"));
        fs::File::create(&file)
            .and_then(|f| f.set_len(size))
            .expect("image file");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        LoopDevice {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }

    /// Where the kernel has it mounted.
    pub fn mounts(&self) -> Vec<PathBuf> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|x| *x == "-")?;
                (f.get(dash + 2) == Some(&self.dev.as_str())).then(|| PathBuf::from(f[4]))
            })
            .collect()
    }

    /// Its filesystem type, as blkid reads it.
    pub fn fs_type(&self) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "TYPE", &self.dev])
            .output()
            .expect("blkid");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        for m in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// Seconds since the epoch, as the fake model stamps its events.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Each unit's etcd restarts after `since` (seconds since the epoch), as
/// (unit, stopped at, started at, led the raft when stopped), by stop time.
pub fn restarts(units: &[Unit], since: f64) -> Vec<(String, f64, f64, Option<bool>)> {
    let mut out = Vec::new();
    for u in units {
        let mut stopped: Option<(f64, Option<bool>)> = None;
        for e in u.events() {
            let at = e["time"].as_f64().unwrap_or(0.0);
            if at < since {
                continue;
            }
            match e["event"].as_str() {
                Some("stop") => stopped = Some((at, e["leader"].as_bool())),
                Some("start") => {
                    if let Some((s, led)) = stopped.take() {
                        out.push((u.spec.unit.clone(), s, at, led));
                    }
                }
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// No two restarts overlap: each member stopped only after the one before
/// had started again (and the charm saw it healthy).
pub fn assert_one_at_a_time(restarts: &[(String, f64, f64, Option<bool>)]) {
    for pair in restarts.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "{} stopped at {:.3} while {} was down ({:.3}..{:.3}): {restarts:?}",
            pair[1].0,
            pair[1].1,
            pair[0].0,
            pair[0].1,
            pair[0].2
        );
    }
}

/// A plain TCP relay on loopback: whatever connects to `listen` is joined
/// to `to`. It holds the port while it runs (so nothing else can bind
/// it) and makes another server answer there. Stopped when dropped.
pub struct Relay(Child);

const RELAY: &str = r#"
import socket, sys, threading
lip, lport, tip, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ls = socket.socket()
# As servers do (etcd too): connections the stopped etcd left in TIME_WAIT
# must not keep the port.
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((lip, lport))
ls.listen(64)
print("ready", flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    c, _ = ls.accept()
    try:
        u = socket.create_connection((tip, tport), timeout=5)
    except OSError:
        c.close()
        continue
    u.settimeout(None)
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"#;

impl Relay {
    pub fn start(listen: (&str, u16), to: (&str, u16)) -> Relay {
        use std::io::BufRead;
        let mut child = python()
            .args([
                "-c",
                RELAY,
                listen.0,
                &listen.1.to_string(),
                to.0,
                &to.1.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the relay");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("relay stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("relay ready line");
        assert_eq!(line.trim(), "ready", "the relay did not bind {listen:?}");
        Relay(child)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
