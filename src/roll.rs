//! Rolling restarts: whatever makes etcd restart (a config change, new
//! certificates, a new binary or snap channel) restarts one unit at a time.
//!
//! A unit that needs a restart says so on the peer relation (`restart-wanted`);
//! the leader grants one unit the lock (leader setting `restart-lock`); the
//! holder checks every other voting member answers (so its restart cannot
//! cost the quorum), hands raft leadership away if it has it, restarts, and
//! clears its request once its member is healthy again. Only then does the
//! leader grant the next unit. A unit that does not come back keeps the lock:
//! the roll stops there, and its status says why.

use std::time::{Duration, Instant};

use crate::etcd::config::ClientEndpoint;
use crate::etcd::health::{self, Health};
use crate::etcd::{id_hex, LocalMember, MemberInfo};
use crate::juju::{HookTools, JujuError, Settings};

/// Peer unit key: this unit's etcd waits for a restart (a digest of what it
/// will run next, so the operator can see it change).
pub const WANT: &str = "restart-wanted";
/// Leader setting: the unit allowed to restart now.
pub const LOCK: &str = "restart-lock";
/// How long a leadership transfer may take before the restart goes ahead
/// anyway (etcd elects a new leader by itself then, as on any crash).
const MOVE_LIMIT: Duration = Duration::from_secs(10);

fn unit_number(unit: &str) -> u64 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// The leader's part: keeps the lock with a holder that still wants it
/// (it is restarting, or could not come back), else hands it to the next
/// unit that asks, lowest unit number first. Returns the holder.
pub fn arbitrate(
    tools: &dyn HookTools,
    rid: &str,
    me: &str,
    i_want: bool,
    settings: &mut Settings,
) -> Result<Option<String>, JujuError> {
    let mut units = tools.relation_list(rid)?;
    units.push(me.to_string());
    units.sort_by_key(|u| (unit_number(u), u.clone()));
    units.dedup();
    let mut wanting = Vec::new();
    for u in &units {
        let wants = if u == me {
            i_want
        } else {
            tools
                .relation_get(rid, u)?
                .get(WANT)
                .is_some_and(|v| !v.is_empty())
        };
        if wants {
            wanting.push(u.clone());
        }
    }
    let current = settings.get(LOCK).cloned().unwrap_or_default();
    let holder = if wanting.contains(&current) {
        Some(current.clone())
    } else {
        wanting.first().cloned()
    };
    let value = holder.clone().unwrap_or_default();
    if value != current {
        tools.leader_set(&[(LOCK, value.clone())])?;
        if value.is_empty() {
            settings.remove(LOCK);
        } else {
            settings.insert(LOCK.into(), value);
        }
    }
    Ok(holder)
}

/// A member's client endpoint, reached with this unit's client identity
/// when it speaks TLS.
pub type Reach<'a> = &'a dyn Fn(&str) -> ClientEndpoint;

/// Whether this unit's member may stop now: every other voting member must
/// answer as itself, so the cluster keeps its quorum while this one is
/// down. A member that is not serving anyway may always restart. Returns
/// the members that answered (to hand leadership to), or why not.
pub fn may_stop(
    rt: &tokio::runtime::Runtime,
    local: &Health,
    reach: Reach,
) -> Result<Vec<MemberInfo>, String> {
    let Some((status, members, _)) = local.serving() else {
        return Ok(Vec::new());
    };
    let mut answered = Vec::new();
    for m in members
        .iter()
        .filter(|m| m.id != status.member_id && !m.is_learner)
    {
        let Some(url) = m.client_urls.first() else {
            return Err(format!("member {} has not started", m.name));
        };
        let h = rt.block_on(health::check(&reach(url), &m.name));
        if h.serving().is_none() {
            return Err(format!(
                "member {} is not healthy ({})",
                m.name,
                h.problem().unwrap_or_else(|| "a learner".into())
            ));
        }
        answered.push(m.clone());
    }
    Ok(answered)
}

/// Before this unit's member stops: if it leads the raft, hand leadership
/// to another member that answered, and wait (bounded) until it has moved.
/// Returns what happened, for the log.
pub fn move_leadership(
    rt: &tokio::runtime::Runtime,
    endpoint: &ClientEndpoint,
    local: &Health,
    others: &[MemberInfo],
) -> Option<String> {
    let (status, _, _) = local.serving()?;
    if status.leader != status.member_id {
        return None;
    }
    let target = others.first()?;
    let client = match rt.block_on(LocalMember::connect(endpoint)) {
        Ok(c) => c,
        Err(e) => return Some(format!("could not move leadership: {e}")),
    };
    if let Err(e) = rt.block_on(client.move_leader(target.id)) {
        return Some(format!("could not move leadership to {}: {e}", target.name));
    }
    let deadline = Instant::now() + MOVE_LIMIT;
    while Instant::now() < deadline {
        match rt.block_on(client.status()) {
            Ok(s) if s.leader != 0 && s.leader != status.member_id => {
                return Some(format!(
                    "moved etcd leadership to {} ({}) before restarting",
                    target.name,
                    id_hex(s.leader)
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Some(format!(
        "leadership did not move to {} within {} s; restarting anyway",
        target.name,
        MOVE_LIMIT.as_secs()
    ))
}

/// Before this unit's member restarts on a new peer URL (moving to TLS, or
/// a new address): the cluster is told first (MemberUpdate), so the others
/// reach it at the new URL once it is back.
pub fn readvertise(
    rt: &tokio::runtime::Runtime,
    endpoint: &ClientEndpoint,
    local: &Health,
    peer_url: &str,
) -> Result<(), String> {
    let Some((status, members, _)) = local.serving() else {
        return Ok(());
    };
    let Some(me) = members.iter().find(|m| m.id == status.member_id) else {
        return Ok(());
    };
    if me.peer_urls.iter().any(|u| u == peer_url) {
        return Ok(());
    }
    let client = rt
        .block_on(LocalMember::connect(endpoint))
        .map_err(|e| e.to_string())?;
    rt.block_on(client.update_peer_urls(me.id, &[peer_url.to_string()]))
        .map_err(|e| format!("cannot change this member's peer URL to {peer_url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::unit_number;

    #[test]
    fn units_sort_by_number() {
        let mut u = vec!["etcd/10", "etcd/2", "etcd/1"];
        u.sort_by_key(|u| unit_number(u));
        assert_eq!(u, ["etcd/1", "etcd/2", "etcd/10"]);
    }
}
