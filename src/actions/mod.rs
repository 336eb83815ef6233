//! Actions: each a module with the steps the design lays down, talking to
//! Juju only through `HookTools` and to the host only through `Paths`.

pub mod credentials;
pub mod journal;
pub mod params;
pub mod restore;
pub mod snapshot;

use crate::error::Error;
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

/// Runs one action and returns its results; the caller reports them.
pub fn run(name: &str, ctx: &ActionContext) -> Result<Results, Error> {
    match name {
        "snapshot" => snapshot::run(ctx),
        "restore" => restore::run(ctx),
        "package-client-credentials" => credentials::run(ctx),
        other => Err(Error::UnknownAction(other.to_string())),
    }
}
