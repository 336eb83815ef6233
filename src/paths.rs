//! Where the charm finds things on the unit. Every host path it creates or
//! defaults to sits under `ETCD_CHARM_ROOT` (like DESTDIR), so tests can run
//! several simulated units on one machine.

use std::path::{Path, PathBuf};

pub const DEFAULT_CONF: &str = "var/snap/etcd/common/etcd.conf.yml";
const STATE_DIR: &str = "var/lib/etcd-charm";

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
    conf: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>, conf: Option<PathBuf>) -> Self {
        let root = root.into();
        let conf = conf.unwrap_or_else(|| root.join(DEFAULT_CONF));
        Paths { root, conf }
    }

    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = var("ETCD_CHARM_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Paths::new(root, var("ETCD_CHARM_CONF").map(PathBuf::from))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The etcd YAML config file every hook and action reads.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The charm's own state (action lock, journals).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Where the charm installs etcd from the `etcd` resource: one dir per
    /// version and a `current` link.
    pub fn etcd_install_dir(&self) -> PathBuf {
        self.state_dir().join("etcd")
    }

    /// The systemd unit the charm writes when it installs etcd itself.
    pub fn unit_file(&self) -> PathBuf {
        self.under_root("etc/systemd/system/snap.etcd.etcd.service")
    }

    /// Where etcd's own tools are, after PATH: the charm's install, the snap's.
    pub fn tool_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.etcd_install_dir().join("current"),
            self.under_root("snap/bin"),
        ]
    }

    /// The etcd snap's data dir (`$SNAP_DATA`, a link snapd points at the
    /// running revision). layer-etcd kept a member's data right in it.
    pub fn snap_data(&self) -> PathBuf {
        self.under_root("var/snap/etcd/current")
    }

    /// Where etcd keeps a member's data: `/var/snap/etcd/current/<name>.etcd`.
    pub fn data_dir_for(&self, name: &str) -> PathBuf {
        self.snap_data().join(format!("{name}.etcd"))
    }

    /// A host path under the root; `rel` is relative ("var/…").
    pub fn under_root(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_defaults_under_root_and_can_be_named() {
        let p = Paths::new("/tmp/u1", None);
        assert_eq!(
            p.conf(),
            Path::new("/tmp/u1/var/snap/etcd/common/etcd.conf.yml")
        );
        assert_eq!(p.state_dir(), Path::new("/tmp/u1/var/lib/etcd-charm"));
        let p = Paths::new("/", Some(PathBuf::from("/etc/x.yml")));
        assert_eq!(p.conf(), Path::new("/etc/x.yml"));
        assert_eq!(
            p.under_root("/etc/systemd/system"),
            Path::new("/etc/systemd/system")
        );
    }
}
