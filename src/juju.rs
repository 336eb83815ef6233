//! Talking to Juju: only through the hook tools on `PATH`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Map, Value};

/// Failures of the hook tools themselves (Juju unreachable, bad call).
#[derive(Debug, thiserror::Error)]
pub enum JujuError {
    #[error("cannot run the Juju hook tool {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("the Juju hook tool {tool} failed: {stderr}")]
    Failed { tool: String, stderr: String },
    #[error("the Juju hook tool {tool} returned output the charm cannot read: {detail}")]
    BadOutput { tool: String, detail: String },
    #[error("the charm tried to set the result key {0:?}, which Juju rejects")]
    BadKey(String),
}

/// Workload status values Juju accepts from `status-set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Maintenance,
    Blocked,
    Waiting,
    Active,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Maintenance => "maintenance",
            Status::Blocked => "blocked",
            Status::Waiting => "waiting",
            Status::Active => "active",
        }
    }
}

/// Levels accepted by `juju-log -l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Action results, kept in key order; keys are checked as Juju checks them
/// when they are added, so a bad key is a bug caught before any tool runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Results(BTreeMap<String, String>);

impl Results {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<(), JujuError> {
        if !valid_result_key(key) {
            return Err(JujuError::BadKey(key.to_string()));
        }
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const RESERVED_KEYS: [&str; 4] = ["stdout", "stdout-encoding", "stderr", "stderr-encoding"];

/// Juju's rule for `action-set` keys: dot-separated parts, each
/// `^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`, and the output keys are reserved.
pub fn valid_result_key(key: &str) -> bool {
    if RESERVED_KEYS.contains(&key) {
        return false;
    }
    key.split('.').all(|part| {
        let b = part.as_bytes();
        let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match b {
            [] => false,
            [only] => inner(only),
            [first, middle @ .., last] => {
                inner(first) && inner(last) && middle.iter().all(|c| inner(c) || *c == b'-')
            }
        }
    })
}

/// Everything the charm asks of Juju. The process implementation runs the
/// real hook tools; tests put strict fakes of those tools on `PATH`.
pub trait HookTools {
    fn action_params(&self) -> Result<Map<String, Value>, JujuError>;
    fn action_set(&self, results: &Results) -> Result<(), JujuError>;
    fn action_fail(&self, message: &str) -> Result<(), JujuError>;
    fn action_log(&self, message: &str) -> Result<(), JujuError>;
    fn status_set(&self, status: Status, message: &str) -> Result<(), JujuError>;
    fn log(&self, level: LogLevel, message: &str) -> Result<(), JujuError>;
    /// The local path of a file resource, or `None` when none was uploaded.
    fn resource_get(&self, name: &str) -> Result<Option<PathBuf>, JujuError>;
    /// IDs of the relations of endpoint `name`.
    fn relation_ids(&self, name: &str) -> Result<Vec<String>, JujuError>;
    /// Remote units in relation `id`.
    fn relation_list(&self, id: &str) -> Result<Vec<String>, JujuError>;
    /// One unit's (or with `app`, the application's) settings in relation `id`.
    fn relation_get(&self, id: &str, unit: &str) -> Result<Settings, JujuError>;
    /// The remote application's databag (`relation-get --app`).
    fn relation_get_app(&self, id: &str, app: &str) -> Result<Settings, JujuError>;
    /// Sets (empty value: deletes) this unit's settings in relation `id`.
    fn relation_set(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError>;
    /// Sets this application's settings in relation `id` (leader only).
    fn relation_set_app(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError>;
    /// The application config, every option with its value or default.
    fn config(&self) -> Result<Map<String, Value>, JujuError>;
    fn is_leader(&self) -> Result<bool, JujuError>;
    fn leader_get(&self) -> Result<Settings, JujuError>;
    /// Only the leader may; an empty value deletes the key.
    fn leader_set(&self, pairs: &[(&str, String)]) -> Result<(), JujuError>;
    /// The address other units reach this one at, for a binding.
    fn ingress_address(&self, binding: &str) -> Result<String, JujuError>;
    fn application_version_set(&self, version: &str) -> Result<(), JujuError>;
    fn open_port(&self, port: u16) -> Result<(), JujuError>;
    /// Where the storage instance of this storage hook is (`storage-get
    /// location`): a block device's path.
    fn storage_location(&self) -> Result<PathBuf, JujuError>;
}

/// Relation or leader settings: string keys and values.
pub type Settings = BTreeMap<String, String>;

/// A unit's number (`etcd/12` → 12), for ordering units as Juju numbers
/// them; a name without one sorts last.
pub fn unit_number(unit: &str) -> u64 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

fn json_settings(tool: &str, out: &Output) -> Result<Settings, JujuError> {
    match tool_json(tool, out)? {
        Value::Object(map) => Ok(map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect()),
        Value::Null => Ok(Settings::new()),
        other => Err(bad_shape(tool, "settings", &other)),
    }
}

/// A hook tool's `--format=json` output, parsed.
fn tool_json(tool: &str, out: &Output) -> Result<Value, JujuError> {
    serde_json::from_slice(&out.stdout).map_err(|e| JujuError::BadOutput {
        tool: tool.into(),
        detail: e.to_string(),
    })
}

fn bad_shape(tool: &str, expected: &str, got: &Value) -> JujuError {
    JujuError::BadOutput {
        tool: tool.into(),
        detail: format!("expected {expected}, got {got}"),
    }
}

fn pair_args(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn json_strings(tool: &str, out: &Output) -> Result<Vec<String>, JujuError> {
    match tool_json(tool, out)? {
        Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()),
        Value::Null => Ok(Vec::new()),
        other => Err(bad_shape(tool, "a list", &other)),
    }
}

/// The hook tools as Juju provides them, found on `PATH`.
#[derive(Debug, Default)]
pub struct ProcessTools;

impl ProcessTools {
    /// The settings go in as YAML on stdin (`--file -`), never on the
    /// command line, where any local user could read a key in /proc.
    fn set_relation(&self, id: &str, pairs: &[(&str, String)], app: bool) -> Result<(), JujuError> {
        use std::io::Write;
        use std::process::Stdio;
        let tool = "relation-set";
        let map: BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let yaml = serde_yaml::to_string(&map).map_err(|e| JujuError::BadOutput {
            tool: tool.into(),
            detail: e.to_string(),
        })?;
        let spawn = |source| JujuError::Spawn {
            tool: tool.into(),
            source,
        };
        let mut args = vec!["-r", id, "--file", "-"];
        if app {
            args.insert(0, "--app");
        }
        let mut child = Command::new(tool)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(yaml.as_bytes()).map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(JujuError::Failed {
                tool: tool.into(),
                stderr: first_line(&out.stderr),
            })
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, JujuError> {
        let out = Command::new(tool)
            .args(args)
            .output()
            .map_err(|source| JujuError::Spawn {
                tool: tool.to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(JujuError::Failed {
                tool: tool.to_string(),
                stderr: first_line(&out.stderr),
            })
        }
    }
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().to_string()
}

/// A tool's `--format=json` object (null reads as empty).
fn json_object(tool: &str, out: &Output) -> Result<Map<String, Value>, JujuError> {
    match tool_json(tool, out)? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(bad_shape(tool, "an object", &other)),
    }
}

impl HookTools for ProcessTools {
    fn action_params(&self) -> Result<Map<String, Value>, JujuError> {
        let out = self.run("action-get", &["--format=json"])?;
        json_object("action-get", &out)
    }

    fn action_set(&self, results: &Results) -> Result<(), JujuError> {
        if results.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("action-set", &args).map(drop)
    }

    fn action_fail(&self, message: &str) -> Result<(), JujuError> {
        self.run("action-fail", &[message]).map(drop)
    }

    fn action_log(&self, message: &str) -> Result<(), JujuError> {
        self.run("action-log", &[message]).map(drop)
    }

    fn status_set(&self, status: Status, message: &str) -> Result<(), JujuError> {
        self.run("status-set", &[status.as_str(), message])
            .map(drop)
    }

    fn log(&self, level: LogLevel, message: &str) -> Result<(), JujuError> {
        self.run("juju-log", &["-l", level.as_str(), message])
            .map(drop)
    }

    fn storage_location(&self) -> Result<PathBuf, JujuError> {
        let out = self.run("storage-get", &["--format=json", "location"])?;
        match tool_json("storage-get", &out)? {
            Value::String(s) if !s.is_empty() => Ok(PathBuf::from(s)),
            other => Err(bad_shape("storage-get", "a location", &other)),
        }
    }

    fn resource_get(&self, name: &str) -> Result<Option<PathBuf>, JujuError> {
        let out = match Command::new("resource-get").arg(name).output() {
            Ok(out) => out,
            Err(source) => {
                return Err(JujuError::Spawn {
                    tool: "resource-get".into(),
                    source,
                })
            }
        };
        // Juju fails resource-get when nothing was uploaded; that is an
        // answer ("no resource"), not a fault of the tool.
        if !out.status.success() {
            return Ok(None);
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // An empty file is "none": charms on Charmhub ship empty placeholder
        // resources, and layer-etcd (layer-snap) treats them so.
        let empty = std::fs::metadata(&path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        if path.is_empty() || empty {
            Ok(None)
        } else {
            Ok(Some(PathBuf::from(path)))
        }
    }

    fn relation_ids(&self, name: &str) -> Result<Vec<String>, JujuError> {
        let out = self.run("relation-ids", &["--format=json", name])?;
        json_strings("relation-ids", &out)
    }

    fn relation_list(&self, id: &str) -> Result<Vec<String>, JujuError> {
        let out = self.run("relation-list", &["--format=json", "-r", id])?;
        json_strings("relation-list", &out)
    }

    fn relation_get(&self, id: &str, unit: &str) -> Result<Settings, JujuError> {
        let out = self.run("relation-get", &["--format=json", "-r", id, "-", unit])?;
        json_settings("relation-get", &out)
    }

    fn relation_get_app(&self, id: &str, app: &str) -> Result<Settings, JujuError> {
        let out = self.run(
            "relation-get",
            &["--format=json", "--app", "-r", id, "-", app],
        )?;
        json_settings("relation-get", &out)
    }

    fn relation_set(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        self.set_relation(id, pairs, false)
    }

    fn relation_set_app(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        self.set_relation(id, pairs, true)
    }

    fn config(&self) -> Result<Map<String, Value>, JujuError> {
        let out = self.run("config-get", &["--format=json", "--all"])?;
        json_object("config-get", &out)
    }

    fn is_leader(&self) -> Result<bool, JujuError> {
        let out = self.run("is-leader", &["--format=json"])?;
        match tool_json("is-leader", &out)? {
            Value::Bool(b) => Ok(b),
            other => Err(bad_shape("is-leader", "true or false", &other)),
        }
    }

    fn leader_get(&self) -> Result<Settings, JujuError> {
        let out = self.run("leader-get", &["--format=json"])?;
        json_settings("leader-get", &out)
    }

    fn leader_set(&self, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        let args = pair_args(pairs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("leader-set", &args).map(drop)
    }

    fn ingress_address(&self, binding: &str) -> Result<String, JujuError> {
        let out = self.run("network-get", &[binding, "--ingress-address"])?;
        let addr = first_line(&out.stdout);
        if addr.is_empty() {
            return Err(JujuError::BadOutput {
                tool: "network-get".into(),
                detail: format!("no ingress address for {binding}"),
            });
        }
        Ok(addr)
    }

    fn application_version_set(&self, version: &str) -> Result<(), JujuError> {
        self.run("application-version-set", &[version]).map(drop)
    }

    fn open_port(&self, port: u16) -> Result<(), JujuError> {
        self.run("open-port", &[&format!("{port}/tcp")]).map(drop)
    }
}

/// What Juju tells the process about itself through the environment.
#[derive(Debug, Clone, Default)]
pub struct JujuEnv {
    pub unit_name: String,
    pub dispatch_path: Option<String>,
    pub action_name: Option<String>,
    pub hook_name: Option<String>,
    pub relation_id: Option<String>,
    pub remote_unit: Option<String>,
    pub departing_unit: Option<String>,
}

impl JujuEnv {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        JujuEnv {
            unit_name: var("JUJU_UNIT_NAME").unwrap_or_else(|| "etcd/0".to_string()),
            dispatch_path: var("JUJU_DISPATCH_PATH"),
            action_name: var("JUJU_ACTION_NAME"),
            hook_name: var("JUJU_HOOK_NAME"),
            relation_id: var("JUJU_RELATION_ID"),
            remote_unit: var("JUJU_REMOTE_UNIT"),
            departing_unit: var("JUJU_DEPARTING_UNIT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_follow_juju_rules() {
        for good in [
            "snapshot.path",
            "copy.cmd",
            "a",
            "a-b.c1",
            "backup.sha256",
            "x9",
        ] {
            assert!(valid_result_key(good), "{good}");
        }
        for bad in [
            "",
            "Snapshot",
            "a.",
            ".a",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "stdout",
            "stderr",
            "stdout-encoding",
            "stderr-encoding",
            "a b",
            "snapshot.Path",
        ] {
            assert!(!valid_result_key(bad), "{bad}");
        }
    }

    #[test]
    fn results_refuse_bad_keys() {
        let mut r = Results::new();
        assert!(r.set("snapshot.db_size", "1").is_err());
        assert!(r.set("snapshot.db-size", "1").is_ok());
        assert_eq!(r.get("snapshot.db-size"), Some("1"));
    }
}
