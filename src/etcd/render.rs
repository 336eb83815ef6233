//! The etcd config file the charm writes: from the application's options,
//! the unit's address and how this member joins its cluster.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The charm's config options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The snap channel; `None` for "auto": install the default channel
    /// on a new unit, never move one that runs etcd.
    pub channel: Option<String>,
    pub port: u16,
    pub management_port: u16,
    pub heartbeat_interval: u64,
    pub election_timeout: u64,
    /// `None` ("auto"): not rendered, so each etcd version uses its own
    /// default (100000 up to 3.5, 10000 from 3.6).
    pub snapshot_count: Option<u64>,
    pub quota_backend_bytes: u64,
    pub bind_to_all_interfaces: bool,
    /// Also serve clients on plain http://127.0.0.1:4001 (layer-etcd's).
    pub bind_with_insecure_http: bool,
    /// TLS cipher suites, Go names; used only with TLS.
    pub cipher_suites: Vec<String>,
    /// snapd's refresh timer for the machine ("max", "", or a timer).
    pub snapd_refresh: String,
    pub tls: Option<TlsPems>,
}

/// The channel "auto" installs on a new unit.
pub const DEFAULT_CHANNEL: &str = "3.5/stable";
/// The listener layer-etcd's bind_with_insecure_http adds.
const INSECURE_HTTP: &str = "http://127.0.0.1:4001";
/// Mozilla's "intermediate" TLS 1.2 suites (ECDHE with AEAD), layer-etcd's
/// list when tls_cipher_suites is empty.
const DEFAULT_CIPHER_SUITES: [&str; 6] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
];

/// The TLS material from the tls_* options, decoded. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPems {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl std::fmt::Debug for TlsPems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPems(..)")
    }
}

const TLS_OPTIONS: [&str; 5] = [
    "tls_ca_certificate",
    "tls_server_certificate",
    "tls_server_key",
    "tls_client_certificate",
    "tls_client_key",
];

/// A PEM option: base64 of the PEM text (as Juju config carries it), or
/// the PEM text itself.
fn pem(name: &'static str, value: &str) -> Result<String, OptionError> {
    use base64::Engine;
    let value = value.trim();
    let text = if value.starts_with("-----BEGIN") {
        value.to_string()
    } else {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| OptionError {
                name,
                problem: "is neither PEM nor base64-encoded PEM".into(),
            })?;
        String::from_utf8(bytes).map_err(|_| OptionError {
            name,
            problem: "does not decode to PEM text".into(),
        })?
    };
    if !text.contains("-----BEGIN") || !text.contains("-----END") {
        return Err(OptionError {
            name,
            problem: "does not hold a PEM block".into(),
        });
    }
    let mut text = text.trim().to_string();
    text.push('\n');
    Ok(text)
}

fn tls_options(map: &Map<String, Value>) -> Result<Option<TlsPems>, OptionError> {
    let get = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let values: Vec<String> = TLS_OPTIONS.iter().map(|k| get(k)).collect();
    let missing: Vec<&str> = TLS_OPTIONS
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    if missing.len() == TLS_OPTIONS.len() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(OptionError {
            name: "tls_*",
            problem: format!("must be set together (missing: {})", missing.join(", ")),
        });
    }
    Ok(Some(TlsPems {
        ca: pem(TLS_OPTIONS[0], &values[0])?,
        server_cert: pem(TLS_OPTIONS[1], &values[1])?,
        server_key: pem(TLS_OPTIONS[2], &values[2])?,
        client_cert: pem(TLS_OPTIONS[3], &values[3])?,
        client_key: pem(TLS_OPTIONS[4], &values[4])?,
    }))
}

#[derive(Debug, thiserror::Error)]
#[error("the charm config option {name} {problem}; fix it with juju config")]
pub struct OptionError {
    pub name: &'static str,
    pub problem: String,
}

fn int(map: &Map<String, Value>, name: &'static str, default: i64) -> Result<i64, OptionError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_i64().ok_or_else(|| OptionError {
            name,
            problem: format!("must be an integer, not {v}"),
        }),
    }
}

fn in_range(name: &'static str, v: i64, lo: i64, hi: i64) -> Result<i64, OptionError> {
    if v < lo || v > hi {
        return Err(OptionError {
            name,
            problem: format!("is {v}, and must be between {lo} and {hi}"),
        });
    }
    Ok(v)
}

fn string(map: &Map<String, Value>, name: &str, default: &str) -> String {
    map.get(name)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .trim()
        .to_string()
}

fn boolean(
    map: &Map<String, Value>,
    name: &'static str,
    default: bool,
) -> Result<bool, OptionError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| OptionError {
            name,
            problem: format!("must be true or false, not {v}"),
        }),
    }
}

/// A string option, as in layer-etcd: "auto" or a whole number. A number
/// (this charm's earlier int option) is taken too.
fn snapshot_count(map: &Map<String, Value>) -> Result<Option<u64>, OptionError> {
    let name = "snapshot_count";
    let v = match map.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) if s.trim().is_empty() || s.trim() == "auto" => return Ok(None),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| OptionError {
            name,
            problem: format!("is {s:?}, and must be \"auto\" or a whole number"),
        })?,
        Some(other) => {
            return Err(OptionError {
                name,
                problem: format!("must be \"auto\" or a whole number, not {other}"),
            })
        }
    };
    in_range(name, v, 1, i64::MAX).map(|v| Some(v as u64))
}

/// Comma-separated Go cipher suite names; etcd refuses to start on an
/// unknown one, so only their shape is checked here.
fn cipher_suites(raw: &str) -> Result<Vec<String>, OptionError> {
    let names: Vec<String> = raw
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    if let Some(bad) = names.iter().find(|n| {
        !n.starts_with("TLS_")
            || !n
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    }) {
        return Err(OptionError {
            name: "tls_cipher_suites",
            problem: format!(
                "names {bad:?}, which is not a TLS cipher suite name (TLS_..., comma-separated)"
            ),
        });
    }
    if names.is_empty() {
        return Ok(DEFAULT_CIPHER_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect());
    }
    Ok(names)
}

impl Options {
    /// The channel to install a new unit from.
    pub fn install_channel(&self) -> &str {
        self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL)
    }

    pub fn from_config(map: &Map<String, Value>) -> Result<Self, OptionError> {
        let port = in_range("port", int(map, "port", 2379)?, 1, 65535)? as u16;
        let management_port = in_range(
            "management_port",
            int(map, "management_port", 2380)?,
            1,
            65535,
        )? as u16;
        if port == management_port {
            return Err(OptionError {
                name: "management_port",
                problem: format!("is the same as port ({port})"),
            });
        }
        let heartbeat = in_range(
            "heartbeat_interval",
            int(map, "heartbeat_interval", 100)?,
            1,
            60_000,
        )?;
        let election = in_range(
            "election_timeout",
            int(map, "election_timeout", 1000)?,
            1,
            50_000,
        )?;
        // etcd refuses to start otherwise.
        if election < 5 * heartbeat {
            return Err(OptionError {
                name: "election_timeout",
                problem: format!(
                    "is {election} ms, and must be at least 5 heartbeats ({} ms)",
                    5 * heartbeat
                ),
            });
        }
        let snapshot_count = snapshot_count(map)?;
        let quota = in_range(
            "quota_backend_bytes",
            int(map, "quota_backend_bytes", 0)?,
            0,
            i64::MAX,
        )?;
        let bind = boolean(map, "bind_to_all_interfaces", true)?;
        let insecure = boolean(map, "bind_with_insecure_http", false)?;
        let channel = match string(map, "channel", "auto") {
            c if c.is_empty() || c == "auto" => None,
            c => Some(c),
        };
        Ok(Options {
            channel,
            port,
            management_port,
            heartbeat_interval: heartbeat as u64,
            election_timeout: election as u64,
            snapshot_count,
            quota_backend_bytes: quota as u64,
            bind_to_all_interfaces: bind,
            bind_with_insecure_http: insecure,
            cipher_suites: cipher_suites(&string(map, "tls_cipher_suites", ""))?,
            snapd_refresh: string(map, "snapd_refresh", "max"),
            tls: tls_options(map)?,
        })
    }
}

/// How this member comes to be in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `name=peer-url,…`
    pub initial_cluster: String,
    pub token: String,
    /// "new" or "existing".
    pub state: String,
}

/// TLS files for clients and peers (PEM files beside the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Everything one member's config file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    pub address: String,
    pub options: Options,
    pub bootstrap: Bootstrap,
    pub tls: Option<TlsFiles>,
    /// Switching a running cluster to TLS, first step: the member keeps
    /// plain HTTP but gets its TLS identity for peers, so it can already
    /// reach members that have moved to https.
    pub bridge: bool,
}

impl Member {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() && !self.bridge {
            "https"
        } else {
            "http"
        }
    }

    pub fn client_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            host(&self.address),
            self.options.port
        )
    }

    pub fn peer_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            host(&self.address),
            self.options.management_port
        )
    }

    fn listen(&self, port: u16) -> String {
        let ip = if self.options.bind_to_all_interfaces {
            "0.0.0.0".to_string()
        } else {
            host(&self.address)
        };
        format!("{}://{ip}:{port}", self.scheme())
    }

    /// The YAML etcd reads with `--config-file`. Stable for the same input,
    /// so "changed" means a restart is needed.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut y = String::from("# Written by the etcd charm: changes here are overwritten.\n");
        let mut kv = |k: &str, v: &str| y.push_str(&format!("{k}: {}\n", quote(v)));
        kv("name", &self.name);
        kv("data-dir", &self.data_dir.to_string_lossy());
        let mut clients = self.listen(o.port);
        if o.bind_with_insecure_http {
            clients = format!("{INSECURE_HTTP},{clients}");
        }
        kv("listen-client-urls", &clients);
        kv("advertise-client-urls", &self.client_url());
        kv("listen-peer-urls", &self.listen(o.management_port));
        kv("initial-advertise-peer-urls", &self.peer_url());
        kv("initial-cluster", &self.bootstrap.initial_cluster);
        kv("initial-cluster-token", &self.bootstrap.token);
        kv("initial-cluster-state", &self.bootstrap.state);
        y.push_str(&format!("heartbeat-interval: {}\n", o.heartbeat_interval));
        y.push_str(&format!("election-timeout: {}\n", o.election_timeout));
        if let Some(count) = o.snapshot_count {
            y.push_str(&format!("snapshot-count: {count}\n"));
        }
        if o.quota_backend_bytes > 0 {
            y.push_str(&format!("quota-backend-bytes: {}\n", o.quota_backend_bytes));
        }
        // No enable-v2 (off by default since 3.4, gone in 3.6) and no proxy
        // or discovery keys: nothing etcd 3.6 would refuse.
        y.push_str("logger: zap\nlog-outputs: [stderr]\n");
        if let Some(t) = &self.tls {
            let sections: &[&str] = if self.bridge {
                &["peer-transport-security"]
            } else {
                &["client-transport-security", "peer-transport-security"]
            };
            for section in sections {
                y.push_str(&format!(
                    "{section}:\n  cert-file: {}\n  key-file: {}\n  trusted-ca-file: {}\n  client-cert-auth: true\n",
                    quote(&t.cert.to_string_lossy()),
                    quote(&t.key.to_string_lossy()),
                    quote(&t.ca.to_string_lossy()),
                ));
            }
            y.push_str(&format!(
                "cipher-suites: [{}]\n",
                o.cipher_suites.join(", ")
            ));
        }
        y
    }
}

/// IPv6 addresses go in brackets in URLs.
fn host(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// A YAML scalar that stays a string whatever it holds: always
/// double-quoted (a JSON string is a valid YAML double-quoted scalar), so
/// `true`, `0x10`, `12:30` or a trailing `:` never change meaning.
fn quote(v: &str) -> String {
    serde_json::Value::String(v.to_string()).to_string()
}

/// Writes `text` to `path` atomically if it differs; true when it changed.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(text.as_bytes()) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir(dir)?;
    }
    crate::fsutil::replace_file(path, text.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::from_config(&Map::new()).expect("defaults")
    }

    #[test]
    fn defaults_follow_config_yaml() {
        let o = options();
        assert_eq!((o.port, o.management_port), (2379, 2380));
        assert_eq!((o.heartbeat_interval, o.election_timeout), (100, 1000));
        assert!(o.bind_to_all_interfaces);
    }

    #[test]
    fn bad_options_are_named() {
        let mut m = Map::new();
        m.insert("election_timeout".into(), Value::from(200));
        let e = Options::from_config(&m).expect_err("too short");
        assert!(e.to_string().contains("election_timeout"), "{e}");
        let mut m = Map::new();
        m.insert("port".into(), Value::from(70000));
        assert!(Options::from_config(&m).is_err());
    }

    #[test]
    fn layer_etcd_option_values_are_taken() {
        let o = options();
        assert_eq!(o.channel, None);
        assert_eq!(o.install_channel(), DEFAULT_CHANNEL);
        assert_eq!(o.snapshot_count, None);
        assert_eq!(o.cipher_suites.len(), DEFAULT_CIPHER_SUITES.len());
        let m = |pairs: &[(&str, Value)]| {
            let mut m = Map::new();
            for (k, v) in pairs {
                m.insert(k.to_string(), v.clone());
            }
            Options::from_config(&m)
        };
        let o = m(&[
            ("snapshot_count", Value::from("5000")),
            ("channel", Value::from("3.4/stable")),
            (
                "tls_cipher_suites",
                Value::from("[TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256]"),
            ),
        ])
        .expect("valid");
        assert_eq!(o.snapshot_count, Some(5000));
        assert_eq!(o.channel.as_deref(), Some("3.4/stable"));
        assert_eq!(
            o.cipher_suites,
            ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
        );
        assert_eq!(
            m(&[("snapshot_count", Value::from(700))])
                .expect("int")
                .snapshot_count,
            Some(700)
        );
        for bad in ["lots", "0", "-5"] {
            let e = m(&[("snapshot_count", Value::from(bad))])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("snapshot_count"), "{e}");
        }
        let e = m(&[("tls_cipher_suites", Value::from("RC4-MD5"))]).expect_err("bad suite");
        assert!(e.to_string().contains("RC4-MD5"), "{e}");
    }

    #[test]
    fn renders_nothing_etcd_3_6_refuses_and_layer_etcd_extras() {
        let tls = Some(TlsFiles {
            cert: "/c/server.crt".into(),
            key: "/c/server.key".into(),
            ca: "/c/ca.crt".into(),
        });
        let m = Member {
            name: "etcd0".into(),
            data_dir: "/d".into(),
            address: "10.0.0.5".into(),
            options: Options {
                bind_with_insecure_http: true,
                ..options()
            },
            bootstrap: Bootstrap {
                initial_cluster: "etcd0=https://10.0.0.5:2380".into(),
                token: "t".into(),
                state: "new".into(),
            },
            tls,
            bridge: false,
        };
        let v: serde_yaml::Value = serde_yaml::from_str(&m.render()).expect("yaml");
        let map = v.as_mapping().expect("map");
        for gone in [
            "enable-v2",
            "experimental-enable-v2v3",
            "proxy",
            "discovery",
        ] {
            assert!(!map.contains_key(gone), "{gone} rendered");
        }
        assert!(!map
            .keys()
            .any(|k| k.as_str().is_some_and(|k| k.starts_with("proxy"))));
        assert_eq!(
            v["listen-client-urls"].as_str(),
            Some("http://127.0.0.1:4001,https://0.0.0.0:2379")
        );
        assert_eq!(
            v["advertise-client-urls"].as_str(),
            Some("https://10.0.0.5:2379")
        );
        let suites = v["cipher-suites"].as_sequence().expect("suites");
        assert_eq!(suites.len(), DEFAULT_CIPHER_SUITES.len());
        // "auto": each etcd version's own default.
        assert!(!map.contains_key("snapshot-count"));
    }

    #[test]
    fn tls_options_come_together_and_decode() {
        use base64::Engine;
        let pem_text = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem_text);
        let mut m = Map::new();
        m.insert("tls_ca_certificate".into(), Value::from(b64.clone()));
        let e = Options::from_config(&m).expect_err("partial");
        assert!(
            e.to_string().contains("missing: tls_server_certificate"),
            "{e}"
        );
        for k in TLS_OPTIONS {
            m.insert(k.into(), Value::from(b64.clone()));
        }
        m.insert("tls_client_key".into(), Value::from(pem_text));
        let tls = Options::from_config(&m).expect("all set").tls.expect("tls");
        assert_eq!(tls.ca, pem_text);
        assert_eq!(tls.client_key, pem_text);
        assert_eq!(format!("{tls:?}"), "TlsPems(..)");
        m.insert("tls_server_key".into(), Value::from("not pem"));
        assert!(Options::from_config(&m).is_err());
    }

    #[test]
    fn renders_parseable_yaml() {
        let m = Member {
            name: "etcd-0".into(),
            data_dir: "/var/snap/etcd/current/etcd-0.etcd".into(),
            address: "10.0.0.5".into(),
            options: Options {
                bind_to_all_interfaces: false,
                ..options()
            },
            bootstrap: Bootstrap {
                initial_cluster: "etcd-0=http://10.0.0.5:2380".into(),
                token: "true".into(),
                state: "new".into(),
            },
            tls: None,
            bridge: false,
        };
        let text = m.render();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(
            v["listen-client-urls"].as_str(),
            Some("http://10.0.0.5:2379")
        );
        assert_eq!(v["initial-cluster-token"].as_str(), Some("true"));
        for odd in ["0x10", "12:30", "ON", "NULL", "a:", "]x", ",y"] {
            let m = Member {
                name: odd.into(),
                ..m.clone()
            };
            let v: serde_yaml::Value = serde_yaml::from_str(&m.render()).expect("yaml");
            assert_eq!(v["name"].as_str(), Some(odd));
        }
        assert_eq!(v["heartbeat-interval"].as_u64(), Some(100));
        assert_eq!(text, m.render());
    }
}
