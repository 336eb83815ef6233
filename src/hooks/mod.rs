//! Hooks. Juju runs `dispatch` for every hook, including ones the charm
//! has nothing to do in; those succeed quietly.

use crate::error::Error;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::juju::{HookTools, LogLevel, Status};
use crate::paths::Paths;

pub fn run(name: &str, tools: &dyn HookTools, paths: &Paths) -> Result<(), Error> {
    match name {
        "update-status" => update_status(tools, paths),
        _ => {
            tools.log(LogLevel::Debug, &format!("nothing to do in {name}"))?;
            Ok(())
        }
    }
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
            let msg = format!("Healthy with {n} known peer{plural} (etcd {})", s.version);
            tools.status_set(Status::Active, &msg)?
        }
        Err(e) => tools.status_set(Status::Blocked, &e.to_string())?,
    }
    Ok(())
}
