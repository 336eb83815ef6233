//! layer-etcd as it leaves a unit (charmed-kubernetes/layer-etcd @233f62a,
//! FACTS.md): its declared surface, the keys its config template renders,
//! its TLS files from easyrsa, its leader settings and relation data, and
//! a stand-in charm dir for `juju refresh --switch` to leave. Its hooks are
//! not played: after a refresh Juju runs the new charm's upgrade-charm
//! first, and nothing of the old charm runs again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::certs::{Client, Easyrsa, EASYRSA};
use super::{unit_ip, Etcd, Model, Spec, Unit};

/// (role, endpoint, interface) from its metadata.yaml and layers.
pub const ENDPOINTS: [(&str, &str, &str); 7] = [
    ("provides", "db", "etcd"),
    ("provides", "proxy", "etcd-proxy"),
    ("provides", "prometheus", "prometheus-manual"),
    ("provides", "grafana", "grafana-dashboard"),
    ("provides", "nrpe-external-master", "nrpe-external-master"),
    ("requires", "certificates", "tls-certificates"),
    ("peers", "cluster", "etcd"),
];

/// (option, type, default as JSON) from its config.yaml and layers.
pub const OPTIONS: [(&str, &str, &str); 12] = [
    ("port", "int", "2379"),
    ("management_port", "int", "2380"),
    ("heartbeat_interval", "int", "100"),
    ("election_timeout", "int", "1000"),
    ("channel", "string", "\"auto\""),
    ("snapshot_count", "string", "\"auto\""),
    ("snapd_refresh", "string", "\"max\""),
    ("tls_cipher_suites", "string", "\"\""),
    ("nagios_context", "string", "\"juju\""),
    ("nagios_servicegroups", "string", "\"\""),
    ("bind_to_all_interfaces", "boolean", "true"),
    ("bind_with_insecure_http", "boolean", "false"),
];

/// The layer-etcd release the test lays out.
pub const VERSION: &str = "3.4.23";
/// Its cluster token: six characters, A–Z and 0–9.
pub const TOKEN: &str = "K8S3TD";
/// Its default cipher suites (rendered when `tls_cipher_suites` is empty).
const CIPHERS: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305";

/// A charm dir standing in for layer-etcd: its metadata and options, and
/// a dispatch that does nothing.
pub fn charm_dir(under: &Path) -> PathBuf {
    let dir = under.join("layer-etcd-charm");
    fs::create_dir_all(&dir).expect("layer-etcd charm dir");
    let mut meta = json!({
        "name": "etcd",
        "storage": {"data": {"type": "block", "multiple": {"range": "0-1"}, "minimum-size": "1G"}},
        "resources": {
            "snapshot": {"type": "file", "filename": "snapshot.tar.gz"},
            "core": {"type": "file", "filename": "core.snap"},
            "etcd": {"type": "file", "filename": "etcd.snap"},
        },
    });
    for (role, name, interface) in ENDPOINTS {
        meta[role][name] = json!({ "interface": interface });
    }
    meta["provides"]["nrpe-external-master"]["scope"] = json!("container");
    let mut options = json!({});
    for (name, kind, default) in OPTIONS {
        let default: Value = serde_json::from_str(default).expect("default");
        options[name] = json!({"type": kind, "default": default, "description": name});
    }
    // JSON is YAML.
    fs::write(dir.join("metadata.yaml"), meta.to_string()).expect("metadata");
    fs::write(
        dir.join("config.yaml"),
        json!({ "options": options }).to_string(),
    )
    .expect("config");
    let dispatch = dir.join("dispatch");
    fs::write(&dispatch, "#!/bin/sh\nexit 0\n").expect("dispatch");
    fs::set_permissions(&dispatch, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// One member's values for layer-etcd's config template.
pub struct Member<'a> {
    pub spec: &'a Spec,
    pub data_dir: &'a Path,
    pub common: &'a Path,
    pub cluster: &'a str,
    pub state: &'a str,
}

/// The keys layer-etcd's `templates/etcd3.conf` renders, with the values it
/// renders for this member (bind_to_all_interfaces off, snapshot_count
/// `auto` on 3.4: 100000), v2 API, proxy and discovery keys included.
pub fn config(m: &Member) -> String {
    let s = m.spec;
    let client = format!("https://{}:{}", s.ip, s.client_port);
    let peer = format!("https://{}:{}", s.ip, s.peer_port);
    let sec = |c: &Path| {
        format!(
            "  cert-file: {c}/server.crt\n  key-file:  {c}/server.key\n  client-cert-auth: true\n  trusted-ca-file: {c}/ca.crt \n  auto-tls: false\n",
            c = c.display()
        )
    };
    format!(
        "name: {name}\nenable-v2: true\ndata-dir: {data}\nsnapshot-count: 100000\n\
         heartbeat-interval: 100\nelection-timeout:  1000\nquota-backend-bytes: 0\n\
         listen-peer-urls: {peer}\nlisten-client-urls: {client}\nmax-snapshots: 5\nmax-wals: 5\n\
         cors: \ninitial-advertise-peer-urls: {peer}\nadvertise-client-urls: {client}\n\
         discovery: \ndiscovery-fallback: 'proxy'\ndiscovery-proxy: \ndiscovery-srv: \n\
         initial-cluster: {cluster}\ninitial-cluster-token: '{TOKEN}'\n\
         initial-cluster-state: {state}\nstrict-reconfig-check: true\nproxy: 'off'\n\
         proxy-failure-wait: 5000\nproxy-refresh-interval: 30000\nproxy-dial-timeout: 1000\n\
         proxy-write-timeout: 5000\nproxy-read-timeout: 0\n\
         client-transport-security: \n{sec}peer-transport-security: \n{sec}\
         cipher-suites: [{CIPHERS}]\ndebug: false\nforce-new-cluster: false\n",
        name = s.member,
        data = m.data_dir.display(),
        cluster = m.cluster,
        state = m.state,
        sec = sec(m.common),
    )
}

/// A three-unit layer-etcd deployment, running.
pub struct Deployment {
    pub model: Model,
    /// `etcd:certificates` ↔ `easyrsa:client`.
    pub certificates: String,
    /// `etcd:db` ↔ the control plane (`kubernetes-control-plane/0`).
    pub db: String,
    /// A client with easyrsa's shared client pair.
    pub client: Client,
}

impl Deployment {
    /// Every member's client URL.
    pub fn endpoints(&self) -> String {
        self.model
            .units
            .iter()
            .map(|u| format!("https://{}:{}", u.spec.ip, self.model.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn wait_healthy(client: &Client, url: &str, unit: &Unit) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.healthy(url) {
        assert!(
            Instant::now() < deadline,
            "{} did not become healthy: {}",
            unit.spec.unit,
            unit.etcd_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lays out and starts `n` units exactly as layer-etcd leaves them: the
/// etcd snap on 3.4/stable running etcd 3.4, its config file, data in the
/// snap's data dir (a link to the revision's dir, as snapd makes it), TLS
/// files from easyrsa (0440), the members added one at a time as its
/// leader adds them, and its leader settings and relation data.
pub fn deploy(under: &Path, easyrsa: &Easyrsa, n: usize) -> Deployment {
    let etcd = Etcd::get(VERSION);
    let mut model = Model::new(under, &etcd);
    let charm = charm_dir(under);
    let specs: Vec<Spec> = (0..n)
        .map(|i| Spec {
            unit: format!("etcd/{i}"),
            member: format!("etcd{i}"),
            ip: unit_ip(i),
            client_port: model.client_port,
            peer_port: model.peer_port,
            tls: true,
            initial_cluster: None,
            token: TOKEN.into(),
        })
        .collect();
    for s in &specs {
        let unit = Unit::placed(under, &etcd, s.clone(), &model.dir, &charm);
        model.existing(unit);
    }
    let certificates = model.relate_existing("certificates", EASYRSA);
    let db = model.relate_existing("db", "kubernetes-control-plane/0");
    // What each unit asked easyrsa for, as layer-etcd asks: CN its
    // address; names its addresses, hostname, loopback and its peers'.
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut sans: Vec<String> = specs.iter().map(|s| s.ip.clone()).collect();
    sans.push(hostname.trim().to_string());
    sans.push("127.0.0.1".into());
    sans.sort();
    sans.dedup();
    let mut reldata = json!({});
    for s in &specs {
        let name = s.unit.replace('/', "_");
        reldata[&certificates][&s.unit] = json!({
            "unit_name": name,
            "common_name": s.ip,
            "sans": serde_json::to_string(&sans).expect("sans"),
            "certificate_name": name,
        });
        reldata["cluster:0"][&s.unit] = json!({ "db-ingress-address": s.ip });
    }
    model.seed(&json!({ "reldata": reldata }));
    easyrsa.answer(&model, &certificates);
    let issued = model.relation_data(&certificates, EASYRSA);
    let (client_cert, client_key) = easyrsa.client();
    let client = Client::new(
        &etcd,
        &under.join("layer-etcd-client"),
        &easyrsa.ca_pem(),
        &client_cert,
        &client_key,
    );

    let peer = |s: &Spec| format!("https://{}:{}", s.ip, s.peer_port);
    let mut cluster: Vec<String> = Vec::new();
    for (i, u) in model.units.iter().enumerate() {
        let s = &u.spec;
        let snap = Command::new(u.dir.join("bin/snap"))
            .args(["install", "etcd", "--channel=3.4/stable"])
            .output()
            .expect("snap install");
        assert!(snap.status.success(), "{snap:?}");
        let snap_data = u.root.join("var/snap/etcd");
        fs::create_dir_all(snap_data.join("230")).expect("snap data");
        std::os::unix::fs::symlink("230", snap_data.join("current")).expect("current link");
        let dropin = u
            .root
            .join("etc/systemd/system/snap.etcd.etcd.service.d/always-restart.conf");
        fs::create_dir_all(dropin.parent().expect("dir")).expect("drop-in dir");
        fs::write(&dropin, "[Service]\nRestart=always\nRestartSec=10\n").expect("drop-in");
        let common = u.root.join("var/snap/etcd/common");
        fs::create_dir_all(&common).expect("snap common dir");
        let name = s.unit.replace('/', "_");
        for (file, text) in [
            ("ca.crt", issued["ca"].clone()),
            ("server.crt", issued[&format!("{name}.server.cert")].clone()),
            ("server.key", issued[&format!("{name}.server.key")].clone()),
            ("client.crt", client_cert.clone()),
            ("client.key", client_key.clone()),
        ] {
            let path = common.join(file);
            fs::write(&path, text).expect("tls file");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).expect("chmod");
        }
        if i > 0 {
            let first = format!("https://{}:{}", specs[0].ip, s.client_port);
            // etcd refuses a member while the last one added is new to
            // the cluster ("unhealthy cluster"); layer-etcd's leader
            // retries on its next hook.
            let peer_urls = format!("--peer-urls={}", peer(s));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let added = client.run(&first, &["member", "add", &s.member, &peer_urls]);
                if added.status.success() {
                    break;
                }
                assert!(Instant::now() < deadline, "member add: {added:?}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        cluster.push(format!("{}={}", s.member, peer(s)));
        let text = config(&Member {
            spec: s,
            data_dir: &u.root.join("var/snap/etcd/current"),
            common: &common,
            cluster: &cluster.join(","),
            state: if i == 0 { "new" } else { "existing" },
        });
        fs::write(&u.conf, text).expect("config");
        u.start_no_wait();
        wait_healthy(&client, &format!("https://{}:{}", s.ip, s.client_port), u);
    }
    let urls: Vec<String> = specs
        .iter()
        .map(|s| format!("https://{}:{}", s.ip, s.client_port))
        .collect();
    let mut reldata = json!({});
    for s in &specs {
        reldata[&db][&s.unit] = json!({
            "client_ca": easyrsa.ca_pem(),
            "client_cert": client_cert,
            "client_key": client_key,
            "connection_string": urls.join(","),
            "version": VERSION,
        });
    }
    model.seed(&json!({
        "leader": {
            "token": TOKEN,
            "leader_address": urls[0],
            "cluster": cluster.join(","),
        },
        "reldata": reldata,
    }));
    Deployment {
        model,
        certificates,
        db,
        client,
    }
}
