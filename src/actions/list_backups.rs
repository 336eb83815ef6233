//! The `list-backups` action: every archive this application can restore,
//! on this unit (in `target`, the snapshot action's default) and in each related
//! store, newest first. Results: `backups` (YAML) and `output` (a table).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::actions::snapshot::DEFAULT_TARGET;
use crate::actions::{params, ActionContext};
use crate::error::Error;
use crate::juju::Results;
use crate::store::list::{self, Backup};
use crate::store::{Store, StoreError, Stores, Timeouts};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0}")]
    Store(StoreError),
    #[error("cannot list {0}")]
    Listing(String),
}

impl From<ListError> for Error {
    fn from(e: ListError) -> Self {
        Error::Action(Box::new(e))
    }
}

/// One row of `backups`, flat for YAML readers.
#[derive(Debug, Serialize)]
struct Row<'a> {
    id: &'a str,
    location: &'a str,
    key: &'a str,
    bytes: u64,
    created: &'a str,
    encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    /// False when no record says what the archive holds.
    recorded: bool,
}

fn row(b: &Backup) -> Row<'_> {
    let r = b.record.as_ref();
    Row {
        id: &b.id,
        location: &b.location,
        key: &b.key,
        bytes: b.bytes,
        created: &b.created,
        encrypted: b.encrypted,
        etcd_version: r.map(|r| r.manifest.etcd_version.as_str()),
        revision: r.map(|r| r.manifest.revision),
        cluster_id: r.map(|r| r.manifest.cluster_id.as_str()),
        sha256: r.map(|r| r.sha256.as_str()),
        recorded: r.is_some(),
    }
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let p = ctx.tools.action_params()?;
    let stall = Duration::from_secs(params::integer(&p, "stall-timeout", 60, 1..=86_400)?);
    let stores = Stores::load(&ctx.paths.state_dir()).map_err(ListError::Store)?;
    let target = params::string(&p, "target", DEFAULT_TARGET)?;
    let mut backups = list::local(Path::new(&target));
    let rt = crate::actions::runtime()?;
    let own = ctx.env.unit_name.split('/').next().unwrap_or("etcd");
    // Another application's backups in the same stores (the one a new
    // application replaces); their IDs name it, as restore takes them.
    let app = params::optional_string(&p, "application")?.unwrap_or_else(|| own.to_string());
    if !crate::store::is_app_name(&app) {
        return Err(Error::Param {
            name: "application".into(),
            reason: format!("{app:?} is not an application name"),
        });
    }
    if app != own {
        backups.clear();
    }
    for settings in stores.stores.values() {
        let store = Store::open(settings, Timeouts { stall }).map_err(ListError::Store)?;
        let mut found = rt
            .block_on(list::in_store(&store, &app))
            .map_err(ListError::Store)?;
        if app != own {
            for b in &mut found {
                b.id = format!("{app}/{}", b.id);
            }
        }
        backups.extend(found);
    }
    list::sort(&mut backups);
    let rows: Vec<Row> = backups.iter().map(row).collect();
    let yaml = serde_yaml::to_string(&rows)
        .map_err(|e| ListError::Listing(format!("the backups as YAML: {e}")))?;
    let mut r = Results::new();
    r.set("count", backups.len().to_string())?;
    r.set("backups", yaml)?;
    let table = if backups.is_empty() {
        format!(
            "no backups in {}{}",
            target,
            if stores.is_empty() {
                " (no object store related)".to_string()
            } else {
                format!(
                    " or {}",
                    stores
                        .stores
                        .values()
                        .map(|s| s.url())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    } else {
        list::table(&backups)
    };
    r.set("output", table)?;
    Ok(r)
}
