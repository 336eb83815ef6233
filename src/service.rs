//! The etcd service, through systemctl.

use std::process::Command;

pub const SERVICE: &str = "snap.etcd.etcd";

#[derive(Debug, thiserror::Error)]
#[error("systemctl {verb} {SERVICE} failed: {detail}")]
pub struct ServiceError {
    pub verb: &'static str,
    pub detail: String,
}

fn systemctl(verb: &'static str) -> Result<(), ServiceError> {
    let mut cmd = Command::new("systemctl");
    if verb == "daemon-reload" {
        cmd.arg(verb);
    } else {
        cmd.args([verb, SERVICE]);
    }
    let out = cmd.output().map_err(|e| ServiceError {
        verb,
        detail: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ServiceError {
        verb,
        detail: crate::error::command_failure(&out),
    })
}

pub fn start() -> Result<(), ServiceError> {
    systemctl("start")
}

pub fn stop() -> Result<(), ServiceError> {
    systemctl("stop")
}

pub fn restart() -> Result<(), ServiceError> {
    systemctl("restart")
}

pub fn enable() -> Result<(), ServiceError> {
    systemctl("enable")
}

pub fn disable() -> Result<(), ServiceError> {
    systemctl("disable")
}

pub fn daemon_reload() -> Result<(), ServiceError> {
    systemctl("daemon-reload")
}

pub fn is_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", SERVICE])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
