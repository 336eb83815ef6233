//! A client for the local member only: one endpoint, never the cluster's
//! other members, TLS client certificates when the config has them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::config::{ClientEndpoint, ClientTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Compaction and defragmentation scale with the db: minutes on a big one.
const LONG_CALL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot read the TLS file {path} named in the etcd config: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcd at {url} serves TLS but the etcd config names no trusted-ca-file to verify it")]
    NoCa { url: String },
    #[error("cannot reach etcd at {url}: {detail}; check that etcd is running on this unit")]
    Unreachable { url: String, detail: String },
    #[error("etcd at {url} refused {call}: {detail}")]
    Refused {
        url: String,
        call: &'static str,
        detail: String,
    },
    #[error("etcd at {url} did not answer {call} within {secs} seconds")]
    Timeout {
        url: String,
        call: &'static str,
        secs: u64,
    },
}

/// A short, human description of an error and its causes, without Rust
/// debug formatting and without repeating itself.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = match e.downcast_ref::<etcd_client::Error>() {
            Some(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
            _ => e.to_string(),
        };
        let text = text.trim().to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub version: String,
    pub db_size: i64,
    pub revision: i64,
    pub cluster_id: u64,
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    /// This member is a learner (it answers little but Status).
    pub is_learner: bool,
    /// What the member itself reports as wrong: no leader, raised alarms.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A raised alarm, as etcd lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: etcd_client::AlarmType,
}

impl std::fmt::Display for Alarm {
    /// As `etcdctl alarm list` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memberID:{} alarm:{}",
            self.member_id,
            self.kind.as_str_name()
        )
    }
}

pub struct LocalMember {
    client: Client,
    url: String,
}

fn read_file(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        path: path.to_path_buf(),
        source,
    })
}

fn tls_options(url: &str, tls: &ClientTls) -> Result<TlsOptions, EtcdError> {
    let ca = tls.ca_file.as_deref().ok_or_else(|| EtcdError::NoCa {
        url: url.to_string(),
    })?;
    let mut opts = TlsOptions::new().ca_certificate(Certificate::from_pem(read_file(ca)?));
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        opts = opts.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
    }
    Ok(opts)
}

fn member_info(m: &etcd_client::Member) -> MemberInfo {
    MemberInfo {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

impl LocalMember {
    pub async fn connect(endpoint: &ClientEndpoint) -> Result<Self, EtcdError> {
        let url = endpoint.url.clone();
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        if let Some(tls) = &endpoint.tls {
            opts = opts.with_tls(tls_options(&url, tls)?);
        }
        let client = Client::connect([url.as_str()], Some(opts))
            .await
            .map_err(|e| EtcdError::Unreachable {
                url: url.clone(),
                detail: describe(&e),
            })?;
        Ok(LocalMember { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(CALL_TIMEOUT, call, fut).await
    }

    async fn call_within<T, F>(
        &self,
        limit: Duration,
        call: &'static str,
        fut: F,
    ) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            // etcd answered, and said no: not a reachability problem.
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                // gRPC codes Unknown (2), DeadlineExceeded (4), Unavailable (14):
                // transport trouble, kept as "cannot reach".
                if !matches!(s.code() as i32, 2 | 4 | 14) =>
            {
                Err(EtcdError::Refused {
                    url: self.url.clone(),
                    call,
                    detail: s.message().to_string(),
                })
            }
            Ok(Err(e)) => Err(EtcdError::Unreachable {
                url: self.url.clone(),
                detail: describe(&e),
            }),
            Err(_) => Err(EtcdError::Timeout {
                url: self.url.clone(),
                call,
                secs: limit.as_secs(),
            }),
        }
    }

    pub async fn status(&self) -> Result<MemberStatus, EtcdError> {
        let mut m = self.client.maintenance_client();
        let s = self.call("status", m.status()).await?;
        let (cluster_id, member_id, revision, raft_term) = s
            .header()
            .map(|h| (h.cluster_id(), h.member_id(), h.revision(), h.raft_term()))
            .unwrap_or_default();
        Ok(MemberStatus {
            version: s.version().to_string(),
            db_size: s.db_size(),
            revision,
            cluster_id,
            member_id,
            leader: s.leader(),
            raft_term,
            is_learner: s.is_learner(),
            errors: s.errors().to_vec(),
        })
    }

    /// A linearizable read: it succeeds only when the cluster can commit,
    /// that is when it has a leader and a quorum (as `etcdctl endpoint
    /// health` asks). The key need not exist.
    pub async fn quorum_read(&self, limit: Duration) -> Result<(), EtcdError> {
        let mut kv = self.client.kv_client();
        self.call_within(limit, "a quorum read", kv.get("health", None))
            .await
            .map(drop)
    }

    pub async fn members(&self) -> Result<Vec<MemberInfo>, EtcdError> {
        let mut c = self.client.cluster_client();
        let resp = self.call("member list", c.member_list()).await?;
        Ok(resp.members().iter().map(member_info).collect())
    }

    /// Opens the snapshot stream; `limit` bounds the wait for etcd to start it.
    /// Connects and asks the member for its status and the member list:
    /// "is it serving, and as what".
    pub async fn probe(
        endpoint: &ClientEndpoint,
    ) -> Result<(MemberStatus, Vec<MemberInfo>), EtcdError> {
        let m = LocalMember::connect(endpoint).await?;
        let status = m.status().await?;
        let members = m.members().await?;
        Ok((status, members))
    }

    /// Adds a member as a learner (no vote, so no quorum change until it is
    /// promoted); returns its ID and the member list after the add.
    pub async fn add_learner(
        &self,
        peer_urls: &[String],
    ) -> Result<(u64, Vec<MemberInfo>), EtcdError> {
        let mut c = self.client.cluster_client();
        let opts = etcd_client::MemberAddOptions::new().with_is_learner();
        let resp = self
            .call("member add", c.member_add(peer_urls.to_vec(), Some(opts)))
            .await?;
        let id = resp.member().map(|m| m.id()).unwrap_or_default();
        Ok((id, resp.member_list().iter().map(member_info).collect()))
    }

    pub async fn promote(&self, id: u64) -> Result<(), EtcdError> {
        let mut c = self.client.cluster_client();
        self.call("member promote", c.member_promote(id))
            .await
            .map(drop)
    }

    pub async fn remove(&self, id: u64) -> Result<(), EtcdError> {
        let mut c = self.client.cluster_client();
        self.call("member remove", c.member_remove(id))
            .await
            .map(drop)
    }

    /// Hands raft leadership to `target`; only the leader can.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        let mut m = self.client.maintenance_client();
        self.call("move leader", m.move_leader(target))
            .await
            .map(drop)
    }

    /// Changes a member's advertised peer URLs (MemberUpdate).
    pub async fn update_peer_urls(&self, id: u64, urls: &[String]) -> Result<(), EtcdError> {
        let mut c = self.client.cluster_client();
        self.call("member update", c.member_update(id, urls.to_vec()))
            .await
            .map(drop)
    }

    /// Compacts the key history up to `revision`; `physical` waits until
    /// the freed space is really reclaimed in the backend.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<(), EtcdError> {
        let mut kv = self.client.kv_client();
        let opts = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
        self.call_within(LONG_CALL, "compact", kv.compact(revision, opts))
            .await
            .map(drop)
    }

    /// Rewrites this member's backend db without its free pages. The member
    /// answers nothing else meanwhile, so it can take a while on a big db.
    pub async fn defragment(&self) -> Result<(), EtcdError> {
        let mut m = self.client.maintenance_client();
        self.call_within(LONG_CALL, "defragment", m.defragment())
            .await
            .map(drop)
    }

    /// The cluster's raised alarms: (member ID, alarm name).
    pub async fn alarms(&self) -> Result<Vec<Alarm>, EtcdError> {
        use etcd_client::{AlarmAction, AlarmType};
        let mut m = self.client.maintenance_client();
        let resp = self
            .call(
                "alarm list",
                m.alarm(AlarmAction::Get, AlarmType::None, None),
            )
            .await?;
        Ok(resp
            .alarms()
            .iter()
            .map(|a| Alarm {
                member_id: a.member_id(),
                kind: a.alarm(),
            })
            .collect())
    }

    /// Clears one raised alarm.
    pub async fn disarm(&self, alarm: &Alarm) -> Result<(), EtcdError> {
        use etcd_client::{AlarmAction, AlarmOptions};
        let mut m = self.client.maintenance_client();
        let mut opts = AlarmOptions::new();
        opts.with_member(alarm.member_id);
        self.call(
            "alarm disarm",
            m.alarm(AlarmAction::Deactivate, alarm.kind, Some(opts)),
        )
        .await
        .map(drop)
    }

    pub async fn snapshot(
        &self,
        limit: Duration,
    ) -> Result<etcd_client::SnapshotStreaming, EtcdError> {
        let mut m = self.client.maintenance_client();
        self.call_within(limit, "snapshot", m.snapshot()).await
    }
}
