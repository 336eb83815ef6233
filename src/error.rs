//! The one error type that reaches the edge. Its `Display` is the sentence
//! the operator reads (`action-fail`, `juju-log`): what, why, what to do.

use crate::etcd::client::EtcdError;
use crate::etcd::config::ConfigError;
use crate::juju::JujuError;
use crate::lock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Juju(#[from] JujuError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// An action's own error kind, kept beside the action (each action
    /// module converts its kind into this one, so this file imports none).
    #[error(transparent)]
    Action(Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("invalid action parameter {name}: {reason}")]
    Param { name: String, reason: String },
    #[error("this charm has no action named {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Hook(String),
    #[error("cannot start the charm's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why a command failed, in one line: its first non-empty stderr line, or
/// its exit status when it said nothing.
pub fn command_failure(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => line.to_string(),
        None => format!("exit status {}", out.status.code().unwrap_or(-1)),
    }
}
