//! `alarm-list` and `alarm-disarm`: the cluster's raised alarms (NOSPACE,
//! CORRUPT), listed or cleared, as `etcdctl alarm list|disarm` print them.

use crate::actions::{voting_member, ActionContext};
use crate::error::Error;
use crate::juju::Results;

pub fn list(ctx: &ActionContext) -> Result<Results, Error> {
    let (rt, _, local) = voting_member(ctx)?;
    let alarms = rt.block_on(local.alarms())?;
    let mut r = Results::new();
    let lines: Vec<String> = alarms.iter().map(ToString::to_string).collect();
    r.set("output", lines.join("\n"))?;
    r.set("count", alarms.len().to_string())?;
    Ok(r)
}

/// Clears every raised alarm. A NOSPACE alarm comes back on the next write
/// if the db is still over its quota: compact and defrag first.
pub fn disarm(ctx: &ActionContext) -> Result<Results, Error> {
    let (rt, _, local) = voting_member(ctx)?;
    let alarms = rt.block_on(local.alarms())?;
    for a in &alarms {
        rt.block_on(local.disarm(a))?;
    }
    let mut r = Results::new();
    let mut lines: Vec<String> = alarms.iter().map(ToString::to_string).collect();
    if alarms
        .iter()
        .any(|a| a.kind == etcd_client::AlarmType::Corrupt)
    {
        // As etcdctl does, it is cleared; but the operator must know.
        lines.push("WARNING: a CORRUPT alarm means this member's data diverged from the others'; find the member (etcdctl check hashkv), remove it and add it back empty, or restore from a snapshot".into());
    }
    r.set("output", lines.join("\n"))?;
    r.set("disarmed", alarms.len().to_string())?;
    Ok(r)
}
