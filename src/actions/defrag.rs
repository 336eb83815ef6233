//! The `defrag` action: rewrite this member's backend db without its free
//! pages, as `etcdctl defrag` does for one endpoint. The member answers no
//! one while it runs, so only this unit's member, and never beside a
//! snapshot or restore (the action lock).

use crate::actions::{voting_member, ActionContext};
use crate::error::Error;
use crate::fsutil::human_size;
use crate::juju::Results;
use crate::lock::ActionLock;

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let _lock = ActionLock::acquire(&ctx.paths.state_dir(), "defrag")?;
    let (rt, endpoint, local) = voting_member(ctx)?;
    let before = rt.block_on(local.status())?.db_size;
    ctx.progress(&format!(
        "defragmenting {} (db {})",
        endpoint.url,
        human_size(before.max(0) as u64)
    ));
    rt.block_on(local.defragment())?;
    let after = rt.block_on(local.status())?.db_size;
    let mut r = Results::new();
    r.set(
        "output",
        format!("Finished defragmenting etcd member[{}]", endpoint.url),
    )?;
    r.set("db-size-before", before.to_string())?;
    r.set("db-size-after", after.to_string())?;
    Ok(r)
}
