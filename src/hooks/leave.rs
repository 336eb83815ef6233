//! A unit leaving: its member taken out of the cluster while the others
//! can still agree, then etcd stopped; never silently, if that fails.

use std::time::{Duration, Instant};

use super::cluster::left_marker;
use super::HookContext;
use crate::error::Error;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::fsutil;
use crate::juju::{LogLevel, Status};
use crate::service;

/// How long a departing unit retries removing its own member.
const LEAVE_LIMIT: Duration = Duration::from_secs(15);
/// The left marker's content when the removal failed.
pub(super) const REMOVE_FAILED: &str = "remove-failed";

/// What became of this unit's member as it leaves.
enum Left {
    /// Removed from the cluster, or the last member (it stays as it is).
    Done(String),
    /// Still a voting member: its removal failed for this reason.
    Failed { member: String, reason: String },
}

/// Removes this unit's member from the cluster, retrying for `limit`.
fn remove_own_member(ctx: &HookContext, limit: Duration) -> Result<Left, Error> {
    let Ok(conf) = EtcdConfig::load(ctx.paths.conf()) else {
        return Ok(Left::Done("this unit has no etcd config".into()));
    };
    let endpoint = conf.client_endpoint(ctx.paths.conf())?;
    let rt = crate::actions::runtime()?;
    let deadline = Instant::now() + limit;
    let mut member = conf.name.clone().unwrap_or_default();
    loop {
        let tried = rt.block_on(async {
            let m = LocalMember::connect(&endpoint).await?;
            let s = m.status().await?;
            if s.is_learner {
                return Ok::<_, crate::etcd::client::EtcdError>(
                    "this unit's member is a learner (it has no vote); the leader removes it",
                );
            }
            if m.members().await?.len() <= 1 {
                return Ok("this unit's member is the last one; it stays as it is");
            }
            m.remove(s.member_id).await?;
            Ok("removed this unit's member from the cluster")
        });
        match tried {
            Ok(what) => return Ok(Left::Done(what.into())),
            // etcd stops itself once its member is removed (the leader may
            // have done it first); a stopped etcd holds no vote we can give
            // back from here either.
            Err(_) if removed_or_stopped() => {
                return Ok(Left::Done(
                    "this unit's etcd has stopped (its member was removed, or it was down); the leader removes any member left".into(),
                ))
            }
            Err(e) if Instant::now() >= deadline => {
                if let Ok(id) =
                    rt.block_on(async { LocalMember::connect(&endpoint).await?.status().await })
                {
                    member = format!("{member} ({})", crate::etcd::id_hex(id.member_id));
                }
                return Ok(Left::Failed {
                    member,
                    reason: e.to_string(),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// etcd says its member was removed, or its process is gone.
fn removed_or_stopped() -> bool {
    !service::is_active()
        || service::last_log_lines(5)
            .iter()
            .any(|l| l.contains("permanently removed from the cluster"))
}

/// This unit is leaving the peer relation: take its member out of the
/// cluster (while the others can still agree), then stop etcd. If the
/// member cannot be removed, etcd keeps running (a stopped voter would
/// count against the others' quorum) and the unit says so; the stop hook
/// tries once more.
pub fn leave(ctx: &HookContext) -> Result<(), Error> {
    let marker = left_marker(ctx);
    let _ = fsutil::create_private_dir(&ctx.paths.state_dir());
    let before = std::fs::read_to_string(&marker).unwrap_or_default();
    if before.starts_with("left") {
        // An earlier departed hook of this removal did it already.
        return Ok(());
    }
    // The first departed hook retries; later ones try once.
    let limit = if before.is_empty() {
        LEAVE_LIMIT
    } else {
        Duration::ZERO
    };
    match remove_own_member(ctx, limit)? {
        Left::Done(what) => {
            let _ = fsutil::replace_file(&marker, b"left\n");
            ctx.log(&what);
            let _ = service::stop();
            ctx.tools.status_set(
                Status::Maintenance,
                "Left the cluster; this unit is being removed",
            )?;
        }
        Left::Failed { member, reason } => {
            let _ = fsutil::replace_file(&marker, format!("{REMOVE_FAILED}\n").as_bytes());
            let msg = format!(
                "could not remove this unit's member {member} from the cluster ({reason}); etcd keeps running so the other members keep their quorum; once they can agree, run `etcdctl member remove` for it on a remaining unit"
            );
            ctx.tools.log(LogLevel::Error, &msg)?;
            ctx.tools.status_set(Status::Blocked, &msg)?;
        }
    }
    Ok(())
}

/// The stop hook. A unit whose member could not leave tries once more; if
/// that fails too, etcd is stopped anyway (the unit is going away), and
/// the log says loudly which member the cluster still counts.
pub fn stop(ctx: &HookContext) -> Result<(), Error> {
    let marker = left_marker(ctx);
    let failed = std::fs::read_to_string(&marker)
        .unwrap_or_default()
        .starts_with(REMOVE_FAILED);
    if failed {
        match remove_own_member(ctx, Duration::ZERO)? {
            Left::Done(what) => {
                let _ = fsutil::replace_file(&marker, b"left\n");
                ctx.log(&what);
            }
            Left::Failed { member, reason } => ctx.tools.log(
                LogLevel::Error,
                &format!(
                    "stopping etcd while its member {member} is still in the cluster ({reason}): the remaining members count it as a voter until someone runs `etcdctl member remove` for it on a remaining unit"
                ),
            )?,
        }
    }
    let _ = service::stop();
    Ok(())
}
