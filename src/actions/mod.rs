//! Actions: each a module with the steps the design lays down, talking to
//! Juju only through `HookTools` and to the host only through `Paths`.

pub mod alarm;
pub mod compact;
pub mod credentials;
pub mod defrag;
pub mod health;
pub mod journal;
pub mod list_backups;
pub mod params;
pub mod restore;
pub mod snap_upgrade;
pub mod snapshot;

use crate::error::Error;
use crate::etcd::config::ClientEndpoint;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::juju::{HookTools, JujuEnv, Results};
use crate::paths::Paths;

pub struct ActionContext<'a> {
    pub tools: &'a dyn HookTools,
    pub paths: Paths,
    pub env: JujuEnv,
}

impl ActionContext<'_> {
    /// Progress for `juju run` to stream; best effort, never fails an action.
    pub fn progress(&self, message: &str) {
        let _ = self.tools.action_log(message);
    }
}

/// Before an action runs: an earlier restore that was killed midway is
/// finished or undone first, and the operator is told which.
pub fn resolve_interrupted(ctx: &ActionContext) -> Result<(), Error> {
    if let Some(note) = journal::recover_and_note(&ctx.paths)? {
        ctx.progress(&note);
        let _ = ctx.tools.log(crate::juju::LogLevel::Warning, &note);
    }
    Ok(())
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// The local member, as its config file names it, connected.
pub fn local_member(
    ctx: &ActionContext,
) -> Result<(tokio::runtime::Runtime, ClientEndpoint, LocalMember), Error> {
    let conf_path = ctx.paths.conf();
    let endpoint = EtcdConfig::load(conf_path)?.client_endpoint(conf_path)?;
    let rt = runtime()?;
    let local = rt.block_on(LocalMember::connect(&endpoint))?;
    Ok((rt, endpoint, local))
}

#[derive(Debug, thiserror::Error)]
#[error("this unit's etcd member ({0}) is a learner still catching up with the leader, and answers only status; run the action on a unit whose member votes")]
pub struct LearnerError(String);

impl From<LearnerError> for Error {
    fn from(e: LearnerError) -> Self {
        Error::Action(Box::new(e))
    }
}

/// The local member, refused while it is a learner: etcd serves learners
/// only status and serializable reads, so the cluster-wide actions would
/// fail with etcd's own terse refusal.
pub fn voting_member(
    ctx: &ActionContext,
) -> Result<(tokio::runtime::Runtime, ClientEndpoint, LocalMember), Error> {
    let (rt, endpoint, local) = local_member(ctx)?;
    if rt.block_on(local.status())?.is_learner {
        return Err(LearnerError(endpoint.url.clone()).into());
    }
    Ok((rt, endpoint, local))
}

/// Runs one action and returns its results; the caller reports them.
pub fn run(name: &str, ctx: &ActionContext) -> Result<Results, Error> {
    match name {
        "snapshot" => snapshot::run(ctx),
        "restore" => restore::run(ctx),
        "package-client-credentials" => credentials::run(ctx),
        "health" => health::run(ctx),
        "compact" => compact::run(ctx),
        "defrag" => defrag::run(ctx),
        "alarm-list" => alarm::list(ctx),
        "alarm-disarm" => alarm::disarm(ctx),
        "snap-upgrade" => snap_upgrade::run(ctx),
        "list-backups" => list_backups::run(ctx),
        other => Err(Error::UnknownAction(other.to_string())),
    }
}
