//! `dispatch scheduled-backup`, run by the backup timer outside any hook:
//! under the action lock (never beside an action), the snapshot action's
//! own code streams an archive to the related stores (to the default
//! target when none is related), then retention prunes by the plan. The
//! outcome is left for the next hook's status; progress goes to stderr,
//! which systemd keeps in the journal.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{read, write, LastRun, Plan, Running, RUNNING};
use crate::actions::snapshot::{self, SnapshotParams};
use crate::actions::{journal, ActionContext};
use crate::archive::record;
use crate::juju::{HookTools, JujuEnv, JujuError, LogLevel, Results, Settings, Status};
use crate::lock::ActionLock;
use crate::paths::Paths;
use crate::store::retention::{self, Policy};
use crate::store::{Store, Stores, Timeouts};
use crate::timefmt::UtcTime;

/// Returns the process exit code: 0 when the backup was made (or there is
/// nothing to do on this unit), 1 when it failed.
pub fn main() -> i32 {
    let paths = Paths::from_env();
    let Some(plan) = Plan::load(&paths) else {
        eprintln!("no backup plan on this unit (not the leader, or backup_schedule is empty); nothing to do");
        return 0;
    };
    // One at a time, never beside an action: the action lock, waited for
    // a while (a hook or an action holds it briefly), then this run is
    // skipped and says so.
    let lock = match wait_for_lock(&paths) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("scheduled backup skipped: {e}");
            record(&paths, Err(format!("skipped: {e}")));
            return 1;
        }
    };
    let running = paths.state_dir().join(RUNNING);
    if let Some(r) = read::<Running>(&running) {
        eprintln!(
            "the scheduled backup started at {} did not finish (killed?); any upload it left is aborted now",
            UtcTime::from_unix(r.started_unix).rfc3339()
        );
    }
    let now = UtcTime::now().unix;
    if let Err(e) = write(&running, &Running::mine(now)) {
        eprintln!("cannot record the run in {}: {e}", running.display());
    }
    let outcome = backup(&paths, &plan, lock);
    let ok = record(&paths, outcome);
    let _ = std::fs::remove_file(&running);
    i32::from(!ok)
}

/// How long a scheduled run waits for an action or hook to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

fn wait_for_lock(paths: &Paths) -> Result<ActionLock, String> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match ActionLock::acquire(&paths.state_dir(), "scheduled backup") {
            Ok(l) => return Ok(l),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(5)),
        }
    }
}

/// Leaves the outcome for the status; true when the backup was made.
fn record(paths: &Paths, outcome: Result<(String, u64), String>) -> bool {
    let now = UtcTime::now().unix;
    let previous = LastRun::load(paths);
    let last = match outcome {
        Ok((id, bytes)) => {
            eprintln!("scheduled backup {id} done ({bytes} bytes)");
            LastRun {
                finished_unix: UtcTime::now().unix,
                ok: true,
                id,
                bytes,
                error: String::new(),
                failing_since_unix: 0,
            }
        }
        Err(error) => {
            eprintln!("scheduled backup failed: {error}");
            let since = previous
                .filter(|p| !p.ok)
                .map_or(now, |p| p.failing_since_unix);
            LastRun {
                finished_unix: UtcTime::now().unix,
                ok: false,
                id: String::new(),
                bytes: 0,
                error,
                failing_since_unix: since,
            }
        }
    };
    if let Err(e) = last.save(paths) {
        eprintln!("cannot record the outcome: {e}");
    }
    last.ok
}

fn backup(paths: &Paths, plan: &Plan, _lock: ActionLock) -> Result<(String, u64), String> {
    let state = paths.state_dir();
    if let Some(note) = journal::recover_and_note(paths).map_err(|e| e.to_string())? {
        eprintln!("{note}");
    }
    let stores = Stores::load(&state).map_err(|e| e.to_string())?;
    let mut params = Map::new();
    let destination = if stores.is_empty() { "local" } else { "store" };
    params.insert("destination".into(), Value::from(destination));
    params.insert(
        "target".into(),
        Value::from(plan.target.display().to_string()),
    );
    let p = SnapshotParams::from_map(&params).map_err(|e| e.to_string())?;
    let tools = Offline {
        params,
        results: RefCell::default(),
    };
    let ctx = ActionContext {
        tools: &tools,
        paths: paths.clone(),
        env: JujuEnv {
            unit_name: plan.unit.clone(),
            dispatch_path: None,
            action_name: Some("scheduled-backup".into()),
            hook_name: None,
            relation_id: None,
            remote_unit: None,
            departing_unit: None,
        },
    };
    let r = snapshot::execute(&ctx, &p).map_err(|e| e.to_string())?;
    let id = r.get("snapshot.name").unwrap_or_default().to_string();
    let bytes = r
        .get("snapshot.bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let policy = Policy {
        keep: plan.retention_count,
        max_age_days: plan.retention_days,
    };
    if destination == "local" {
        prune_local(&plan.target, policy, &id)
    } else {
        prune_stores(&stores, &plan.app, policy, &id, p.stall_timeout)
    }
    .map_err(|e| format!("the backup {id} was made, but retention failed: {e}"))?;
    Ok((id, bytes))
}

fn prune_local(dir: &Path, policy: Policy, id: &str) -> Result<(), String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in retention::doomed(&names, policy, id, UtcTime::now().unix) {
        let path: PathBuf = dir.join(&name);
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        let _ = std::fs::remove_file(record::local_path(&path));
        eprintln!("removed old backup {}", path.display());
    }
    Ok(())
}

fn prune_stores(
    stores: &Stores,
    app: &str,
    policy: Policy,
    id: &str,
    stall: std::time::Duration,
) -> Result<(), String> {
    let rt = crate::actions::runtime().map_err(|e| e.to_string())?;
    for settings in stores.stores.values() {
        let store = Store::open(settings, Timeouts { stall }).map_err(|e| e.to_string())?;
        let removed = rt
            .block_on(retention::prune(&store, app, policy, id))
            .map_err(|e| e.to_string())?;
        for key in removed {
            eprintln!("removed old backup {key} from {}", store.url());
        }
    }
    Ok(())
}

/// The hook tools a scheduled run has: its parameters, progress to
/// stderr, results kept in memory; nothing else exists outside a hook.
struct Offline {
    params: Map<String, Value>,
    results: RefCell<Results>,
}

fn none(tool: &str) -> JujuError {
    JujuError::Failed {
        tool: tool.into(),
        stderr: "not available outside a hook (scheduled backup)".into(),
    }
}

impl HookTools for Offline {
    fn action_params(&self) -> Result<Map<String, Value>, JujuError> {
        Ok(self.params.clone())
    }
    fn action_set(&self, results: &Results) -> Result<(), JujuError> {
        let mut mine = self.results.borrow_mut();
        for (k, v) in results.iter() {
            mine.set(k, v.clone())?;
        }
        Ok(())
    }
    fn action_fail(&self, message: &str) -> Result<(), JujuError> {
        eprintln!("{message}");
        Ok(())
    }
    fn action_log(&self, message: &str) -> Result<(), JujuError> {
        eprintln!("{message}");
        Ok(())
    }
    fn status_set(&self, _: Status, _: &str) -> Result<(), JujuError> {
        Err(none("status-set"))
    }
    fn log(&self, _: LogLevel, message: &str) -> Result<(), JujuError> {
        eprintln!("{message}");
        Ok(())
    }
    fn resource_get(&self, _: &str) -> Result<Option<PathBuf>, JujuError> {
        Err(none("resource-get"))
    }
    fn relation_ids(&self, _: &str) -> Result<Vec<String>, JujuError> {
        Err(none("relation-ids"))
    }
    fn relation_list(&self, _: &str) -> Result<Vec<String>, JujuError> {
        Err(none("relation-list"))
    }
    fn relation_get(&self, _: &str, _: &str) -> Result<Settings, JujuError> {
        Err(none("relation-get"))
    }
    fn relation_get_app(&self, _: &str, _: &str) -> Result<Settings, JujuError> {
        Err(none("relation-get"))
    }
    fn relation_set(&self, _: &str, _: &[(&str, String)]) -> Result<(), JujuError> {
        Err(none("relation-set"))
    }
    fn relation_set_app(&self, _: &str, _: &[(&str, String)]) -> Result<(), JujuError> {
        Err(none("relation-set"))
    }
    fn config(&self) -> Result<Map<String, Value>, JujuError> {
        Err(none("config-get"))
    }
    fn is_leader(&self) -> Result<bool, JujuError> {
        Err(none("is-leader"))
    }
    fn leader_get(&self) -> Result<Settings, JujuError> {
        Err(none("leader-get"))
    }
    fn leader_set(&self, _: &[(&str, String)]) -> Result<(), JujuError> {
        Err(none("leader-set"))
    }
    fn ingress_address(&self, _: &str) -> Result<String, JujuError> {
        Err(none("network-get"))
    }
    fn application_version_set(&self, _: &str) -> Result<(), JujuError> {
        Err(none("application-version-set"))
    }
    fn open_port(&self, _: u16) -> Result<(), JujuError> {
        Err(none("open-port"))
    }
    fn storage_location(&self) -> Result<PathBuf, JujuError> {
        Err(none("storage-get"))
    }
}
