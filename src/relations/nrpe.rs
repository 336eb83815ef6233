//! The `nrpe-external-master` endpoint (container scope: the nrpe
//! subordinate on this machine), as layer-etcd and charmhelpers' nrpe
//! support provide it: NRPE command definitions in
//! `/etc/nagios/nrpe.d/check_<name>.cfg`, and on the relation `monitors`
//! (YAML naming the commands) and `primary: "False"`.
//!
//! The checks themselves are the charm binary (`dispatch nagios-check`),
//! run every minute by a root cron job that keeps each result in
//! `/var/lib/nagios/etcd-charm-<check>.txt`; the NRPE command, running as
//! `nagios`, reports that result, or CRITICAL once it is over five minutes
//! old. Where the nrpe subordinate made `/var/lib/nagios/export`, a Nagios
//! service definition per check goes there too, for Nagios to collect
//! (`service__<host>_check_etcd-<check>.cfg`, the host being the
//! relation's `nagios_hostname` or `<nagios_context>-<unit>`). The
//! relation gone, every file is removed.

use std::path::{Path, PathBuf};

use crate::nagios::{self, CHECKS};
use crate::paths::Paths;

pub const ENDPOINT: &str = "nrpe-external-master";

/// Files the charm writes for NRPE; removed with the relation.
fn files(paths: &Paths) -> Vec<PathBuf> {
    let mut out = vec![cron_file(paths), plugin(paths)];
    out.extend(CHECKS.iter().map(|c| command_file(paths, c)));
    out.extend(CHECKS.iter().map(|c| nagios::result_file(paths, c)));
    out
}

fn cron_file(paths: &Paths) -> PathBuf {
    paths.root().join("etc/cron.d/etcd-charm-nagios")
}

fn plugin(paths: &Paths) -> PathBuf {
    paths
        .root()
        .join("usr/local/lib/nagios/plugins/check_etcd_charm")
}

fn command_file(paths: &Paths, check: &str) -> PathBuf {
    paths
        .root()
        .join(format!("etc/nagios/nrpe.d/check_etcd-{check}.cfg"))
}

fn export_dir(paths: &Paths) -> PathBuf {
    paths.root().join("var/lib/nagios/export")
}

fn export_file(paths: &Paths, host: &str, check: &str) -> PathBuf {
    export_dir(paths).join(format!("service__{host}_check_etcd-{check}.cfg"))
}

/// This charm's service definitions in the export dir, whatever host
/// they were written for.
fn exported(paths: &Paths) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(export_dir(paths)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("service__") && n.contains("_check_etcd-"))
        })
        .collect()
}

const DESCRIPTIONS: [(&str, &str); 2] = [
    ("health", "etcd member answers with a leader and quorum"),
    ("alarms", "etcd has no active alarm"),
];

fn export_text(host: &str, check: &str, servicegroups: &str) -> String {
    let what = DESCRIPTIONS
        .iter()
        .find(|(c, _)| *c == check)
        .map(|(_, d)| *d)
        .unwrap_or(check);
    format!(
        "# Written by the etcd charm for Nagios to collect (nrpe-external-master).
         define service {{
             use                             active-service
             host_name                       {host}
             service_description             {host}[etcd-{check}] {what}
             check_command                   check_nrpe!check_etcd-{check}
             servicegroups                   {servicegroups}
         }}
"
    )
}

/// The Nagios host name: the subordinate's `nagios_hostname` when it gives
/// one, else `<nagios_context>-<unit>` (`juju-etcd-0`).
fn nagios_host(tools: &dyn crate::juju::HookTools, rid: &str, context: &str, unit: &str) -> String {
    let given = tools
        .relation_list(rid)
        .unwrap_or_default()
        .iter()
        .find_map(|u| {
            tools
                .relation_get(rid, u)
                .ok()?
                .get("nagios_hostname")
                .cloned()
        })
        .filter(|h| !h.is_empty() && !h.contains('/'));
    given.unwrap_or_else(|| format!("{context}-{}", unit.replace('/', "-")))
}

/// Single-quoted for sh.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// The plugin NRPE runs: the last result, or CRITICAL when it is stale.
fn plugin_text(paths: &Paths) -> String {
    let dir = nagios::result_file(paths, "CHECK");
    let pattern = sh_quote(&dir).replace("CHECK", "'\"$1\"'");
    format!(
        "#!/bin/sh\n# Written by the etcd charm: reports the last result of its root cron job\n# (dispatch nagios-check), CRITICAL once that is over five minutes old.\nf={pattern}\n\
         [ -r \"$f\" ] || {{ echo \"UNKNOWN - no etcd $1 result yet ($f)\"; exit 3; }}\n\
         if [ -n \"$(find \"$f\" -mmin +5)\" ]; then echo \"CRITICAL - the etcd $1 check has not run for over 5 minutes ($f)\"; exit 2; fi\n\
         {{ read -r code; read -r line; }} < \"$f\"\necho \"$line\"\nexit \"$code\"\n"
    )
}

fn cron_text(paths: &Paths, dispatch: &Path) -> String {
    format!(
        "# Written by the etcd charm: the checks behind nrpe-external-master.\n\
         * * * * * root ETCD_CHARM_ROOT={} ETCD_CHARM_CONF={} {} nagios-check --write {} >/dev/null 2>&1\n",
        sh_quote(paths.root()),
        sh_quote(paths.conf()),
        sh_quote(dispatch),
        CHECKS.join(" ")
    )
}

fn command_text(paths: &Paths, check: &str, servicegroups: &str) -> String {
    format!(
        "# check etcd-{check}\n# servicegroups: {servicegroups}\ncommand[check_etcd-{check}]={} {check}\n",
        plugin(paths).display()
    )
}

/// The relation's `monitors`, as charmhelpers writes it.
pub fn monitors() -> String {
    let mut y = String::from("monitors:\n  remote:\n    nrpe:\n");
    for c in CHECKS {
        y.push_str(&format!(
            "      etcd-{c}:\n        command: check_etcd-{c}\n"
        ));
    }
    y
}

fn write(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        nagios::shared_dir(dir)?;
    }
    crate::fsutil::replace_file(path, text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Writes (related) or removes (not related) the NRPE files, and publishes
/// the monitors. Returns what went wrong, for the log.
pub fn publish(
    tools: &dyn crate::juju::HookTools,
    paths: &Paths,
    (unit, dispatch): (&str, &Path),
    (context, servicegroups): (&str, &str),
    gone: bool,
) -> Vec<String> {
    let ids = tools.relation_ids(ENDPOINT).unwrap_or_default();
    if ids.is_empty() || gone {
        for f in files(paths).into_iter().chain(exported(paths)) {
            if f.exists() {
                let _ = std::fs::remove_file(&f);
            }
        }
        return Vec::new();
    }
    let groups = if servicegroups.trim().is_empty() {
        context
    } else {
        servicegroups
    };
    let mut errors = Vec::new();
    let mut put = |path: PathBuf, text: String, mode: u32| {
        if let Err(e) = write(&path, &text, mode) {
            errors.push(format!("cannot write {}: {e}", path.display()));
        }
    };
    put(plugin(paths), plugin_text(paths), 0o755);
    for c in CHECKS {
        put(
            command_file(paths, c),
            command_text(paths, c, groups),
            0o644,
        );
    }
    put(cron_file(paths), cron_text(paths, dispatch), 0o644);
    if export_dir(paths).is_dir() {
        let host = nagios_host(tools, &ids[0], context, unit);
        let keep: Vec<PathBuf> = CHECKS
            .iter()
            .map(|c| export_file(paths, &host, c))
            .collect();
        for stale in exported(paths).into_iter().filter(|f| !keep.contains(f)) {
            let _ = std::fs::remove_file(stale);
        }
        for c in CHECKS {
            put(
                export_file(paths, &host, c),
                export_text(&host, c, groups),
                0o644,
            );
        }
    }
    let data = [("monitors", monitors()), ("primary", "False".to_string())];
    for rid in ids {
        if let Err(e) = tools.relation_set(&rid, &data) {
            errors.push(format!("cannot update the {ENDPOINT} relation {rid}: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_name_each_command() {
        let v: serde_yaml::Value = serde_yaml::from_str(&monitors()).expect("yaml");
        let nrpe = &v["monitors"]["remote"]["nrpe"];
        assert_eq!(
            nrpe["etcd-health"]["command"].as_str(),
            Some("check_etcd-health")
        );
        assert_eq!(
            nrpe["etcd-alarms"]["command"].as_str(),
            Some("check_etcd-alarms")
        );
    }

    #[test]
    fn the_cron_line_names_this_unit_s_paths() {
        let p = Paths::new("/tmp/u 1", None);
        let line = cron_text(
            &p,
            Path::new("/var/lib/juju/agents/unit-etcd-0/charm/dispatch"),
        );
        assert!(
            line.contains("* * * * * root ETCD_CHARM_ROOT='/tmp/u 1' "),
            "{line}"
        );
        assert!(
            line.contains("nagios-check --write health alarms"),
            "{line}"
        );
        let plugin = plugin_text(&p);
        assert!(
            plugin.contains("f='/tmp/u 1/var/lib/nagios/etcd-charm-'\"$1\"'.txt'"),
            "{plugin}"
        );
    }
}
