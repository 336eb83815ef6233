//! The `certificates` endpoint (interface `tls-certificates`). Two protocols
//! share that interface name and Juju relates either, so this unit speaks
//! both at once and takes whichever answer comes:
//!
//! - legacy (easyrsa, reactive vault; what layer-etcd spoke): the unit asks
//!   with `unit_name`, `common_name`, `sans`, `certificate_name`; the
//!   provider's lowest-numbered unit answers `ca`, `chain`, `client.cert`,
//!   `client.key` (a client pair shared by the application) and
//!   `<unit_name>.server.cert` / `.server.key`;
//! - v4 (self-signed-certificates, manual-tls-certificates, lego, the vault
//!   machine charm): the unit makes its own keys (they never leave it) and
//!   publishes CSRs in `certificate_signing_requests`; the provider's
//!   application answers in `certificates`. There is no shared client pair:
//!   this unit asks for a client certificate of its own too.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use serde::{Deserialize, Serialize};

use crate::etcd::render::TlsPems;
use crate::juju::{unit_number, HookTools, JujuError, Settings};

pub const ENDPOINT: &str = "certificates";
const V4_REQUESTS: &str = "certificate_signing_requests";
const V4_ANSWERS: &str = "certificates";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Juju(#[from] JujuError),
    #[error("cannot keep this unit's TLS key in {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a certificate signing request for {cn}: {detail}")]
    Csr { cn: String, detail: String },
}

/// Which protocol the provider answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Legacy,
    V4,
}

/// What the relation gives this unit.
#[derive(Debug, Clone)]
pub enum Certs {
    /// Not related.
    Unrelated,
    /// Related; the provider has not answered this unit's request yet.
    Waiting(String),
    Ready {
        pems: TlsPems,
        protocol: Protocol,
    },
}

/// What this unit asks for: its certificate's common name and every name
/// clients and peers reach it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub unit: String,
    pub common_name: String,
    pub sans: Vec<String>,
}

impl Request {
    /// CN = the unit's address; SANs = its addresses, the host name and
    /// loopback (the charm's own calls and `etcdctl` on the unit).
    pub fn new(unit: &str, addresses: &[String]) -> Request {
        let mut sans: Vec<String> = addresses.to_vec();
        if let Some(h) = hostname() {
            sans.push(h);
        }
        sans.push("127.0.0.1".into());
        let mut seen = std::collections::HashSet::new();
        sans.retain(|s| !s.is_empty() && seen.insert(s.clone()));
        Request {
            unit: unit.to_string(),
            common_name: addresses.first().cloned().unwrap_or_default(),
            sans,
        }
    }

    /// `etcd/0` → `etcd_0`, the name the legacy protocol files it under.
    fn legacy_name(&self) -> String {
        self.unit.replace('/', "_")
    }
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// Publishes this unit's request in both protocols and reads the answer.
pub fn exchange(
    tools: &dyn HookTools,
    state_dir: &Path,
    req: &Request,
) -> Result<Certs, CertError> {
    let Some(rid) = tools.relation_ids(ENDPOINT)?.into_iter().next() else {
        return Ok(Certs::Unrelated);
    };
    let keys = KeyStore::new(state_dir.join("tls"));
    let name = req.legacy_name();
    let mut units = tools.relation_list(&rid)?;
    units.sort_by_key(|u| unit_number(u));
    let provider = units.first().cloned();
    let answer = match &provider {
        None => Err("waiting for the certificates provider to join".to_string()),
        Some(first) => {
            let app = first.split('/').next().unwrap_or(first).to_string();
            match legacy_answer(&tools.relation_get(&rid, first)?, &name) {
                Some(pems) => Ok((pems, Protocol::Legacy)),
                None => {
                    let app_data = tools.relation_get_app(&rid, &app)?;
                    v4_exchange(&keys, req, &app_data)?
                        .map(|p| (p, Protocol::V4))
                        .ok_or(format!(
                            "waiting for {app} to sign this unit's certificates"
                        ))
                }
            }
        }
    };
    let sans = published_sans(&tools.relation_get(&rid, &req.unit)?, req);
    // Published after the answer is read: a v4 renewal adds requests.
    let mut csrs = Vec::new();
    for role in ROLES {
        for csr in keys.requests(role, req)? {
            csrs.push(V4Request {
                certificate_signing_request: csr,
                ca: false,
            });
        }
    }
    tools.relation_set(
        &rid,
        &[
            ("unit_name", name.clone()),
            ("common_name", req.common_name.clone()),
            ("sans", sans),
            ("certificate_name", name),
            (
                V4_REQUESTS,
                serde_json::to_string(&csrs).unwrap_or_default(),
            ),
        ],
    )?;
    Ok(match answer {
        Ok((pems, protocol)) => Certs::Ready { pems, protocol },
        Err(why) => Certs::Waiting(why),
    })
}

/// The `sans` to publish: the request already there when it asks for the
/// same common name and at least these names (layer-etcd's, which also
/// named the peers, after `juju refresh`), so the provider re-issues
/// nothing; else this request's.
fn published_sans(mine: &Settings, req: &Request) -> String {
    let ours = serde_json::to_string(&req.sans).unwrap_or_default();
    if mine.get("common_name") != Some(&req.common_name) {
        return ours;
    }
    let Some(text) = mine.get("sans") else {
        return ours;
    };
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(there) if req.sans.iter().all(|s| there.contains(s)) => text.clone(),
        _ => ours,
    }
}

/// The two v4 requests a unit makes: its server (and peer) certificate,
/// and a client certificate for its own calls.
const ROLES: [&str; 2] = ["server", "client"];

/// When a certificate has used two thirds of its lifetime, it is renewed:
/// a new request (same key) goes out beside the current one, which stays in
/// use until the provider answers.
fn renewal_due(cert_pem: &str) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let v = cert.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now >= from + (to - from) * 2 / 3
}

/// The v4 answers to this unit's requests: a renewal's answer once it has
/// come (it then becomes the current request), else the current one's.
/// Starts a renewal when a certificate in use is due.
fn v4_exchange(
    keys: &KeyStore,
    req: &Request,
    app_data: &Settings,
) -> Result<Option<TlsPems>, CertError> {
    let answers: Vec<V4Answer> = app_data
        .get(V4_ANSWERS)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let find = |csr: &str| {
        answers
            .iter()
            .find(|a| !a.revoked && a.certificate_signing_request.trim() == csr.trim())
    };
    let mut found = Vec::new();
    for role in ROLES {
        let current = keys.csr(role, req, role == "server")?;
        let renewed = keys
            .renewal(role)
            .and_then(|next| find(&next).map(|a| (next, a)));
        let answer = match renewed {
            Some((next, a)) => {
                keys.promote(role, &next)?;
                a
            }
            None => match find(&current.csr) {
                Some(a) => a,
                None => return Ok(None),
            },
        };
        if renewal_due(&answer.certificate) && keys.renewal(role).is_none() {
            keys.renew(role, req, role == "server")?;
        }
        found.push((answer, current.key));
    }
    let mut found = found.into_iter();
    let (Some((s, server_key)), Some((c, client_key))) = (found.next(), found.next()) else {
        return Ok(None);
    };
    let ca = pem_block(Some(&s.ca)).unwrap_or_default();
    if ca.is_empty() {
        return Ok(None);
    }
    let mut bundle = ca.clone();
    for extra in &s.chain {
        let t = extra.trim();
        if t.contains("-----BEGIN") && t != s.certificate.trim() && t != ca.trim() {
            bundle.push_str(t);
            bundle.push('\n');
        }
    }
    let (Some(server_cert), Some(client_cert)) = (
        pem_block(Some(&s.certificate)),
        pem_block(Some(&c.certificate)),
    ) else {
        return Ok(None);
    };
    Ok(Some(TlsPems {
        ca: bundle,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }))
}

fn pem_block(v: Option<&String>) -> Option<String> {
    let v = v?.trim();
    if !v.contains("-----BEGIN") {
        return None;
    }
    Some(format!("{v}\n"))
}

/// The legacy answer, when it is whole.
fn legacy_answer(data: &Settings, name: &str) -> Option<TlsPems> {
    let ca = pem_block(data.get("ca"))?;
    // Intermediates are trusted beside the CA, so certificates they signed
    // verify whichever chain a peer presents.
    let chain = pem_block(data.get("chain")).filter(|c| c.trim() != ca.trim());
    Some(TlsPems {
        ca: match chain {
            Some(c) => format!("{ca}{c}"),
            None => ca,
        },
        server_cert: pem_block(data.get(&format!("{name}.server.cert")))?,
        server_key: pem_block(data.get(&format!("{name}.server.key")))?,
        client_cert: pem_block(data.get("client.cert"))?,
        client_key: pem_block(data.get("client.key"))?,
    })
}

#[derive(Serialize)]
struct V4Request {
    certificate_signing_request: String,
    ca: bool,
}

#[derive(Deserialize)]
struct V4Answer {
    #[serde(default)]
    certificate: String,
    #[serde(default)]
    certificate_signing_request: String,
    #[serde(default)]
    ca: String,
    #[serde(default)]
    chain: Vec<String>,
    #[serde(default)]
    revoked: bool,
}

/// A private key made on this unit and the CSR it signed.
struct Csr {
    key: String,
    csr: String,
}

/// This unit's v4 keys and requests: kept in 0600 files under the charm's
/// state dir; a request is made anew only when the names it asks for change,
/// the key only when it is missing.
struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    fn new(dir: PathBuf) -> KeyStore {
        KeyStore { dir }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    fn write(&self, name: &str, text: &str) -> Result<(), CertError> {
        let path = self.dir.join(name);
        let fail = |source| CertError::Store {
            path: path.clone(),
            source,
        };
        crate::fsutil::create_private_dir(&self.dir).map_err(fail)?;
        crate::fsutil::replace_file(&path, text.as_bytes()).map_err(fail)
    }

    /// This role's key (made when missing) and whether it is new.
    fn key(&self, role: &str, cn: &str) -> Result<(String, bool), CertError> {
        let key_name = format!("{role}.key");
        match self.read(&key_name) {
            Some(k) if KeyPair::from_pem(&k).is_ok() => Ok((k, false)),
            _ => {
                let k = KeyPair::generate().map_err(|e| CertError::Csr {
                    cn: cn.to_string(),
                    detail: e.to_string(),
                })?;
                let pem = k.serialize_pem();
                self.write(&key_name, &pem)?;
                Ok((pem, true))
            }
        }
    }

    /// The current request for `role`, made anew when the names change.
    fn csr(&self, role: &str, req: &Request, server: bool) -> Result<Csr, CertError> {
        let (key_pem, new_key) = self.key(role, &req.common_name)?;
        let subject = format!("{}\n{}", cn_for(req, server), req.sans.join(","));
        let (subj_name, csr_name) = (format!("{role}.subject"), format!("{role}.csr"));
        if let (Some(s), Some(c), false) = (self.read(&subj_name), self.read(&csr_name), new_key) {
            // A request made with an earlier key would get a certificate
            // this key cannot use.
            if s == subject {
                return Ok(Csr {
                    key: key_pem,
                    csr: c,
                });
            }
        }
        let csr = make_csr(&key_pem, req, server)?;
        self.write(&csr_name, &csr)?;
        self.write(&subj_name, &subject)?;
        let _ = std::fs::remove_file(self.dir.join(format!("{role}.next.csr")));
        Ok(Csr { key: key_pem, csr })
    }

    /// A renewal's request, while one is out.
    fn renewal(&self, role: &str) -> Option<String> {
        self.read(&format!("{role}.next.csr"))
    }

    /// Sends out a renewal: a new request with the same key and names.
    fn renew(&self, role: &str, req: &Request, server: bool) -> Result<(), CertError> {
        let (key_pem, _) = self.key(role, &req.common_name)?;
        let csr = make_csr(&key_pem, req, server)?;
        self.write(&format!("{role}.next.csr"), &csr)
    }

    /// The renewal was answered: it is the current request now.
    fn promote(&self, role: &str, next: &str) -> Result<(), CertError> {
        self.write(&format!("{role}.csr"), next)?;
        let _ = std::fs::remove_file(self.dir.join(format!("{role}.next.csr")));
        Ok(())
    }

    /// Every request out for `role`: the current one, and a renewal.
    fn requests(&self, role: &str, req: &Request) -> Result<Vec<String>, CertError> {
        let mut out = vec![self.csr(role, req, role == "server")?.csr];
        out.extend(self.renewal(role));
        Ok(out)
    }
}

fn cn_for(req: &Request, server: bool) -> String {
    if server {
        req.common_name.clone()
    } else {
        format!("{} client", req.unit)
    }
}

/// A CSR for this unit: a server certificate names every address and is
/// for server and client auth (members use it as peers); a client
/// certificate is for client auth only.
fn make_csr(key_pem: &str, req: &Request, server: bool) -> Result<String, CertError> {
    let cn = cn_for(req, server);
    let fail = |detail: String| CertError::Csr {
        cn: cn.clone(),
        detail,
    };
    let key = KeyPair::from_pem(key_pem).map_err(|e| fail(e.to_string()))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(e.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, cn.as_str());
    if server {
        for s in &req.sans {
            let san = match s.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    s.as_str()
                        .try_into()
                        .map_err(|e: rcgen::Error| fail(e.to_string()))?,
                ),
            };
            p.subject_alt_names.push(san);
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    } else {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    p.serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_already_covers_the_names_is_kept() {
        let r = Request::new("etcd/0", &["10.0.0.3".into()]);
        let mut mine = Settings::new();
        mine.insert("common_name".into(), "10.0.0.3".into());
        let mut wider = r.sans.clone();
        wider.push("10.0.0.4".into());
        wider.sort();
        let kept = serde_json::to_string(&wider).unwrap_or_default();
        mine.insert("sans".into(), kept.clone());
        assert_eq!(published_sans(&mine, &r), kept);
        // Missing a name, or another common name: this request's own.
        let ours = serde_json::to_string(&r.sans).unwrap_or_default();
        mine.insert("sans".into(), r#"["10.0.0.3"]"#.into());
        assert_eq!(published_sans(&mine, &r), ours);
        mine.insert("sans".into(), kept);
        mine.insert("common_name".into(), "10.0.0.9".into());
        assert_eq!(published_sans(&mine, &r), ours);
    }

    #[test]
    fn request_names_are_unique_and_include_loopback() {
        let r = Request::new("etcd/3", &["10.0.0.3".into(), "10.0.0.3".into()]);
        assert_eq!(r.common_name, "10.0.0.3");
        assert_eq!(r.legacy_name(), "etcd_3");
        assert_eq!(r.sans.first().map(String::as_str), Some("10.0.0.3"));
        assert!(r.sans.contains(&"127.0.0.1".to_string()));
        assert_eq!(r.sans.iter().filter(|s| *s == "10.0.0.3").count(), 1);
    }

    #[test]
    fn a_partial_legacy_answer_is_not_taken() {
        let pem = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----".to_string();
        let mut d = Settings::new();
        d.insert("ca".into(), pem.clone());
        d.insert("client.cert".into(), pem.clone());
        d.insert("client.key".into(), pem.clone());
        d.insert("etcd_0.server.cert".into(), pem.clone());
        assert!(legacy_answer(&d, "etcd_0").is_none());
        d.insert("etcd_0.server.key".into(), pem.clone());
        let t = legacy_answer(&d, "etcd_0").expect("whole");
        assert!(t.ca.ends_with("-----END CERTIFICATE-----\n"));
        assert!(legacy_answer(&d, "etcd_1").is_none());
    }

    #[test]
    fn keys_are_kept_and_requests_follow_the_names() {
        let dir = std::env::temp_dir().join(format!("keystore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ks = KeyStore::new(dir.clone());
        let r = Request::new("etcd/0", &["10.0.0.1".into()]);
        let a = ks.csr("server", &r, true).expect("csr");
        let b = ks.csr("server", &r, true).expect("csr again");
        assert_eq!((a.key.clone(), a.csr.clone()), (b.key, b.csr));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let r2 = Request::new("etcd/0", &["10.0.0.9".into()]);
        let c = ks.csr("server", &r2, true).expect("new names");
        assert_eq!(c.key, a.key);
        assert_ne!(c.csr, a.csr);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
