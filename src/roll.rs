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
use crate::juju::{unit_number, HookTools, JujuError, Settings};

/// Peer unit key: this unit's etcd waits for a restart (a digest of what it
/// will run next, so the operator can see it change).
pub const WANT: &str = "restart-wanted";
/// Leader setting: the unit allowed to restart now.
pub const LOCK: &str = "restart-lock";
/// How long a leadership transfer may take before the restart goes ahead
/// anyway (etcd elects a new leader by itself then, as on any crash).
const MOVE_LIMIT: Duration = Duration::from_secs(10);

/// The lock's value: the unit and the request it was granted for, so a
/// grant never carries over to a later request of the same unit (a hook
/// that read the leader settings before the lock moved on would otherwise
/// take it).
pub fn grant_value(unit: &str, digest: &str) -> String {
    format!("{unit}:{digest}")
}

/// The unit holding the lock (`etcd/1` of `etcd/1:<digest>`).
pub fn holder(settings: &Settings) -> Option<&str> {
    settings
        .get(LOCK)
        .and_then(|v| v.split(':').next())
        .filter(|u| !u.is_empty())
}

/// The leader's part: keeps the lock with a holder that still wants it for
/// the same request (it is restarting, or could not come back), else hands
/// it to the next unit that asks, lowest unit number first. Returns the
/// lock's value.
pub fn arbitrate(
    tools: &dyn HookTools,
    rid: &str,
    me: &str,
    my_want: Option<&str>,
    settings: &mut Settings,
) -> Result<Option<String>, JujuError> {
    let mut units = tools.relation_list(rid)?;
    units.push(me.to_string());
    units.sort_by_key(|u| (unit_number(u), u.clone()));
    units.dedup();
    let mut wanting = Vec::new();
    for u in &units {
        let want = if u == me {
            my_want.map(String::from)
        } else {
            tools.relation_get(rid, u)?.get(WANT).cloned()
        };
        if let Some(d) = want.filter(|d| !d.is_empty()) {
            wanting.push(grant_value(u, &d));
        }
    }
    let current = settings.get(LOCK).cloned().unwrap_or_default();
    let value = if wanting.contains(&current) {
        Some(current.clone())
    } else {
        wanting.first().cloned()
    };
    let new = value.clone().unwrap_or_default();
    if new != current {
        tools.leader_set(&[(LOCK, new.clone())])?;
        if new.is_empty() {
            settings.remove(LOCK);
        } else {
            settings.insert(LOCK.into(), new);
        }
    }
    Ok(value)
}

/// A member's client endpoint, reached with this unit's client identity
/// when it speaks TLS.
pub type Reach<'a> = &'a dyn Fn(&str) -> ClientEndpoint;

/// The member list as this unit's member gives it, else as the first
/// other member that answers gives it. None when nobody answers.
fn member_list(
    rt: &tokio::runtime::Runtime,
    local: &Health,
    others: &[ClientEndpoint],
) -> Option<(Option<u64>, Vec<MemberInfo>)> {
    if let Some((status, members, _)) = local.serving() {
        return Some((Some(status.member_id), members.to_vec()));
    }
    others.iter().find_map(|ep| {
        let c = rt.block_on(LocalMember::connect(ep)).ok()?;
        Some((None, rt.block_on(c.members()).ok()?))
    })
}

/// Whether this unit's member may stop now: every other voting member must
/// answer as itself, so the cluster keeps its quorum while this one is
/// down. When this member does not answer, the list comes from the others
/// (it may only be slow, and still count). Returns the members that
/// answered (to hand leadership to), or why not.
pub fn may_stop(
    rt: &tokio::runtime::Runtime,
    local: &Health,
    name: &str,
    others: &[ClientEndpoint],
    reach: Reach,
) -> Result<Vec<MemberInfo>, String> {
    let Some((my_id, members)) = member_list(rt, local, others) else {
        if others.is_empty() {
            // A cluster of one: its restart is an outage whatever we do.
            return Ok(Vec::new());
        }
        return Err("no other member answers".into());
    };
    let mut answered = Vec::new();
    for m in members
        .iter()
        .filter(|m| Some(m.id) != my_id && m.name != name && !m.is_learner)
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

/// Before this unit's member starts on a new peer URL (moving to TLS, or
/// a new address): the cluster is told first (MemberUpdate), through this
/// member or, when it does not answer, another, so the others reach it at
/// the new URL once it is back.
pub fn readvertise(
    rt: &tokio::runtime::Runtime,
    local: &Health,
    local_endpoint: &ClientEndpoint,
    others: &[ClientEndpoint],
    name: &str,
    peer_url: &str,
) -> Result<(), String> {
    let via: Vec<&ClientEndpoint> = if local.serving().is_some() {
        vec![local_endpoint]
    } else {
        others.iter().collect()
    };
    let mut last = String::from("no member answers");
    for ep in via {
        let client = match rt.block_on(LocalMember::connect(ep)) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let members = match rt.block_on(client.members()) {
            Ok(m) => m,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let my_id = local.status().map(|s| s.member_id);
        let Some(me) = members
            .iter()
            .find(|m| Some(m.id) == my_id || (!m.name.is_empty() && m.name == name))
        else {
            // Not a member (yet): nothing to tell.
            return Ok(());
        };
        if me.peer_urls.iter().any(|u| u == peer_url) {
            return Ok(());
        }
        return rt
            .block_on(client.update_peer_urls(me.id, &[peer_url.to_string()]))
            .map_err(|e| format!("cannot change this member's peer URL to {peer_url}: {e}"));
    }
    if others.is_empty() && local.serving().is_none() {
        // Alone and down: nobody to tell; it comes back on its own.
        return Ok(());
    }
    Err(format!(
        "cannot change this member's peer URL to {peer_url}: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use crate::juju::unit_number;

    #[test]
    fn units_sort_by_number() {
        let mut u = vec!["etcd/10", "etcd/2", "etcd/1"];
        u.sort_by_key(|u| unit_number(u));
        assert_eq!(u, ["etcd/1", "etcd/2", "etcd/10"]);
    }
}
