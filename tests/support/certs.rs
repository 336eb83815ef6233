//! The charms at the other end of `etcd:certificates`, played by the test:
//! easyrsa (the legacy tls-certificates protocol) and a v4 provider
//! (self-signed-certificates). Each writes exactly the keys the real charm
//! writes, with certificates a real CA made here signs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use serde_json::{json, Value};

use super::{Etcd, Model};

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).expect("ca cert");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// A certificate and key for `cn`; with `server`, for those names and
    /// both server and client auth (etcd members use theirs as peers), as
    /// easyrsa issues them.
    pub fn issue(&self, cn: &str, sans: &[String], server: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        for s in sans {
            p.subject_alt_names
                .push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.as_str().try_into().expect("dns name")),
                });
        }
        p.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Signs a CSR as it asks (its names and key usages); `expiring`: valid
    /// from 50 minutes ago for 10 more, five sixths of its life used.
    pub fn sign(&self, csr_pem: &str, expiring: bool) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).expect("a valid CSR");
        if expiring {
            let now = time::OffsetDateTime::now_utc();
            csr.params.not_before = now - time::Duration::minutes(50);
            csr.params.not_after = now + time::Duration::minutes(10);
        }
        csr.signed_by(&self.cert, &self.key)
            .expect("sign CSR")
            .pem()
    }
}

/// What each unit of the etcd application published in relation `rid`.
fn requests(model: &Model, rid: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    model
        .units
        .iter()
        .map(|u| (u.spec.unit.clone(), model.relation_data(rid, &u.spec.unit)))
        .collect()
}

/// easyrsa/0 on `easyrsa:client`: one CA, one client pair for the whole
/// application, a server certificate per requesting unit (re-issued when
/// its names change, or when the test renews or rotates).
pub struct Easyrsa {
    state: RefCell<EasyState>,
}

struct EasyState {
    ca: TestCa,
    client: (String, String),
    issued: BTreeMap<String, (String, String, String, String)>,
}

pub const EASYRSA: &str = "easyrsa/0";

impl Easyrsa {
    pub fn new() -> Easyrsa {
        let ca = TestCa::new("easyrsa test CA");
        let client = ca.issue("client", &[], false);
        Easyrsa {
            state: RefCell::new(EasyState {
                ca,
                client,
                issued: BTreeMap::new(),
            }),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.state.borrow().ca.pem.clone()
    }

    pub fn client(&self) -> (String, String) {
        self.state.borrow().client.clone()
    }

    /// New server certificates from the same CA on the next answer (vault's
    /// `reissue-certificates`).
    pub fn renew(&self) {
        self.state.borrow_mut().issued.clear();
    }

    /// A new CA: new client pair and server certificates on the next answer.
    pub fn rotate(&self) {
        let mut st = self.state.borrow_mut();
        st.ca = TestCa::new("easyrsa test CA, rotated");
        st.client = st.ca.issue("client", &[], false);
        st.issued.clear();
    }

    /// Answers every request; true when it issued anything new.
    pub fn answer(&self, model: &Model, rid: &str) -> bool {
        let mut fresh = false;
        let mut st = self.state.borrow_mut();
        let mut data = BTreeMap::new();
        data.insert("ca".to_string(), st.ca.pem.clone());
        data.insert("client.cert".to_string(), st.client.0.clone());
        data.insert("client.key".to_string(), st.client.1.clone());
        for req in requests(model, rid).values() {
            let (Some(name), Some(cn), Some(sans)) = (
                req.get("unit_name"),
                req.get("common_name"),
                req.get("sans"),
            ) else {
                continue;
            };
            let current = st.issued.get(name);
            if current.is_none_or(|(c, s, _, _)| c != cn || s != sans) {
                let names: Vec<String> = serde_json::from_str(sans).expect("sans JSON");
                let (cert, key) = st.ca.issue(cn, &names, true);
                st.issued
                    .insert(name.clone(), (cn.clone(), sans.clone(), cert, key));
                fresh = true;
            }
            let (cn, _, cert, key) = &st.issued[name];
            data.insert(format!("{name}.server.cert"), cert.clone());
            data.insert(format!("{name}.server.key"), key.clone());
            data.insert(
                format!("{name}.processed_requests"),
                json!({ cn: {"cert": cert, "key": key} }).to_string(),
            );
        }
        drop(st);
        if fresh {
            model.remote_set(rid, EASYRSA, &data, false);
        }
        fresh
    }
}

/// self-signed-certificates/0 (tls-certificates v4): signs every CSR the
/// etcd units publish; answers in its application databag.
pub struct V4Provider {
    pub ca: TestCa,
    signed: RefCell<BTreeMap<String, String>>,
    /// Sign the next certificates close to their expiry.
    pub expiring: std::cell::Cell<bool>,
}

pub const V4: &str = "self-signed-certificates/0";

impl V4Provider {
    pub fn new() -> V4Provider {
        V4Provider {
            ca: TestCa::new("self-signed-certificates test CA"),
            signed: RefCell::new(BTreeMap::new()),
            expiring: std::cell::Cell::new(false),
        }
    }

    pub fn answer(&self, model: &Model, rid: &str) -> bool {
        let mut fresh = false;
        for req in requests(model, rid).values() {
            let Some(list) = req.get("certificate_signing_requests") else {
                continue;
            };
            let list: Vec<Value> = serde_json::from_str(list).expect("CSR list JSON");
            for r in list {
                let csr = r["certificate_signing_request"]
                    .as_str()
                    .expect("a CSR")
                    .trim()
                    .to_string();
                let mut signed = self.signed.borrow_mut();
                if let std::collections::btree_map::Entry::Vacant(e) = signed.entry(csr) {
                    let cert = self.ca.sign(e.key(), self.expiring.get());
                    e.insert(cert);
                    fresh = true;
                }
            }
        }
        if fresh {
            let answers: Vec<Value> = self
                .signed
                .borrow()
                .iter()
                .map(|(csr, cert)| {
                    json!({
                        "certificate": cert,
                        "certificate_signing_request": csr,
                        "ca": self.ca.pem,
                        "chain": [cert, self.ca.pem],
                    })
                })
                .collect();
            let mut data = BTreeMap::new();
            data.insert(
                "certificates".to_string(),
                Value::Array(answers).to_string(),
            );
            model.remote_set(rid, V4, &data, true);
        }
        fresh
    }
}

/// Lets a provider answer until nothing new is asked (units join one at a
/// time, each asking for its certificate as it comes); bounded.
pub fn serve(model: &Model, rid: &str, answer: &dyn Fn(&Model, &str) -> bool) {
    for _ in 0..12 {
        if !answer(model, rid) {
            return;
        }
    }
    panic!("the certificates provider was still issuing after 12 rounds");
}

/// A client with credentials from files: `etcdctl` against some endpoints.
pub struct Client {
    pub etcdctl: PathBuf,
    pub dir: PathBuf,
    pems: [String; 3],
}

impl Client {
    /// Writes `ca`, `cert`, `key` (whichever are given) under `dir`.
    pub fn new(etcd: &Etcd, dir: &Path, ca: &str, cert: &str, key: &str) -> Client {
        fs::create_dir_all(dir).expect("client dir");
        for (name, text) in [("ca", ca), ("cert", cert), ("key", key)] {
            fs::write(dir.join(name), text).expect("client file");
        }
        Client {
            etcdctl: etcd.tool("etcdctl"),
            dir: dir.to_path_buf(),
            pems: [ca.to_string(), cert.to_string(), key.to_string()],
        }
    }

    /// One request in this process (etcd-client), with etcdctl's timeouts:
    /// the samplers ask many times a second, and an etcdctl process each
    /// time cost more CPU than the cluster under test.
    fn in_process<T>(
        &self,
        endpoints: &str,
        call: impl AsyncFnOnce(&mut etcd_client::Client) -> Result<T, etcd_client::Error>,
    ) -> bool {
        use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
        let urls: Vec<&str> = endpoints.split(',').filter(|u| !u.is_empty()).collect();
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(4));
        if endpoints.contains("https://") {
            let [ca, cert, key] = &self.pems;
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if !cert.is_empty() && !key.is_empty() {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return false;
        };
        rt.block_on(async {
            let asked = async {
                let mut c = etcd_client::Client::connect(urls, Some(opts)).await?;
                call(&mut c).await
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(6), asked).await,
                Ok(Ok(_))
            )
        })
    }

    /// As `etcdctl endpoint health`: a quorum read through `endpoint`.
    pub fn healthy(&self, endpoint: &str) -> bool {
        self.in_process(endpoint, async |c| c.get("health", None).await)
    }

    /// As `etcdctl put` (and etcd's Go client): through the endpoints in
    /// turn until one acknowledges, so a member restarting is failed over.
    pub fn put(&self, endpoints: &str, key: &str, value: &str) -> bool {
        endpoints
            .split(',')
            .filter(|u| !u.is_empty())
            .any(|url| self.in_process(url, async |c| c.put(key, value, None).await))
    }

    pub fn run(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=2s", "--command-timeout=4s"]);
        if endpoints.contains("https://") {
            cmd.arg(format!("--cacert={}", self.dir.join("ca").display()))
                .arg(format!("--cert={}", self.dir.join("cert").display()))
                .arg(format!("--key={}", self.dir.join("key").display()));
        }
        cmd.args(args).output().expect("run etcdctl")
    }
}
