//! Relations to other applications, one file per interface: each turns the
//! relation data into typed values and back; hook tools are reached only
//! through `juju.rs`.

pub mod azure;
pub mod certificates;
pub mod grafana;
pub mod nrpe;
pub mod prometheus;
pub mod proxy;
pub mod s3;

use sha2::{Digest, Sha256};

use crate::juju::HookTools;

/// A request ID that stays the same for this application and relation
/// across hooks and leaders (Prometheus names its job after it), in UUID
/// form.
pub fn request_id(app: &str, rid: &str) -> String {
    let h = Sha256::digest(format!("{app}\n{rid}").as_bytes());
    let x = crate::etcd::snapshot::hex(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The request pattern of prometheus-manual and grafana-dashboard
/// (charms.reactive's request/response): one `request_<id>` key in this
/// unit's databag per relation of `endpoint`. `value` makes it from the ID;
/// `None` (every unit but the leader) withdraws it. Returns what failed.
pub fn send_request(
    tools: &dyn HookTools,
    endpoint: &str,
    app: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let Ok(ids) = tools.relation_ids(endpoint) else {
        return Vec::new();
    };
    ids.iter()
        .filter_map(|rid| {
            let id = request_id(app, rid);
            let key = format!("request_{id}");
            let text = value(&id).unwrap_or_default();
            tools
                .relation_set(rid, &[(key.as_str(), text)])
                .err()
                .map(|e| format!("cannot update the {endpoint} relation {rid}: {e}"))
        })
        .collect()
}
