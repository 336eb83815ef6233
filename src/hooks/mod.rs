//! Hooks. Every hook first resolves a restore that was killed midway; most
//! then converge the unit on what it should be (etcd installed, configured,
//! running, in its cluster) and report status. Hooks with nothing to do
//! succeed quietly.

mod adopt;
mod backups;
mod cluster;
mod context;
mod leave;
mod restart;
mod snapd;
mod storage;
mod tls;
mod unmanaged;

use crate::actions::journal;
use crate::error::Error;
use crate::etcd::health::Health;
use crate::etcd::EtcdConfig;
use crate::install::{self, Installed};
use crate::juju::{HookTools, JujuEnv, LogLevel, Status};
use crate::lock::ActionLock;
use crate::paths::Paths;
use crate::relations::{azure, certificates, grafana, nrpe, prometheus, proxy, s3};
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

    fn log_at(&self, level: LogLevel, message: &str) {
        let _ = self.tools.log(level, message);
    }
}

pub fn run(name: &str, tools: &dyn HookTools, paths: &Paths, env: &JujuEnv) -> Result<(), Error> {
    let cached = context::Cached::new(tools, &env.unit_name, paths.state_dir());
    dispatch(name, &cached, paths, env)?;
    cached.commit()?;
    Ok(())
}

fn dispatch(name: &str, tools: &dyn HookTools, paths: &Paths, env: &JujuEnv) -> Result<(), Error> {
    let ctx = HookContext { tools, paths, env };
    if !resolve_interrupted(tools, paths)? {
        return Ok(());
    }
    if name == "config-changed"
        || name == "upgrade-charm"
        || name.starts_with(&format!("{}-relation-", nrpe::ENDPOINT))
    {
        nagios_checks(&ctx, name);
    }
    if name.starts_with(&format!("{}-relation-", s3::ENDPOINT))
        || name.starts_with(&format!("{}-relation-", azure::ENDPOINT))
        || ["leader-elected", "upgrade-charm", "config-changed"].contains(&name)
    {
        for problem in backups::sync(&ctx, name) {
            ctx.log(&problem);
        }
    }
    if [
        "leader-elected",
        "leader-settings-changed",
        "upgrade-charm",
        "config-changed",
        "update-status",
    ]
    .contains(&name)
    {
        backups::schedule(&ctx);
    }
    let departing_self = env.departing_unit.is_some()
        && env.departing_unit.as_deref() == Some(env.unit_name.as_str());
    match name {
        // etcd starts from config-changed, which Juju runs after the
        // relation-created hooks: by then a certificates relation in the
        // bundle is visible, and etcd starts on TLS, not plain HTTP.
        "install" => install_etcd(&ctx).map(drop),
        "data-storage-attached" => match storage::attached(&ctx)? {
            Some(why) => Ok(tools.status_set(Status::Blocked, &why)?),
            // At deploy the volume comes before install: etcd starts later,
            // from config-changed, already on it.
            None if Installed::load(paths).is_none() => Ok(()),
            None => cluster::converge(&ctx, None),
        },
        "data-storage-detaching" => {
            storage::detaching(&ctx)?;
            cluster::converge(&ctx, None)
        }
        "stop" => {
            // A unit on its way out runs no more backups.
            backups::unschedule(&ctx);
            leave::stop(&ctx)
        }
        "remove" => install::uninstall(paths).map_err(|e| Error::Hook(e.to_string())),
        n if n.ends_with("-relation-departed") && departing_self => leave::leave(&ctx),
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
            || n.starts_with(&format!("{DB}-relation-"))
            || n.starts_with(&format!("{}-relation-", certificates::ENDPOINT))
            || [proxy::ENDPOINT, prometheus::ENDPOINT, grafana::ENDPOINT]
                .iter()
                .any(|e| n.starts_with(&format!("{e}-relation-"))) =>
        {
            cluster::converge(&ctx, None)
        }
        _ => {
            tools.log(LogLevel::Debug, &format!("nothing to do in {name}"))?;
            Ok(())
        }
    }
}

/// The charm's own binary, for jobs that run it outside hooks.
pub(crate) fn dispatch_path() -> std::path::PathBuf {
    std::env::var_os("JUJU_CHARM_DIR")
        .map(|d| std::path::PathBuf::from(d).join("dispatch"))
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| "dispatch".into())
}

/// The nrpe-external-master files follow the relation and the nagios_*
/// options, whatever state etcd is in: monitoring matters most when it
/// is down.
fn nagios_checks(ctx: &HookContext, hook: &str) {
    let config = ctx.tools.config().unwrap_or_default();
    let text = |k: &str, d: &str| {
        config
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or(d)
            .to_string()
    };
    let dispatch = dispatch_path();
    // In its -broken hook the relation still lists; it is gone all the same.
    let broken = hook == format!("{}-relation-broken", nrpe::ENDPOINT);
    let errors = nrpe::publish(
        ctx.tools,
        ctx.paths,
        (&ctx.env.unit_name, &dispatch),
        (
            &text("nagios_context", "juju"),
            &text("nagios_servicegroups", ""),
        ),
        broken,
    );
    for e in errors {
        ctx.log(&e);
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
    // An empty placeholder resource is already "none" (resource_get).
    let resource = tools.resource_get(install::RESOURCE)?;
    // "auto": the channel the cluster's leader runs, else the default.
    let shared = tools.leader_get()?.get(cluster::SNAP_CHANNEL).cloned();
    let channel = match (&options.channel, &shared) {
        (None, Some(c)) => c.as_str(),
        _ => options.install_channel(),
    };
    if let Err(e) = install::install_core(tools.resource_get("core")?.as_deref()) {
        let msg = e.to_string();
        tools.status_set(Status::Blocked, &msg)?;
        return Err(Error::Hook(msg));
    }
    match install::install(ctx.paths, resource.as_deref(), channel) {
        Ok(i) => {
            if i.source == "snap" && storage::data_dir(ctx.paths).is_some() {
                storage::connect_snap(ctx);
            }
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

/// The status after an action changed etcd (a restore, or its undo):
/// `blocked` with the action's sentence while something is `unresolved`,
/// else from this unit's member's health. Best effort: the action's own
/// outcome is what the operator is waiting for.
pub fn refresh_status(tools: &dyn HookTools, paths: &Paths, unresolved: Option<&str>) {
    if let Some(msg) = unresolved {
        let _ = tools.status_set(Status::Blocked, msg);
        return;
    }
    let Ok(conf) = EtcdConfig::load(paths.conf()) else {
        return;
    };
    let (Ok(endpoint), Ok(rt)) = (
        conf.client_endpoint(paths.conf()),
        crate::actions::runtime(),
    ) else {
        return;
    };
    let name = conf.name.clone().unwrap_or_default();
    let health = rt.block_on(crate::etcd::health::check(&endpoint, &name));
    let _ = report_health(tools, paths, &health, None);
}

/// Sets the workload status from this unit's member's health: active only
/// when it is healthy; otherwise what is wrong, and for a member that does
/// not answer, what systemd and its log say. `pending` is what the leader
/// still has to do; a recent recovery note is added too.
fn report_health(
    tools: &dyn HookTools,
    paths: &Paths,
    health: &Health,
    pending: Option<&str>,
) -> Result<(), Error> {
    let (status, mut msg) = match health {
        Health::Healthy { status, members } => {
            let n = members.len();
            let plural = if n == 1 { "" } else { "s" };
            (
                Status::Active,
                format!(
                    "Healthy with {n} known peer{plural} (etcd {})",
                    status.version
                ),
            )
        }
        Health::Learner { status } => (
            Status::Waiting,
            format!(
                "etcd {} runs as a learner; waiting for the leader to promote it",
                status.version
            ),
        ),
        Health::NotThisMember { .. } | Health::Down { .. } => (
            Status::Blocked,
            format!(
                "{}; {}",
                health.problem().unwrap_or_default(),
                service::failure_detail()
            ),
        ),
        _ => (Status::Blocked, health.problem().unwrap_or_default()),
    };
    if let Some(p) = pending {
        msg.push_str("; ");
        msg.push_str(p);
    }
    if let Some(note) = journal::recent_note(paths) {
        msg.push_str("; ");
        msg.push_str(&note);
    }
    // Scheduled backups on this unit: how the last one went. One that is
    // failing needs the operator, whatever etcd's health.
    let mut status = status;
    if let Some((failing, note)) = crate::schedule::status_note(paths) {
        msg.push_str("; ");
        msg.push_str(&note);
        if failing && status == Status::Active {
            status = Status::Blocked;
        }
    }
    tools.status_set(status, &msg)?;
    Ok(())
}
