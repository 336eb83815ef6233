//! The etcd YAML config file (`etcd --config-file`): the one place the
//! charm and etcd agree on names, URLs, the data dir and TLS files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the etcd config file {path} does not exist; is etcd installed and configured on this unit?")]
    Missing { path: PathBuf },
    #[error("cannot read the etcd config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the etcd config file {path} is not valid YAML: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("the etcd config file {path} names no client URL (listen-client-urls or advertise-client-urls)")]
    NoClientUrl { path: PathBuf },
    #[error("the client URL {url} in {path} is not an http:// or https:// URL")]
    BadUrl { url: String, path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot update the etcd config file {path}: {detail}")]
    Update { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", default)]
pub struct TransportSecurity {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub trusted_ca_file: Option<String>,
    pub client_cert_auth: Option<bool>,
}

/// The keys the charm reads; the file may hold many more, which are kept.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", default)]
pub struct EtcdConfig {
    pub name: Option<String>,
    pub data_dir: Option<String>,
    pub listen_client_urls: Option<String>,
    pub advertise_client_urls: Option<String>,
    pub listen_peer_urls: Option<String>,
    pub initial_advertise_peer_urls: Option<String>,
    pub initial_cluster: Option<String>,
    pub initial_cluster_token: Option<String>,
    pub initial_cluster_state: Option<String>,
    pub client_transport_security: Option<TransportSecurity>,
    pub peer_transport_security: Option<TransportSecurity>,
}

/// How to reach the local member as a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEndpoint {
    pub url: String,
    pub tls: Option<ClientTls>,
}

impl ClientEndpoint {
    /// Another member's client URL, reached with this same identity (TLS
    /// only where that URL is https).
    pub fn at(&self, url: &str) -> ClientEndpoint {
        ClientEndpoint {
            url: url.to_string(),
            tls: self.tls.clone().filter(|_| url.starts_with("https://")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn split_urls(v: &Option<String>) -> Vec<String> {
    non_empty(v)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets top-level keys of the YAML config file, keeping every other key,
/// and replaces the file atomically with the same mode. Returns the bytes
/// it had, so a caller can put them back.
pub fn update_file(path: &Path, updates: &[(&str, String)]) -> Result<Vec<u8>, UpdateError> {
    let fail = |detail: String| UpdateError::Update {
        path: path.to_path_buf(),
        detail,
    };
    let old = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut doc: serde_yaml::Value = if old.iter().all(u8::is_ascii_whitespace) {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_slice(&old).map_err(|e| fail(e.to_string()))?
    };
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| fail("it is not a YAML mapping".into()))?;
    for (k, v) in updates {
        map.insert(
            serde_yaml::Value::String((*k).to_string()),
            serde_yaml::Value::String(v.clone()),
        );
    }
    let text = serde_yaml::to_string(&doc).map_err(|e| fail(e.to_string()))?;
    crate::fsutil::replace_file(path, text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    Ok(old)
}

impl EtcdConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|detail| ConfigError::Parse {
            path: path.to_path_buf(),
            detail,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// The member's peer URLs (`initial-advertise-peer-urls`).
    pub fn peer_urls(&self) -> Vec<String> {
        split_urls(&self.initial_advertise_peer_urls)
    }

    pub fn data_dir(&self) -> Option<PathBuf> {
        non_empty(&self.data_dir).map(PathBuf::from)
    }

    /// Names of the members in `initial-cluster` (`name=url,…`).
    pub fn initial_members(&self) -> Vec<String> {
        let mut names: Vec<String> = split_urls(&self.initial_cluster)
            .iter()
            .filter_map(|e| e.split_once('=').map(|(n, _)| n.trim().to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The member's client URL for the charm's own calls: the advertised
    /// one (its certificate names it), else the listen one with a wildcard
    /// host replaced by loopback.
    pub fn client_endpoint(&self, conf_path: &Path) -> Result<ClientEndpoint, ConfigError> {
        fn first(v: &Option<String>) -> Option<&str> {
            non_empty(v).and_then(|s| s.split(',').map(str::trim).find(|u| !u.is_empty()))
        }
        let url = first(&self.advertise_client_urls)
            .or_else(|| first(&self.listen_client_urls))
            .ok_or_else(|| ConfigError::NoClientUrl {
                path: conf_path.to_path_buf(),
            })?;
        let url = url
            .replace("://0.0.0.0:", "://127.0.0.1:")
            .replace("://[::]:", "://[::1]:");
        let tls = if url.starts_with("https://") {
            Some(self.client_tls(conf_path))
        } else if url.starts_with("http://") {
            None
        } else {
            return Err(ConfigError::BadUrl {
                url,
                path: conf_path.to_path_buf(),
            });
        };
        Ok(ClientEndpoint { url, tls })
    }

    /// The client identity: `client.crt`/`client.key` beside the config
    /// (the layout the old Python charm left on units) when both exist,
    /// else the member's own certificate and key from the config.
    fn client_tls(&self, conf_path: &Path) -> ClientTls {
        let sec = self.client_transport_security.clone().unwrap_or_default();
        let path = |v: &Option<String>| non_empty(v).map(PathBuf::from);
        let dir = conf_path.parent().unwrap_or(Path::new("/"));
        let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
        let (cert_file, key_file) = if crt.is_file() && key.is_file() {
            (Some(crt), Some(key))
        } else {
            (path(&sec.cert_file), path(&sec.key_file))
        };
        ClientTls {
            ca_file: path(&sec.trusted_ca_file),
            cert_file,
            key_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
name: etcd0
data-dir: /var/snap/etcd/current/etcd0.etcd
listen-client-urls: "https://0.0.0.0:2379"
advertise-client-urls: ""
initial-cluster: "etcd0=https://10.0.0.1:2380"
initial-cluster-state: new
heartbeat-interval: 100
client-transport-security:
  cert-file: /var/snap/etcd/common/server.crt
  key-file: /var/snap/etcd/common/server.key
  trusted-ca-file: /var/snap/etcd/common/ca.crt
  client-cert-auth: true
"#;

    #[test]
    fn reads_the_keys_and_ignores_the_rest() {
        let c = EtcdConfig::parse(SAMPLE).unwrap();
        assert_eq!(c.name.as_deref(), Some("etcd0"));
        let sec = c.client_transport_security.clone().unwrap();
        assert_eq!(sec.client_cert_auth, Some(true));
        let ep = c
            .client_endpoint(Path::new("/nonexistent/etcd.conf.yml"))
            .unwrap();
        assert_eq!(ep.url, "https://127.0.0.1:2379");
        let tls = ep.tls.unwrap();
        assert_eq!(
            tls.ca_file,
            Some(PathBuf::from("/var/snap/etcd/common/ca.crt"))
        );
        assert_eq!(
            tls.cert_file,
            Some(PathBuf::from("/var/snap/etcd/common/server.crt"))
        );
    }

    #[test]
    fn advertised_url_wins_and_plain_http_has_no_tls() {
        let c = EtcdConfig::parse(
            "listen-client-urls: http://127.0.0.1:1,http://10.1.1.1:1\nadvertise-client-urls: http://10.1.1.1:1\n",
        )
        .unwrap();
        let ep = c.client_endpoint(Path::new("/x.yml")).unwrap();
        assert_eq!(ep.url, "http://10.1.1.1:1");
        assert!(ep.tls.is_none());
    }

    #[test]
    fn peers_members_and_updates() {
        let c = EtcdConfig::parse(
            "initial-advertise-peer-urls: http://a:2380, http://b:2380\ninitial-cluster: x=http://a:2380,y=http://c:1,x=http://b:2380\n",
        )
        .unwrap();
        assert_eq!(c.peer_urls(), ["http://a:2380", "http://b:2380"]);
        assert_eq!(c.initial_members(), ["x", "y"]);

        let dir = std::env::temp_dir().join(format!("conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("etcd.conf.yml");
        std::fs::write(&path, SAMPLE).unwrap();
        let old = update_file(&path, &[("initial-cluster-token", "t2".into())]).unwrap();
        assert_eq!(old, SAMPLE.as_bytes());
        let c = EtcdConfig::load(&path).unwrap();
        assert_eq!(c.initial_cluster_token.as_deref(), Some("t2"));
        assert_eq!(c.name.as_deref(), Some("etcd0"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("heartbeat-interval: 100"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_url_and_bad_url_are_clear_errors() {
        let c = EtcdConfig::parse("name: a\n").unwrap();
        let e = c.client_endpoint(Path::new("/x.yml")).unwrap_err();
        assert!(e.to_string().contains("names no client URL"), "{e}");
        let c = EtcdConfig::parse("listen-client-urls: unix://sock\n").unwrap();
        assert!(c.client_endpoint(Path::new("/x.yml")).is_err());
        assert!(EtcdConfig::parse("name: [").is_err());
    }
}
