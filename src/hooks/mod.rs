//! Hooks. Juju runs `dispatch` for every hook, including ones the charm
//! has nothing to do in; those succeed quietly.

use crate::actions::journal;
use crate::error::Error;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::juju::{HookTools, LogLevel, Status};
use crate::lock::ActionLock;
use crate::paths::Paths;

pub fn run(name: &str, tools: &dyn HookTools, paths: &Paths) -> Result<(), Error> {
    if !resolve_interrupted(tools, paths)? {
        return Ok(());
    }
    match name {
        "update-status" => update_status(tools, paths),
        _ => {
            tools.log(LogLevel::Debug, &format!("nothing to do in {name}"))?;
            Ok(())
        }
    }
}

/// Every hook first looks for a restore that was killed midway and
/// finishes or undoes it. A running action holds the lock (and owns its
/// journal): then there is nothing to resolve yet. False when the unit is
/// left blocked: the hook's own work waits, and the next hook tries again
/// (a failed hook would only stop Juju from running them).
fn resolve_interrupted(tools: &dyn HookTools, paths: &Paths) -> Result<bool, Error> {
    let Ok(_lock) = ActionLock::acquire(&paths.state_dir(), "hook") else {
        return Ok(true);
    };
    match journal::recover_and_note(paths) {
        Ok(Some(note)) => tools.log(LogLevel::Warning, &note)?,
        Ok(None) => {}
        Err(e) => {
            let msg = e.to_string();
            tools.log(LogLevel::Error, &msg)?;
            tools.status_set(Status::Blocked, &msg)?;
            return Ok(false);
        }
    }
    Ok(true)
}

fn update_status(tools: &dyn HookTools, paths: &Paths) -> Result<(), Error> {
    let conf = match EtcdConfig::load(paths.conf()) {
        Ok(c) => c,
        Err(e) => {
            tools.status_set(Status::Blocked, &e.to_string())?;
            return Ok(());
        }
    };
    let endpoint = conf.client_endpoint(paths.conf())?;
    let rt = crate::actions::runtime()?;
    match rt.block_on(LocalMember::probe(&endpoint)) {
        Ok((s, members)) => {
            let n = members.len();
            let plural = if n == 1 { "" } else { "s" };
            let mut msg = format!("Healthy with {n} known peer{plural} (etcd {})", s.version);
            if let Some(note) = journal::recent_note(paths) {
                msg.push_str("; ");
                msg.push_str(&note);
            }
            tools.status_set(Status::Active, &msg)?
        }
        Err(e) => tools.status_set(Status::Blocked, &e.to_string())?,
    }
    Ok(())
}
