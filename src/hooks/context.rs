//! A hook's view of Juju, with Juju's own semantics: what a hook reads is a
//! snapshot for the whole hook (the uniter caches settings it has read),
//! and this unit's relation settings are written when the hook succeeds
//! (a failed hook's writes are discarded), reading back what the hook set.
//! So a hook runs each read once and writes each relation once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::juju::{HookTools, JujuError, LogLevel, Results, Settings, Status};

pub struct Cached<'a> {
    inner: &'a dyn HookTools,
    me: String,
    /// Where what Juju was told for good (the workload version, the open
    /// port) is remembered, so it is not told again every hook.
    state_dir: PathBuf,
    config: RefCell<Option<Map<String, Value>>>,
    leader: RefCell<Option<bool>>,
    leader_settings: RefCell<Option<Settings>>,
    ids: RefCell<BTreeMap<String, Vec<String>>>,
    lists: RefCell<BTreeMap<String, Vec<String>>>,
    data: RefCell<BTreeMap<(String, String), Settings>>,
    apps: RefCell<BTreeMap<(String, String), Settings>>,
    addresses: RefCell<BTreeMap<String, String>>,
    /// This unit's relation settings to write at the end, per relation.
    pending: RefCell<BTreeMap<String, BTreeMap<String, String>>>,
}

/// Juju's rule for settings: an empty value deletes the key.
fn merge(settings: &mut Settings, pairs: impl IntoIterator<Item = (String, String)>) {
    for (k, v) in pairs {
        if v.is_empty() {
            settings.remove(&k);
        } else {
            settings.insert(k, v);
        }
    }
}

fn memo<K: Ord + Clone, V: Clone>(
    cell: &RefCell<BTreeMap<K, V>>,
    key: K,
    load: impl FnOnce() -> Result<V, JujuError>,
) -> Result<V, JujuError> {
    if let Some(v) = cell.borrow().get(&key) {
        return Ok(v.clone());
    }
    let v = load()?;
    cell.borrow_mut().insert(key, v.clone());
    Ok(v)
}

impl<'a> Cached<'a> {
    pub fn new(inner: &'a dyn HookTools, me: &str, state_dir: PathBuf) -> Cached<'a> {
        Cached {
            inner,
            me: me.to_string(),
            state_dir,
            config: RefCell::new(None),
            leader: RefCell::new(None),
            leader_settings: RefCell::new(None),
            ids: RefCell::new(BTreeMap::new()),
            lists: RefCell::new(BTreeMap::new()),
            data: RefCell::new(BTreeMap::new()),
            apps: RefCell::new(BTreeMap::new()),
            addresses: RefCell::new(BTreeMap::new()),
            pending: RefCell::new(BTreeMap::new()),
        }
    }

    /// Tells Juju `value` unless it was told that already.
    fn once(
        &self,
        what: &str,
        value: &str,
        tell: impl FnOnce() -> Result<(), JujuError>,
    ) -> Result<(), JujuError> {
        let path = self.state_dir.join(format!("told-{what}"));
        if std::fs::read_to_string(&path).ok().as_deref() == Some(value) {
            return Ok(());
        }
        tell()?;
        let _ = crate::fsutil::create_private_dir(&self.state_dir);
        let _ = std::fs::write(&path, value);
        Ok(())
    }

    /// The hook succeeded: write this unit's relation settings, one
    /// `relation-set` per relation.
    pub fn commit(&self) -> Result<(), JujuError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (rid, pairs) in pending {
            let pairs: Vec<(&str, String)> =
                pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            self.inner.relation_set(&rid, &pairs)?;
        }
        Ok(())
    }
}

impl HookTools for Cached<'_> {
    fn action_params(&self) -> Result<Map<String, Value>, JujuError> {
        self.inner.action_params()
    }
    fn action_set(&self, results: &Results) -> Result<(), JujuError> {
        self.inner.action_set(results)
    }
    fn action_fail(&self, message: &str) -> Result<(), JujuError> {
        self.inner.action_fail(message)
    }
    fn action_log(&self, message: &str) -> Result<(), JujuError> {
        self.inner.action_log(message)
    }
    fn status_set(&self, status: Status, message: &str) -> Result<(), JujuError> {
        self.inner.status_set(status, message)
    }
    fn log(&self, level: LogLevel, message: &str) -> Result<(), JujuError> {
        self.inner.log(level, message)
    }
    fn resource_get(&self, name: &str) -> Result<Option<PathBuf>, JujuError> {
        self.inner.resource_get(name)
    }
    fn storage_location(&self) -> Result<PathBuf, JujuError> {
        self.inner.storage_location()
    }
    fn relation_ids(&self, name: &str) -> Result<Vec<String>, JujuError> {
        memo(&self.ids, name.to_string(), || {
            self.inner.relation_ids(name)
        })
    }
    fn relation_list(&self, id: &str) -> Result<Vec<String>, JujuError> {
        memo(&self.lists, id.to_string(), || self.inner.relation_list(id))
    }
    fn relation_get(&self, id: &str, unit: &str) -> Result<Settings, JujuError> {
        let key = (id.to_string(), unit.to_string());
        let mut data = memo(&self.data, key, || self.inner.relation_get(id, unit))?;
        if unit == self.me {
            if let Some(p) = self.pending.borrow().get(id) {
                merge(&mut data, p.clone());
            }
        }
        Ok(data)
    }
    fn relation_get_app(&self, id: &str, app: &str) -> Result<Settings, JujuError> {
        let key = (id.to_string(), app.to_string());
        memo(&self.apps, key, || self.inner.relation_get_app(id, app))
    }
    fn relation_set_app(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        self.inner.relation_set_app(id, pairs)
    }

    fn relation_set(&self, id: &str, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        // Checked now, as the tool would, so a bad id fails where it is made.
        self.relation_list(id)?;
        let mut pending = self.pending.borrow_mut();
        let entry = pending.entry(id.to_string()).or_default();
        for (k, v) in pairs {
            entry.insert((*k).to_string(), v.clone());
        }
        Ok(())
    }
    fn config(&self) -> Result<Map<String, Value>, JujuError> {
        if let Some(c) = self.config.borrow().as_ref() {
            return Ok(c.clone());
        }
        let c = self.inner.config()?;
        *self.config.borrow_mut() = Some(c.clone());
        Ok(c)
    }
    fn is_leader(&self) -> Result<bool, JujuError> {
        if let Some(l) = *self.leader.borrow() {
            return Ok(l);
        }
        let l = self.inner.is_leader()?;
        *self.leader.borrow_mut() = Some(l);
        Ok(l)
    }
    fn leader_get(&self) -> Result<Settings, JujuError> {
        if let Some(s) = self.leader_settings.borrow().as_ref() {
            return Ok(s.clone());
        }
        let s = self.inner.leader_get()?;
        *self.leader_settings.borrow_mut() = Some(s.clone());
        Ok(s)
    }
    /// Written at once (Juju does: other units read it at once too).
    fn leader_set(&self, pairs: &[(&str, String)]) -> Result<(), JujuError> {
        self.inner.leader_set(pairs)?;
        if let Some(s) = self.leader_settings.borrow_mut().as_mut() {
            merge(s, pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())));
        }
        Ok(())
    }
    fn ingress_address(&self, binding: &str) -> Result<String, JujuError> {
        memo(&self.addresses, binding.to_string(), || {
            self.inner.ingress_address(binding)
        })
    }
    fn application_version_set(&self, version: &str) -> Result<(), JujuError> {
        self.once("workload-version", version, || {
            self.inner.application_version_set(version)
        })
    }
    fn open_port(&self, port: u16) -> Result<(), JujuError> {
        self.once("opened-port", &port.to_string(), || {
            self.inner.open_port(port)
        })
    }
}
