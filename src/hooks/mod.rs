//! Hooks. Every hook first resolves a restore that was killed midway; most
//! then converge the unit on what it should be (etcd installed, configured,
//! running, in its cluster) and report status. Hooks with nothing to do
//! succeed quietly.

mod cluster;

use crate::actions::journal;
use crate::error::Error;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::install::{self, Installed};
use crate::juju::{HookTools, JujuEnv, LogLevel, Status};
use crate::lock::ActionLock;
use crate::paths::Paths;
use crate::service;

pub use cluster::{DB, PEER};

pub struct HookContext<'a> {
    pub tools: &'a dyn HookTools,
    pub paths: &'a Paths,
    pub env: &'a JujuEnv,
}

impl HookContext<'_> {
    fn log(&self, message: &str) {
        let _ = self.tools.log(LogLevel::Info, message);
    }
}

pub fn run(name: &str, tools: &dyn HookTools, paths: &Paths, env: &JujuEnv) -> Result<(), Error> {
    let ctx = HookContext { tools, paths, env };
    if !resolve_interrupted(tools, paths)? {
        return Ok(());
    }
    let departing_self = env.departing_unit.is_some()
        && env.departing_unit.as_deref() == Some(env.unit_name.as_str());
    match name {
        "install" => {
            if install_etcd(&ctx)?.is_some() {
                cluster::converge(&ctx, None)?;
            }
            Ok(())
        }
        "stop" => {
            let _ = service::stop();
            Ok(())
        }
        "remove" => install::uninstall(paths).map_err(|e| Error::Hook(e.to_string())),
        n if n.ends_with("-relation-departed") && departing_self => cluster::leave(&ctx),
        n if n.ends_with("-relation-broken") && departing_self => Ok(()),
        "config-changed"
        | "start"
        | "leader-elected"
        | "leader-settings-changed"
        | "upgrade-charm"
        | "update-status" => cluster::converge(&ctx, None),
        n if n == format!("{PEER}-relation-departed") => {
            cluster::converge(&ctx, env.remote_unit.as_deref())
        }
        n if n.starts_with(&format!("{PEER}-relation-"))
            || n.starts_with(&format!("{DB}-relation-")) =>
        {
            cluster::converge(&ctx, None)
        }
        _ => {
            tools.log(LogLevel::Debug, &format!("nothing to do in {name}"))?;
            Ok(())
        }
    }
}

/// Installs etcd (the `etcd` resource if attached, else the snap). None
/// when the options keep it from installing (the status says why); a
/// failed install fails the hook, so Juju retries it.
pub(crate) fn install_etcd(ctx: &HookContext) -> Result<Option<Installed>, Error> {
    let tools = ctx.tools;
    tools.status_set(Status::Maintenance, "Installing etcd")?;
    let options = match cluster::options(ctx) {
        Ok(o) => o,
        Err(msg) => {
            tools.status_set(Status::Blocked, &msg)?;
            return Ok(None);
        }
    };
    let resource = tools
        .resource_get(install::RESOURCE)?
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
    match install::install(ctx.paths, resource.as_deref(), &options.channel) {
        Ok(i) => {
            ctx.log(&format!(
                "installed etcd from the {}{}",
                i.source,
                i.version
                    .as_ref()
                    .map(|v| format!(" (etcd {v})"))
                    .unwrap_or_default()
            ));
            Ok(Some(i))
        }
        Err(e) => {
            let msg = e.to_string();
            tools.status_set(Status::Blocked, &msg)?;
            Err(Error::Hook(msg))
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

/// The status of a unit whose etcd the charm did not install (laid out by
/// hand): healthy with its member count, or blocked with the reason.
fn report_status(tools: &dyn HookTools, paths: &Paths) -> Result<(), Error> {
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
            tools.status_set(Status::Active, &healthy(members.len(), &s.version, paths))?
        }
        Err(e) => tools.status_set(Status::Blocked, &e.to_string())?,
    }
    Ok(())
}

/// "Healthy with N known peers (etcd V)", plus any recent recovery note.
fn healthy(n: usize, version: &str, paths: &Paths) -> String {
    let plural = if n == 1 { "" } else { "s" };
    let mut msg = format!("Healthy with {n} known peer{plural} (etcd {version})");
    if let Some(note) = journal::recent_note(paths) {
        msg.push_str("; ");
        msg.push_str(&note);
    }
    msg
}
