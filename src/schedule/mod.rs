//! Scheduled backups. The leader alone holds a systemd timer
//! (`etcd-charm-backup.timer`, `OnCalendar=` the `backup_schedule` option)
//! that runs the charm's own binary (`dispatch scheduled-backup`) outside
//! any hook; every other unit removes its own, so leadership moving leaves
//! exactly one. The hooks keep a 0600 plan file with what the run needs
//! (it has no hook tools); the run leaves its outcome in a file the next
//! hook puts in the status.

pub mod run;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fsutil;
use crate::paths::Paths;
use crate::service::systemctl_unit;
use crate::timefmt::UtcTime;

pub const TIMER: &str = "etcd-charm-backup.timer";
pub const UNIT: &str = "etcd-charm-backup.service";
const PLAN: &str = "backup-plan.json";
const LAST: &str = "backup-last.json";
const RUNNING: &str = "backup-running.json";
/// Why the schedule was refused, for the status until it is fixed.
const REFUSED: &str = "backup-schedule-refused.txt";

/// What the scheduled run does; written by the hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub schedule: String,
    pub retention_count: u64,
    pub retention_days: u64,
    pub app: String,
    pub unit: String,
    /// Where archives go when no store is related.
    pub target: PathBuf,
}

/// The last scheduled run's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub finished_unix: u64,
    pub ok: bool,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub error: String,
    /// When the runs started failing (kept across failed runs).
    #[serde(default)]
    pub failing_since_unix: u64,
}

/// A run in progress: its pid and start, so the next run and the status
/// can tell one that was killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Running {
    pid: u32,
    /// The process's start time (clock ticks since boot): a pid reused
    /// after a reboot or a kill is not taken for this run.
    #[serde(default)]
    pid_start: u64,
    started_unix: u64,
}

impl Running {
    fn mine(started_unix: u64) -> Running {
        let pid = std::process::id();
        Running {
            pid,
            pid_start: proc_start(pid).unwrap_or(0),
            started_unix,
        }
    }

    fn alive(&self) -> bool {
        proc_start(self.pid).is_some_and(|t| t == self.pid_start)
    }
}

/// Field 22 of /proc/<pid>/stat, after the command name in parentheses.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write<T: Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fsutil::create_private_dir(dir)?;
    }
    let text = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    fsutil::replace_file(path, &text)
}

impl Plan {
    pub fn load(paths: &Paths) -> Option<Plan> {
        read(&paths.state_dir().join(PLAN))
    }
}

impl LastRun {
    pub fn load(paths: &Paths) -> Option<LastRun> {
        read(&paths.state_dir().join(LAST))
    }

    fn save(&self, paths: &Paths) -> std::io::Result<()> {
        write(&paths.state_dir().join(LAST), self)
    }
}

/// The schedule options, as the operator set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub schedule: String,
    pub retention_count: u64,
    pub retention_days: u64,
}

impl Options {
    pub fn from_config(config: &Map<String, Value>) -> Options {
        let int = |k: &str| config.get(k).and_then(Value::as_u64).unwrap_or(0);
        Options {
            schedule: config
                .get("backup_schedule")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string(),
            retention_count: int("backup_retention_count"),
            retention_days: int("backup_retention_days"),
        }
    }
}

/// Asks systemd whether it understands `spec`; when `systemd-analyze` is
/// not there to ask, the timer's own load will say.
fn check_calendar(spec: &str) -> Result<(), String> {
    if spec.contains(['\n', '\r', '%']) || spec.starts_with('-') {
        return Err(format!(
            "backup_schedule {spec:?} is not a systemd calendar expression; use for example \"daily\", \"hourly\" or \"*-*-* 02:30:00\""
        ));
    }
    match std::process::Command::new("systemd-analyze")
        .args(["calendar", "--", spec])
        .output()
    {
        Err(_) => Ok(()),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "backup_schedule {spec:?} is not a systemd calendar expression ({}); use for example \"daily\", \"hourly\" or \"*-*-* 02:30:00\"",
            crate::error::command_failure(&out)
        )),
    }
}

fn unit_dir(paths: &Paths) -> PathBuf {
    paths.under_root("etc/systemd/system")
}

/// A quoted word for a unit file: systemd's escapes, `%` doubled so no
/// specifier is expanded, and in ExecStart `$` doubled so no variable is
/// (Environment= does not expand `$`).
fn quote(p: &Path, exec: bool) -> String {
    let mut text = p
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    if exec {
        text = text.replace('$', "$$");
    }
    format!("\"{text}\"")
}

fn service_text(paths: &Paths, dispatch: &Path) -> String {
    format!(
        "# Written by the etcd charm: one scheduled backup (dispatch scheduled-backup).\n\
         [Unit]\nDescription=etcd charm scheduled backup\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\n\
         Environment={}\nEnvironment={}\n\
         ExecStart={} scheduled-backup\nNice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n",
        quote(Path::new(&format!("ETCD_CHARM_ROOT={}", paths.root().display())), false),
        quote(Path::new(&format!("ETCD_CHARM_CONF={}", paths.conf().display())), false),
        quote(dispatch, true),
    )
}

fn timer_text(schedule: &str) -> String {
    format!(
        "# Written by the etcd charm: the backup_schedule option.\n\
         [Unit]\nDescription=etcd charm backups ({schedule})\n\n\
         [Timer]\nOnCalendar={schedule}\nAccuracySec=1s\n\n\
         [Install]\nWantedBy=timers.target\n"
    )
}

/// A unit file, 0644 as systemd's are; true when it changed.
fn put(path: &Path, text: &str) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let changed = crate::etcd::render::write_if_changed(path, text).map_err(fail)?;
    if changed {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    }
    Ok(changed)
}

/// Brings this unit's timer in line: installed and current on the leader
/// when a schedule is set, gone everywhere else. Returns what went wrong;
/// a refused schedule also stays in the status until it is fixed.
pub fn converge(
    paths: &Paths,
    options: &Options,
    leader: bool,
    unit: &str,
    dispatch: &Path,
) -> Result<(), String> {
    let refused = paths.state_dir().join(REFUSED);
    let outcome = install(paths, options, leader, unit, dispatch);
    match &outcome {
        Err(e) if leader => {
            let _ = fsutil::create_private_dir(&paths.state_dir())
                .and_then(|()| fsutil::replace_file(&refused, e.as_bytes()));
        }
        _ => {
            let _ = std::fs::remove_file(&refused);
        }
    }
    outcome
}

fn install(
    paths: &Paths,
    options: &Options,
    leader: bool,
    unit: &str,
    dispatch: &Path,
) -> Result<(), String> {
    let state = paths.state_dir();
    if !leader || options.schedule.is_empty() {
        return remove(paths);
    }
    if let Err(e) = check_calendar(&options.schedule) {
        // No timer runs on a schedule the operator did not mean.
        remove(paths)?;
        return Err(e);
    }
    let plan = Plan {
        schedule: options.schedule.clone(),
        retention_count: options.retention_count,
        retention_days: options.retention_days,
        app: unit.split('/').next().unwrap_or("etcd").to_string(),
        unit: unit.to_string(),
        target: PathBuf::from(crate::actions::snapshot::DEFAULT_TARGET),
    };
    if Plan::load(paths).as_ref() != Some(&plan) {
        write(&state.join(PLAN), &plan)
            .map_err(|e| format!("cannot record the backup plan: {e}"))?;
    }
    let dir = unit_dir(paths);
    let changed = put(&dir.join(UNIT), &service_text(paths, dispatch))?
        | put(&dir.join(TIMER), &timer_text(&options.schedule))?;
    // Asked every time: a step that failed once must not stay failed
    // behind unchanged files.
    let running = systemctl_unit(&["is-enabled", "--quiet", TIMER]).is_ok()
        && systemctl_unit(&["is-active", "--quiet", TIMER]).is_ok();
    if changed || !running {
        systemctl_unit(&["daemon-reload"])?;
        systemctl_unit(&["enable", "--now", TIMER])?;
        // A timer already running keeps its old calendar until restarted.
        systemctl_unit(&["restart", TIMER])?;
    }
    Ok(())
}

/// No timer on this unit (not the leader, or no schedule).
fn remove(paths: &Paths) -> Result<(), String> {
    // A unit that runs backups again later starts with a clean slate.
    for f in [PLAN, LAST, RUNNING] {
        let _ = std::fs::remove_file(paths.state_dir().join(f));
    }
    let dir = unit_dir(paths);
    let (timer, service) = (dir.join(TIMER), dir.join(UNIT));
    if !timer.exists() && !service.exists() {
        return Ok(());
    }
    systemctl_unit(&["disable", "--now", TIMER])?;
    for f in [timer, service] {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", f.display()))
            }
            _ => {}
        }
    }
    systemctl_unit(&["daemon-reload"])
}

/// "2h ago"-style ages.
fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// The status note of this unit's scheduled backups: (failing, text), or
/// None when it runs none.
pub fn status_note(paths: &Paths) -> Option<(bool, String)> {
    if let Ok(why) = std::fs::read_to_string(paths.state_dir().join(REFUSED)) {
        return Some((true, why));
    }
    let plan = Plan::load(paths)?;
    let now = UtcTime::now().unix;
    if let Some(r) = read::<Running>(&paths.state_dir().join(RUNNING)) {
        if !r.alive() {
            return Some((
                true,
                format!(
                    "the scheduled backup started {} did not finish (killed?); the next run at {} tries again",
                    ago(now.saturating_sub(r.started_unix)),
                    plan.schedule
                ),
            ));
        }
    }
    let Some(last) = LastRun::load(paths) else {
        return Some((false, format!("backups {}, none yet", plan.schedule)));
    };
    if last.ok {
        return Some((
            false,
            format!(
                "last backup {}, {}",
                ago(now.saturating_sub(last.finished_unix)),
                fsutil::human_size(last.bytes)
            ),
        ));
    }
    Some((
        true,
        format!(
            "scheduled backup failing since {}: {}",
            UtcTime::from_unix(last.failing_since_unix).rfc3339(),
            last.error
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_run_this_charm_for_this_unit() {
        let paths = Paths::new("/tmp/u 1", None);
        let s = service_text(
            &paths,
            Path::new("/var/lib/juju/agents/unit-etcd-0/charm/dispatch"),
        );
        assert!(
            s.contains("Environment=\"ETCD_CHARM_ROOT=/tmp/u 1\""),
            "{s}"
        );
        assert!(s.contains(
            "ExecStart=\"/var/lib/juju/agents/unit-etcd-0/charm/dispatch\" scheduled-backup"
        ));
        let t = timer_text("*-*-* 02:30:00");
        assert!(
            t.contains("OnCalendar=*-*-* 02:30:00\nAccuracySec=1s"),
            "{t}"
        );
        assert_eq!(ago(7300), "2h ago");
        let odd = service_text(
            &Paths::new("/tmp/50%", None),
            Path::new("/srv/$HOME%i/dispatch"),
        );
        assert!(
            odd.contains("Environment=\"ETCD_CHARM_ROOT=/tmp/50%%\""),
            "{odd}"
        );
        assert!(
            odd.contains("ExecStart=\"/srv/$$HOME%%i/dispatch\" scheduled-backup"),
            "{odd}"
        );
        assert!(check_calendar("daily\n[Service]").is_err());
    }
}
