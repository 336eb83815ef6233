//! The `proxy` endpoint (interface `etcd-proxy`), as layer-etcd provides
//! it: every unit publishes the client credentials and `cluster`, the
//! `name=peerURL` list of the started members, for an etcd proxy to join.

use crate::etcd::render::TlsPems;
use crate::etcd::MemberInfo;
use crate::juju::HookTools;

pub const ENDPOINT: &str = "proxy";

/// `name=peerURL,…` of the members that have started (a member added but
/// not started has no name yet), in the member list's order.
pub fn cluster(members: &[MemberInfo]) -> String {
    members
        .iter()
        .filter(|m| !m.name.is_empty())
        .filter_map(|m| m.peer_urls.first().map(|u| format!("{}={u}", m.name)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Publishes on every `proxy` relation; a failure is logged, never fatal
/// (the next hook tries again).
pub fn publish(
    tools: &dyn HookTools,
    members: &[MemberInfo],
    tls: Option<&TlsPems>,
    shared: Option<&TlsPems>,
) -> Vec<String> {
    let Ok(ids) = tools.relation_ids(ENDPOINT) else {
        return Vec::new();
    };
    let (cert, key) = shared
        .map(|t| (t.client_cert.clone(), t.client_key.clone()))
        .unwrap_or_default();
    let data = [
        ("cluster", cluster(members)),
        ("client_ca", tls.map(|t| t.ca.clone()).unwrap_or_default()),
        ("client_cert", cert),
        ("client_key", key),
    ];
    ids.iter()
        .filter_map(|id| {
            tools
                .relation_set(id, &data)
                .err()
                .map(|e| format!("cannot update the {ENDPOINT} relation {id}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, peer: &str) -> MemberInfo {
        MemberInfo {
            id: 1,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn cluster_lists_started_members_as_layer_etcd_does() {
        let members = [
            m("etcd0", "https://10.0.0.1:2380"),
            m("", "https://10.0.0.9:2380"),
            m("etcd1", "https://10.0.0.2:2380"),
        ];
        assert_eq!(
            cluster(&members),
            "etcd0=https://10.0.0.1:2380,etcd1=https://10.0.0.2:2380"
        );
    }
}
