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

/// `systemctl <args>` for another unit of the charm's (the backup timer);
/// the first line of what went wrong otherwise.
pub fn systemctl_unit(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            crate::error::command_failure(&out)
        ))
    }
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

/// What systemd says of the service: "active", "inactive", "failed",
/// "activating", or "unknown" when systemctl cannot be asked.
pub fn state() -> String {
    Command::new("systemctl")
        .args(["is-active", SERVICE])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `systemctl <verb> --quiet` of the service, as a yes or no.
fn asks(verb: &str) -> bool {
    Command::new("systemctl")
        .args([verb, "--quiet", SERVICE])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the service starts at boot.
pub fn is_enabled() -> bool {
    asks("is-enabled")
}

/// The service's last log lines, from the journal, each made short and
/// readable: etcd logs JSON, of which the message and error are what an
/// operator needs. Empty when the journal cannot be read.
pub fn last_log_lines(n: usize) -> Vec<String> {
    let out = Command::new("journalctl")
        .args([
            "-u",
            SERVICE,
            "-n",
            &n.to_string(),
            "--no-pager",
            "-o",
            "cat",
        ])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-- "))
        .map(readable_log_line)
        .collect()
}

fn readable_log_line(line: &str) -> String {
    const MAX: usize = 200;
    let text = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.get("msg").is_some() => {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            let mut t = field("msg").to_string();
            if !field("error").is_empty() {
                t = format!("{t}: {}", field("error"));
            }
            t
        }
        _ => line.to_string(),
    };
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Why the service is not serving, as far as systemd and its log tell.
pub fn failure_detail() -> String {
    let mut detail = format!("systemd: {}", state());
    let lines = last_log_lines(3);
    if let Some(last) = lines.last() {
        detail.push_str(&format!("; its log ends: {last}"));
    }
    detail
}

pub fn is_active() -> bool {
    asks("is-active")
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_json_log_lines_become_message_and_error() {
        let line = r#"{"level":"fatal","ts":"2026","caller":"etcdmain/etcd.go:204","msg":"discovery failed","error":"listen tcp 127.0.0.3:2379: bind: address already in use"}"#;
        assert_eq!(
            super::readable_log_line(line),
            "discovery failed: listen tcp 127.0.0.3:2379: bind: address already in use"
        );
        assert_eq!(super::readable_log_line("plain text"), "plain text");
        assert_eq!(
            super::readable_log_line(&"x".repeat(300)).chars().count(),
            201
        );
    }
}
