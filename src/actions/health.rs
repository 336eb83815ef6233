//! The `health` action: every member of the cluster, asked in turn over its
//! own client URL whether it can commit (a quorum read), as `etcdctl
//! endpoint health --cluster` does. The output ends with `cluster is
//! healthy` only when every voting member answers, as layer-etcd's did.

use std::time::{Duration, Instant};

use crate::actions::{voting_member, ActionContext};
use crate::error::Error;
use crate::etcd::config::ClientEndpoint;
use crate::etcd::{LocalMember, MemberInfo};
use crate::juju::Results;

/// Per member: long enough for a loaded member, short enough that a dead
/// one does not hold the action for minutes.
const MEMBER_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("the cluster is unhealthy: {bad} of {total} voting members do not answer ({names}); see output for each member")]
    Unhealthy {
        bad: usize,
        total: usize,
        names: String,
    },
}

impl From<HealthError> for Error {
    fn from(e: HealthError) -> Self {
        Error::Action(Box::new(e))
    }
}

/// One member's line, and whether it counts against the cluster.
async fn check(member: &MemberInfo, local: &ClientEndpoint) -> (String, bool) {
    let Some(url) = member.client_urls.first() else {
        // Added but never started: it has no client URL yet.
        return (
            format!("{} has not started (no client URL)", label(member)),
            !member.is_learner,
        );
    };
    let endpoint = local.at(url);
    let started = Instant::now();
    let answer = async {
        let m = LocalMember::connect(&endpoint).await?;
        m.quorum_read(MEMBER_LIMIT).await
    };
    let outcome = tokio::time::timeout(MEMBER_LIMIT * 2, answer).await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(Ok(())) => (
            format!(
                "{url} is healthy: successfully committed proposal: took = {took:.1}ms ({})",
                label(member)
            ),
            false,
        ),
        Ok(Err(e)) => (
            format!("{url} is unhealthy: {e} ({})", label(member)),
            !member.is_learner,
        ),
        Err(_) => (
            format!(
                "{url} is unhealthy: no answer within {} s ({})",
                (MEMBER_LIMIT * 2).as_secs(),
                label(member)
            ),
            !member.is_learner,
        ),
    }
}

fn label(m: &MemberInfo) -> String {
    let name = if m.name.is_empty() {
        "unnamed"
    } else {
        &m.name
    };
    if m.is_learner {
        format!("member {name}, learner")
    } else {
        format!("member {name}")
    }
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let (rt, endpoint, local) = voting_member(ctx)?;
    let mut members = rt.block_on(local.members())?;
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for m in &members {
        let (line, counts) = rt.block_on(check(m, &endpoint));
        lines.push(line);
        if counts {
            bad.push(if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            });
        }
    }
    let voting = members.iter().filter(|m| !m.is_learner).count();
    lines.push(if bad.is_empty() {
        "cluster is healthy".to_string()
    } else {
        "cluster is unhealthy".to_string()
    });
    let mut r = Results::new();
    r.set("output", lines.join("\n"))?;
    r.set("members", voting.to_string())?;
    r.set("unhealthy", bad.len().to_string())?;
    if bad.is_empty() {
        return Ok(r);
    }
    // The per-member lines are what the operator needs beside the failure.
    ctx.tools.action_set(&r)?;
    Err(HealthError::Unhealthy {
        bad: bad.len(),
        total: voting,
        names: bad.join(", "),
    }
    .into())
}
