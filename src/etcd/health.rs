//! Whether this unit's member is healthy. A member answers Status and
//! MemberList from its own state, even without quorum, and any member
//! listening on a shared address can answer for another; so "healthy" here
//! means: the member that answers is this unit's (its ID is the one the
//! member list gives this unit's name), the cluster has a leader, no alarm
//! is raised, and a linearizable read commits.

use std::time::{Duration, Instant};

use super::client::{LocalMember, MemberInfo, MemberStatus};
use super::config::ClientEndpoint;

/// How long a quorum read may take before the cluster counts as without
/// quorum; a healthy cluster answers in milliseconds.
const QUORUM_LIMIT: Duration = Duration::from_secs(5);
/// etcd's own Status error for a member that sees no leader.
const NO_LEADER: &str = "etcdserver: no leader";

#[derive(Debug, Clone)]
pub enum Health {
    /// This unit's member answers, with a leader, quorum and no alarm.
    Healthy {
        status: MemberStatus,
        members: Vec<MemberInfo>,
    },
    /// This unit's member is a learner: it answers only Status.
    Learner { status: MemberStatus },
    /// This unit's member answers but sees no leader, or cannot commit.
    NoQuorum {
        status: MemberStatus,
        members: usize,
        detail: String,
    },
    /// Alarms are raised (NOSPACE, CORRUPT): etcd refuses writes.
    Alarms {
        status: MemberStatus,
        members: Vec<MemberInfo>,
        alarms: Vec<String>,
    },
    /// Another member answered on this unit's client URL.
    NotThisMember { url: String, answered_by: String },
    /// Nothing answered.
    Down { detail: String },
}

impl Health {
    /// This unit's own member answered (healthy or not).
    pub fn answers_as_itself(&self) -> bool {
        !matches!(self, Health::NotThisMember { .. } | Health::Down { .. })
    }

    /// This unit's member serves, with a leader: healthy, or with alarms
    /// (etcd's own state, carried in its data; the operator deals with
    /// them, and the status says so). Its member list and alarms.
    pub fn serving(&self) -> Option<(&MemberStatus, &[MemberInfo], &[String])> {
        match self {
            Health::Healthy { status, members } => Some((status, members, &[])),
            Health::Alarms {
                status,
                members,
                alarms,
            } => Some((status, members, alarms)),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<&MemberStatus> {
        match self {
            Health::Healthy { status, .. }
            | Health::Learner { status }
            | Health::NoQuorum { status, .. }
            | Health::Alarms { status, .. } => Some(status),
            _ => None,
        }
    }

    /// One sentence for the operator about what is wrong; None when healthy
    /// or a learner (which is a state, not a fault).
    pub fn problem(&self) -> Option<String> {
        match self {
            Health::Healthy { .. } | Health::Learner { .. } => None,
            Health::NoQuorum {
                members, detail, ..
            } => Some(format!(
                "etcd has no quorum: this member {detail} (cluster of {members}); start the stopped members or remove the lost ones"
            )),
            Health::Alarms { alarms, .. } => Some(format!(
                "etcd alarm raised ({}): etcd refuses writes until it is dealt with (NOSPACE: compact, defrag, then disarm)",
                alarms.join("; ")
            )),
            Health::NotThisMember { url, answered_by } => Some(format!(
                "this unit's etcd is not serving: {url} is answered by member {answered_by}, not this unit's"
            )),
            Health::Down { detail } => Some(format!("this unit's etcd is not serving ({detail})")),
        }
    }
}

/// etcd reports an alarm as `memberID:<decimal> alarm:NOSPACE`; the
/// operator reads member IDs in hex everywhere else.
fn readable_alarm(text: &str) -> String {
    let mut member = None;
    let mut alarm = None;
    for part in text.split_whitespace() {
        if let Some(id) = part.strip_prefix("memberID:") {
            member = id.parse::<u64>().ok();
        } else if let Some(a) = part.strip_prefix("alarm:") {
            alarm = Some(a);
        }
    }
    match (alarm, member) {
        (Some(a), Some(m)) => format!("{a} on member {}", super::id_hex(m)),
        _ => text.trim().to_string(),
    }
}

/// The name etcd reports for the member whose ID is `id`.
fn name_of(members: &[MemberInfo], id: u64) -> Option<&str> {
    members.iter().find(|m| m.id == id).map(|m| m.name.as_str())
}

/// Checks the member at `endpoint`, which should be the one named `name`
/// (etcd's own default, `default`, when the config names none).
pub async fn check(endpoint: &ClientEndpoint, name: &str) -> Health {
    let name = if name.is_empty() { "default" } else { name };
    let down = |e: super::client::EtcdError| Health::Down {
        detail: e.to_string(),
    };
    let member = match LocalMember::connect(endpoint).await {
        Ok(m) => m,
        Err(e) => return down(e),
    };
    let status = match member.status().await {
        Ok(s) => s,
        Err(e) => return down(e),
    };
    if status.is_learner {
        return Health::Learner { status };
    }
    let members = match member.members().await {
        Ok(m) => m,
        Err(e) => return down(e),
    };
    match name_of(&members, status.member_id) {
        Some(n) if n == name => {}
        other => {
            return Health::NotThisMember {
                url: endpoint.url.clone(),
                answered_by: match other {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => super::id_hex(status.member_id),
                },
            }
        }
    }
    let alarms: Vec<String> = status
        .errors
        .iter()
        .filter(|e| e.as_str() != NO_LEADER)
        .map(|e| readable_alarm(e))
        .collect();
    if status.leader == 0 {
        return Health::NoQuorum {
            status,
            members: members.len(),
            detail: "sees no leader".into(),
        };
    }
    if !alarms.is_empty() {
        return Health::Alarms {
            status,
            members,
            alarms,
        };
    }
    match member.quorum_read(QUORUM_LIMIT).await {
        // With auth on, a denied read still went through raft: quorum.
        Err(e) if e.to_string().contains("permission denied") => {}
        Ok(()) => {}
        Err(e) => {
            return Health::NoQuorum {
                status,
                members: members.len(),
                detail: format!("cannot commit a read ({e})"),
            }
        }
    }
    Health::Healthy { status, members }
}

/// Checks this unit's member until it serves (healthy, or with alarms
/// raised) or `limit` passes. Returns the last check and whether the
/// member ever answered as itself (then it may have served clients).
pub async fn wait(endpoint: &ClientEndpoint, name: &str, limit: Duration) -> (Health, bool) {
    let deadline = Instant::now() + limit;
    let mut answered = false;
    loop {
        let h = check(endpoint, name).await;
        answered |= h.answers_as_itself();
        if h.serving().is_some() || Instant::now() >= deadline {
            return (h, answered);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The member did not come to serve in time.
#[derive(Debug, Clone)]
pub struct NotServing {
    pub reason: String,
    /// It answered as itself at some point: it may have served clients.
    pub answered: bool,
}

/// What a serving member reported: its status, members and alarms.
pub type Serving = (MemberStatus, Vec<MemberInfo>, Vec<String>);

/// Waits until this unit's member serves; the error says what the last
/// check saw.
pub async fn wait_serving(
    endpoint: &ClientEndpoint,
    name: &str,
    limit: Duration,
) -> Result<Serving, NotServing> {
    let (h, answered) = wait(endpoint, name, limit).await;
    if let Some((s, m, a)) = h.serving() {
        return Ok((s.clone(), m.to_vec(), a.to_vec()));
    }
    Err(NotServing {
        reason: format!(
            "etcd did not become healthy within {} seconds: {}",
            limit.as_secs(),
            h.problem()
                .unwrap_or_else(|| "it is still a learner".into())
        ),
        answered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> MemberInfo {
        MemberInfo {
            id,
            name: name.into(),
            peer_urls: vec![],
            client_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn alarms_read_as_etcdctl_prints_them() {
        assert_eq!(
            readable_alarm("memberID:6274733733155866534 alarm:NOSPACE "),
            "NOSPACE on member 57145515d8ea87a6"
        );
        assert_eq!(readable_alarm("something else"), "something else");
    }

    #[test]
    fn a_member_is_known_by_its_id() {
        let ms = [member(1, "etcd-0"), member(2, "etcd-1")];
        assert_eq!(name_of(&ms, 2), Some("etcd-1"));
        assert_eq!(name_of(&ms, 3), None);
    }

    #[test]
    fn every_fault_has_a_sentence_and_healthy_has_none() {
        let down = Health::Down {
            detail: "connection refused".into(),
        };
        assert!(!down.answers_as_itself());
        assert!(down
            .problem()
            .is_some_and(|p| p.contains("connection refused")));
        let other = Health::NotThisMember {
            url: "http://127.0.0.3:2379".into(),
            answered_by: "etcd-0".into(),
        };
        assert!(other.problem().is_some_and(|p| p.contains("etcd-0")));
    }
}
