//! The `prometheus` endpoint (interface `prometheus-manual`), as layer-etcd
//! provides it: the leader asks for a scrape job named "etcd" over every
//! member's client URL, with the CA and client pair to scrape it. The
//! request is one unit-databag key, `request_<id>`, whose value is the
//! job as sorted-key JSON with `request_id`; other units withdraw theirs,
//! so a leadership change never leaves two jobs.

use serde_json::json;

use crate::etcd::render::TlsPems;
use crate::etcd::MemberInfo;
use crate::juju::HookTools;

pub const ENDPOINT: &str = "prometheus";
pub const JOB: &str = "etcd";

/// `host:port` of every voting member, from its first client URL.
fn targets(members: &[MemberInfo]) -> (Vec<String>, bool) {
    let urls: Vec<&String> = members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| m.client_urls.first())
        .collect();
    let https = urls.iter().any(|u| u.starts_with("https://"));
    let mut out: Vec<String> = urls
        .iter()
        .filter(|u| u.starts_with("https://") == https)
        .map(|u| {
            u.split("://")
                .nth(1)
                .unwrap_or(u)
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    (out, https)
}

/// The job layer-etcd sends; the client pair only when there is a shared
/// one (legacy certificates), never a unit's own key.
pub fn job(
    members: &[MemberInfo],
    tls: Option<&TlsPems>,
    shared: Option<&TlsPems>,
    id: &str,
) -> String {
    let (targets, https) = targets(members);
    let mut v = json!({
        "job_name": JOB,
        "job_data": {
            "scheme": if https { "https" } else { "http" },
            "static_configs": [{"targets": targets}],
        },
        "request_id": id,
    });
    if https {
        if let Some(t) = tls {
            v["ca_cert"] = json!(t.ca);
        }
        if let Some(s) = shared {
            v["client_cert"] = json!(s.client_cert);
            v["client_key"] = json!(s.client_key);
        }
    }
    v.to_string()
}

/// Publishes (leader) or withdraws (others) the job on every relation.
pub fn publish(
    tools: &dyn HookTools,
    app: &str,
    leader: bool,
    members: &[MemberInfo],
    tls: Option<&TlsPems>,
    shared: Option<&TlsPems>,
) -> Vec<String> {
    super::send_request(tools, ENDPOINT, app, &|id| {
        leader.then(|| job(members, tls, shared, id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_is_layer_etcds() {
        let m = |n: &str, url: &str| MemberInfo {
            id: 1,
            name: n.into(),
            peer_urls: vec![],
            client_urls: vec![url.into()],
            is_learner: false,
        };
        let members = [
            m("b", "https://10.0.0.2:2379"),
            m("a", "https://10.0.0.1:2379"),
        ];
        let id = crate::relations::request_id("etcd", "prometheus:4");
        assert_eq!(id, crate::relations::request_id("etcd", "prometheus:4"));
        assert_ne!(id, crate::relations::request_id("etcd", "prometheus:5"));
        assert_eq!(id.len(), 36);
        let v: serde_json::Value = serde_json::from_str(&job(&members, None, None, &id)).unwrap();
        assert_eq!(v["job_name"], "etcd");
        assert_eq!(v["job_data"]["scheme"], "https");
        assert_eq!(
            v["job_data"]["static_configs"][0]["targets"],
            json!(["10.0.0.1:2379", "10.0.0.2:2379"])
        );
        assert!(v.get("client_key").is_none());
    }
}
