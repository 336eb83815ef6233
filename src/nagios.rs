//! `dispatch nagios-check [--write] health|alarms`: the checks behind the
//! `nrpe-external-master` relation, run by the charm's own binary outside
//! any hook. A root cron job runs them every minute (the client key is
//! root's alone) and, with `--write`, leaves each result in a world-
//! readable file that the NRPE plugin, running as `nagios`, only reports.

use std::path::PathBuf;

use crate::etcd::health::{self, Health};
use crate::etcd::{EtcdConfig, LocalMember};
use crate::paths::Paths;

pub const CHECKS: [&str; 2] = ["health", "alarms"];

/// Nagios plugin exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Critical = 2,
    Unknown = 3,
}

/// Where a check's last result is kept for the NRPE plugin.
pub fn result_file(paths: &Paths, check: &str) -> PathBuf {
    paths
        .root()
        .join(format!("var/lib/nagios/etcd-charm-{check}.txt"))
}

/// A directory `nagios` can read, made so if it is missing (the charm
/// runs with umask 077).
pub fn shared_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Runs one check against this unit's member.
pub fn check(paths: &Paths, which: &str) -> (Code, String) {
    let conf_path = paths.conf();
    let conf = match EtcdConfig::load(conf_path) {
        Ok(c) => c,
        Err(e) => return (Code::Unknown, format!("UNKNOWN - {e}")),
    };
    let endpoint = match conf.client_endpoint(conf_path) {
        Ok(e) => e,
        Err(e) => return (Code::Unknown, format!("UNKNOWN - {e}")),
    };
    let Ok(rt) = crate::actions::runtime() else {
        return (
            Code::Unknown,
            "UNKNOWN - cannot start the check's runtime".into(),
        );
    };
    match which {
        "health" => {
            let name = conf.name.clone().unwrap_or_default();
            match rt.block_on(health::check(&endpoint, &name)) {
                Health::Healthy { status, members } => (
                    Code::Ok,
                    format!(
                        "OK - {name} healthy, {} voting members, etcd {}",
                        members.iter().filter(|m| !m.is_learner).count(),
                        status.version
                    ),
                ),
                Health::Learner { .. } => {
                    (Code::Ok, format!("OK - {name} is a learner catching up"))
                }
                other => (
                    Code::Critical,
                    format!("CRITICAL - {}", other.problem().unwrap_or_default()),
                ),
            }
        }
        "alarms" => {
            let alarms =
                rt.block_on(async { LocalMember::connect(&endpoint).await?.alarms().await });
            match alarms {
                Ok(a) if a.is_empty() => (Code::Ok, "OK - no active alarms".into()),
                Ok(a) => (
                    Code::Critical,
                    format!(
                        "CRITICAL - {}",
                        a.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Err(e) => (Code::Critical, format!("CRITICAL - {e}")),
            }
        }
        other => (Code::Unknown, format!("UNKNOWN - no check named {other:?}")),
    }
}

/// The command line: runs the named checks, prints each result, and with
/// `--write` keeps them for the plugin. Exits with the worst code.
pub fn main(args: &[String]) -> i32 {
    let paths = Paths::from_env();
    let write = args.iter().any(|a| a == "--write");
    let checks: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--write")
        .collect();
    if checks.is_empty() {
        println!("UNKNOWN - usage: dispatch nagios-check [--write] health|alarms...");
        return Code::Unknown as i32;
    }
    let mut worst = Code::Ok as i32;
    for which in checks {
        let (code, line) = check(&paths, which);
        println!("{line}");
        worst = worst.max(code as i32);
        if write {
            let file = result_file(&paths, which);
            let text = format!("{}\n{line}\n", code as i32);
            let written = file
                .parent()
                .map(shared_dir)
                .unwrap_or(Ok(()))
                .and_then(|_| crate::fsutil::replace_file(&file, text.as_bytes()))
                .and_then(|_| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                });
            if let Err(e) = written {
                eprintln!("cannot write {}: {e}", file.display());
                worst = worst.max(Code::Unknown as i32);
            }
        }
    }
    worst
}
