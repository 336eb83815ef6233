//! The `grafana` endpoint (interface `grafana-dashboard`), as layer-etcd
//! provides it: the leader sends a dashboard named "etcd" as one
//! `request_<id>` key, reading from the datasource the related Prometheus
//! charm creates ("<prometheus app> - Juju generated source"). The
//! dashboard is this charm's own: leadership, proposals, db size against
//! its quota, disk latencies, and the snapshots and restarts that the
//! snapshot and restore actions and rolling restarts cause.

use serde_json::{json, Value};

use crate::juju::HookTools;

pub const ENDPOINT: &str = "grafana";
pub const NAME: &str = "etcd";

/// Every metric the dashboard reads; etcd 3.4 and 3.5 export them all.
pub const METRICS: [&str; 13] = [
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_disk_backend_snapshot_duration_seconds_count",
];

fn panel(
    id: u64,
    title: &str,
    unit: &str,
    pos: (u64, u64),
    targets: &[(&str, &str)],
    ds: &str,
) -> Value {
    json!({
        "id": id,
        "type": "timeseries",
        "title": title,
        "datasource": ds,
        "gridPos": {"x": pos.0, "y": pos.1, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets.iter().enumerate().map(|(i, (expr, legend))| json!({
            "refId": ((b'A' + i as u8) as char).to_string(),
            "expr": expr,
            "legendFormat": legend,
        })).collect::<Vec<_>>(),
    })
}

/// The dashboard, reading from `datasource`.
pub fn dashboard(datasource: &str) -> Value {
    let p99 = |metric: &str| {
        format!("histogram_quantile(0.99, sum by (instance, le) (rate({metric}[5m])))")
    };
    let panels = vec![
        panel(
            1,
            "Leader",
            "short",
            (0, 0),
            &[
                ("etcd_server_has_leader", "{{instance}} has a leader"),
                ("etcd_server_is_leader", "{{instance}} leads"),
                (
                    "increase(etcd_server_leader_changes_seen_total[1h])",
                    "{{instance}} leader changes / h",
                ),
            ],
            datasource,
        ),
        panel(
            2,
            "Proposals",
            "ops",
            (12, 0),
            &[
                (
                    "rate(etcd_server_proposals_committed_total[5m])",
                    "{{instance}} committed",
                ),
                (
                    "rate(etcd_server_proposals_applied_total[5m])",
                    "{{instance}} applied",
                ),
                ("etcd_server_proposals_pending", "{{instance}} pending"),
                (
                    "rate(etcd_server_proposals_failed_total[5m])",
                    "{{instance}} failed",
                ),
            ],
            datasource,
        ),
        panel(
            3,
            "DB size and quota",
            "bytes",
            (0, 8),
            &[
                ("etcd_mvcc_db_total_size_in_bytes", "{{instance}} file"),
                (
                    "etcd_mvcc_db_total_size_in_use_in_bytes",
                    "{{instance}} in use",
                ),
                ("etcd_server_quota_backend_bytes", "{{instance}} quota"),
            ],
            datasource,
        ),
        panel(
            4,
            "Disk latency (p99)",
            "s",
            (12, 8),
            &[
                (
                    &p99("etcd_disk_wal_fsync_duration_seconds_bucket"),
                    "{{instance}} WAL fsync",
                ),
                (
                    &p99("etcd_disk_backend_commit_duration_seconds_bucket"),
                    "{{instance}} backend commit",
                ),
            ],
            datasource,
        ),
        panel(
            5,
            "Snapshots and restarts",
            "short",
            (0, 16),
            &[
                (
                    "increase(etcd_disk_backend_snapshot_duration_seconds_count[5m])",
                    "{{instance}} snapshots sent (snapshot action, members catching up)",
                ),
                (
                    "changes(process_start_time_seconds{job=~\"etcd.*\"}[5m])",
                    "{{instance}} restarts (restore, rolling restart)",
                ),
            ],
            datasource,
        ),
    ];
    json!({
        "title": "etcd",
        "uid": "etcd-charm",
        "tags": ["etcd", "juju"],
        "timezone": "utc",
        "schemaVersion": 36,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    })
}

/// The datasource the prometheus charm names after itself: the remote
/// application of the first `prometheus` relation.
pub fn datasource(tools: &dyn HookTools) -> Option<String> {
    let rid = tools
        .relation_ids(super::prometheus::ENDPOINT)
        .ok()?
        .into_iter()
        .next()?;
    let unit = tools.relation_list(&rid).ok()?.into_iter().next()?;
    let app = unit.split('/').next()?.to_string();
    Some(format!("{app} - Juju generated source"))
}

/// Publishes (leader) or withdraws (others) the dashboard on every
/// relation; nothing until a Prometheus is related to read from.
pub fn publish(tools: &dyn HookTools, app: &str, leader: bool) -> Vec<String> {
    let source = datasource(tools).filter(|_| leader);
    super::send_request(tools, ENDPOINT, app, &|id| {
        source.as_ref().map(|ds| {
            json!({"name": NAME, "dashboard": dashboard(ds), "request_id": id}).to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_reads_the_datasource_and_known_metrics() {
        let d = dashboard("prometheus - Juju generated source");
        let panels = d["panels"].as_array().expect("panels");
        assert_eq!(panels.len(), 5);
        let mut used = Vec::new();
        for p in panels {
            assert_eq!(p["datasource"], "prometheus - Juju generated source");
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                used.extend(METRICS.iter().filter(|m| expr.contains(*m)));
            }
        }
        for m in METRICS {
            assert!(used.contains(&&m), "{m} unused");
        }
    }
}
