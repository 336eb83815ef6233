//! Object stores for backups that outlive the unit: S3 (and anything that
//! speaks it) and Azure Blob storage, through the `object_store` crate.
//!
//! The hooks keep what the integrator charms sent in a 0600 state file
//! (`stores.json`), so actions and the scheduled run, which has no hook
//! tools, see the same stores. Archives are stored as
//! `<path>/<application>/etcd-snapshot-<stamp>.tar.gz`, each beside a small
//! `<archive>.json` record (its SHA-256, size and manifest) written once
//! the archive is complete: an S3 upload fixes its metadata before the
//! first byte, long before the checksum is known.

pub mod crypt;
pub mod download;
pub mod list;
pub mod retention;
pub mod upload;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::MultipartStore;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::archive::manifest::Manifest;
use crate::fsutil;

/// The state file the hooks keep current.
pub const STATE_FILE: &str = "stores.json";
pub use crate::archive::record::{Record, MAX_RECORD, RECORD_SUFFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    S3,
    Azure,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Azure => "azure",
        }
    }

    /// The relation endpoint that brings this kind of store.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::S3 => "s3-credentials",
            Kind::Azure => "azure-credentials",
        }
    }
}

/// One store, as its integrator described it. `secret` is the S3 secret
/// key or the Azure account key: it lives only in the 0600 state file and
/// in memory, never in a log, a status or action results.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    pub kind: Kind,
    /// S3 bucket or Azure container.
    pub bucket: String,
    /// S3 access key or Azure storage account.
    pub account: String,
    pub secret: String,
    /// Empty: the provider's default (AWS's regional endpoint, Azure's
    /// `https://<account>.blob.core.windows.net`).
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    /// Key prefix, without leading or trailing slashes.
    #[serde(default)]
    pub path: String,
    /// S3 only: virtual-hosted-style requests (`s3-uri-style: host`).
    #[serde(default)]
    pub virtual_hosted: bool,
    #[serde(default)]
    pub storage_class: String,
    /// PEM certificates to trust besides the system's.
    #[serde(default)]
    pub ca_chain: Vec<String>,
    /// Azure only: `connection-protocol` was `http`.
    #[serde(default)]
    pub allow_http: bool,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("kind", &self.kind)
            .field("url", &self.url())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl StoreSettings {
    /// Where archives go, for the operator: `s3://bucket/path`,
    /// `azure://account/container/path`.
    pub fn url(&self) -> String {
        let base = match self.kind {
            Kind::S3 => format!("s3://{}", self.bucket),
            Kind::Azure => format!("azure://{}/{}", self.account, self.bucket),
        };
        if self.path.is_empty() {
            base
        } else {
            format!("{base}/{}", self.path)
        }
    }

    /// The prefix this application's archives live under.
    pub fn prefix(&self, app: &str) -> String {
        if self.path.is_empty() {
            app.to_string()
        } else {
            format!("{}/{app}", self.path)
        }
    }

    pub fn key(&self, app: &str, name: &str) -> String {
        format!("{}/{name}", self.prefix(app))
    }
}

/// A Juju application name (what archives are filed under).
pub fn is_app_name(app: &str) -> bool {
    app.starts_with(|c: char| c.is_ascii_lowercase())
        && app
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A key prefix as an operator may write it (`/backups/`, `a//b`), reduced
/// to the segments object keys are made of.
pub fn clean_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{store}: {reason}")]
    Client { store: String, reason: String },
    #[error("{store} stalled: nothing moved for {secs} s (stall-timeout)")]
    Stalled { store: String, secs: u64 },
    #[error("cannot read the store settings {path}: {reason}")]
    State { path: String, reason: String },
}

const REFUSED: &str =
    "the store refused the credentials (check the integrator's access and secret keys)";

/// The `<Code>` and `<Message>` of an S3 or Azure error body.
fn error_code(text: &str) -> Option<(String, String)> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    Some((tag("Code")?, tag("Message").unwrap_or_default()))
}

/// Describes an `object_store` error in one line: what the store said
/// (its error code, in words where an operator can act on it), else the
/// error and its causes, with no URL query string (it may carry a
/// signature).
pub fn describe(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let full = chain(e);
    if let Some((code, message)) = error_code(&full) {
        return match code.as_str() {
            "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied"
            | "AuthenticationFailed" | "AuthorizationFailure" => REFUSED.to_string(),
            "NoSuchBucket" | "ContainerNotFound" => {
                "the bucket (container) does not exist: create it, or set the integrator's bucket to one that does"
                    .to_string()
            }
            _ => format!("the store answered {code}: {}", message.trim()),
        };
    }
    match e {
        E::NotFound { path, .. } => return format!("{path} not found"),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return REFUSED.to_string(),
        _ => {}
    }
    if let Some(cause) = unreachable(e) {
        return format!("cannot reach the store: {cause}");
    }
    full.chars().take(400).collect()
}

/// The innermost cause of a request that never got an answer (refused,
/// reset, no route, TLS failure).
fn unreachable(e: &object_store::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut sending = false;
    let mut last = None;
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            sending |= r.is_connect() || r.is_request();
        }
        last = Some(c.to_string());
        cause = c.source();
    }
    if sending {
        last
    } else {
        None
    }
}

fn chain(e: &object_store::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts
        .join(": ")
        .split_whitespace()
        .map(|w| match w.find('?') {
            Some(i) if w.contains("://") => &w[..i],
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when the error is a timeout of ours (no byte for the stall time).
pub fn timed_out(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return true;
            }
        }
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// All the stores the hooks recorded, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stores {
    #[serde(default)]
    pub stores: BTreeMap<Kind, StoreSettings>,
    /// age recipients stored archives are encrypted to (the
    /// `backup_encryption_recipients` option); empty: not encrypted.
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl Stores {
    pub fn load(state_dir: &Path) -> Result<Stores, StoreError> {
        let path = state_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stores::default()),
            Err(e) => Err(StoreError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the file 0600 (atomically), or removes it when empty.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = state_dir.join(STATE_FILE);
        if self.stores.is_empty() && self.recipients.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        fsutil::create_private_dir(state_dir)?;
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        fsutil::replace_file(&path, &text)
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }
}

/// How long the store may keep the charm waiting: no byte moving for
/// `stall` fails the request; connecting gets the same or 30 s.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub stall: Duration,
}

/// A store opened for use: the same client serves plain requests and the
/// multipart calls whose upload IDs the charm records.
#[derive(Clone)]
pub struct Store {
    pub settings: StoreSettings,
    pub timeouts: Timeouts,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    S3(Arc<AmazonS3>),
    Azure(Arc<MicrosoftAzure>),
}

impl Store {
    pub fn open(settings: &StoreSettings, timeouts: Timeouts) -> Result<Store, StoreError> {
        install_crypto();
        let fail = |reason: String| StoreError::Client {
            store: settings.url(),
            reason,
        };
        let mut client = ClientOptions::new()
            .with_timeout_disabled()
            .with_read_timeout(timeouts.stall)
            .with_connect_timeout(timeouts.stall.min(Duration::from_secs(30)));
        for pem in &settings.ca_chain {
            let cert = Certificate::from_pem(pem.as_bytes())
                .map_err(|e| fail(format!("the CA chain it sent is not PEM: {e}")))?;
            client = client.with_root_certificate(cert);
        }
        let http = settings.endpoint.starts_with("http://");
        if http || settings.allow_http {
            client = client.with_allow_http(true);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: timeouts.stall,
        };
        let backend = match settings.kind {
            Kind::S3 => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&settings.bucket)
                    .with_access_key_id(&settings.account)
                    .with_secret_access_key(&settings.secret)
                    .with_region(if settings.region.is_empty() {
                        "us-east-1"
                    } else {
                        &settings.region
                    })
                    .with_virtual_hosted_style_request(settings.virtual_hosted)
                    .with_client_options(client)
                    .with_retry(retry);
                if !settings.endpoint.is_empty() {
                    b = b.with_endpoint(settings.endpoint.trim_end_matches('/'));
                }
                Backend::S3(Arc::new(b.build().map_err(|e| fail(describe(&e)))?))
            }
            Kind::Azure => {
                let mut b = MicrosoftAzureBuilder::new()
                    .with_account(&settings.account)
                    .with_container_name(&settings.bucket)
                    .with_access_key(&settings.secret)
                    .with_client_options(client)
                    .with_retry(retry);
                if !settings.endpoint.is_empty() {
                    b = b.with_endpoint(settings.endpoint.trim_end_matches('/').to_string());
                }
                Backend::Azure(Arc::new(b.build().map_err(|e| fail(describe(&e)))?))
            }
        };
        Ok(Store {
            settings: settings.clone(),
            timeouts,
            backend,
        })
    }

    pub fn objects(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::S3(s) => s.as_ref(),
            Backend::Azure(s) => s.as_ref(),
        }
    }

    pub fn multipart(&self) -> Arc<dyn MultipartStore> {
        match &self.backend {
            Backend::S3(s) => s.clone(),
            Backend::Azure(s) => s.clone(),
        }
    }

    pub fn url(&self) -> String {
        self.settings.url()
    }

    /// A store request bounded by the stall timeout: its own result, or
    /// `Stalled` when nothing came back in time.
    pub async fn within<T>(
        &self,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, StoreError> {
        tokio::time::timeout(self.timeouts.stall, f)
            .await
            .map_err(|_| self.stalled())
    }

    /// As `within`, with the request's error said for the operator.
    pub async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        self.within(f).await?.map_err(|e| self.error(&e))
    }

    pub fn stalled(&self) -> StoreError {
        StoreError::Stalled {
            store: self.url(),
            secs: self.timeouts.stall.as_secs(),
        }
    }

    /// The objects directly under this application's prefix (every page).
    pub async fn list_app(&self, app: &str) -> Result<object_store::ListResult, StoreError> {
        let prefix = object_store::path::Path::from(self.settings.prefix(app));
        let stall = self.timeouts.stall;
        match tokio::time::timeout(stall * 4, self.objects().list_with_delimiter(Some(&prefix)))
            .await
        {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(_) => Err(self.stalled()),
        }
    }

    /// An error from this store, for the operator.
    pub fn error(&self, e: &object_store::Error) -> StoreError {
        if timed_out(e) {
            return self.stalled();
        }
        StoreError::Client {
            store: self.url(),
            reason: describe(e),
        }
    }

    /// Object metadata this store accepts at the start of an upload (S3
    /// user metadata; Azure's low-level upload takes none).
    pub fn start_metadata(&self, m: &Manifest) -> Vec<(&'static str, String)> {
        match self.settings.kind {
            Kind::Azure => Vec::new(),
            Kind::S3 => vec![
                ("etcd-version", m.etcd_version.clone()),
                ("revision", m.revision.to_string()),
                ("cluster-id", m.cluster_id.clone()),
                ("member-id", m.member_id.clone()),
                ("member-name", m.member_name.clone()),
                ("unit", m.unit.clone()),
                ("created-at", m.created_at.clone()),
                ("created-by", m.created_by.clone()),
            ],
        }
    }
}

/// rustls needs one process-wide crypto provider; ring, as for etcd's TLS.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> StoreSettings {
        StoreSettings {
            kind: Kind::S3,
            bucket: "b".into(),
            account: "AK".into(),
            secret: "very-secret".into(),
            endpoint: String::new(),
            region: String::new(),
            path: clean_path("/team//etcd/"),
            virtual_hosted: false,
            storage_class: String::new(),
            ca_chain: vec![],
            allow_http: false,
        }
    }

    #[test]
    fn keys_and_urls() {
        let s = s3();
        assert_eq!(s.path, "team/etcd");
        assert_eq!(s.url(), "s3://b/team/etcd");
        assert_eq!(
            s.key("etcd", "etcd-snapshot-x.tar.gz"),
            "team/etcd/etcd/etcd-snapshot-x.tar.gz"
        );
        let mut a = s3();
        a.kind = Kind::Azure;
        a.path = String::new();
        assert_eq!(a.url(), "azure://AK/b");
        assert_eq!(a.key("db", "n"), "db/n");
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        assert!(!format!("{:?}", s3()).contains("very-secret"));
    }
}
