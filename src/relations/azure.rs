//! The `azure-credentials` endpoint (interface `azure_storage`), as the
//! azure-storage-integrator charm (canonical/object-storage-integrator)
//! speaks it: this application's leader names a container in its
//! application databag, which is what makes the integrator answer (it
//! uses its own `container` option all the same); the integrator's leader
//! answers in its own with plain strings. The charm does not send
//! `requested-secrets`, so `secret-key` comes in the databag, as the
//! integrator writes it for requirers that ask for no secret.

use crate::juju::{HookTools, Settings};
use crate::store::{clean_path, Kind, StoreSettings};

pub const ENDPOINT: &str = "azure-credentials";

/// The leader asks on every relation of the endpoint.
pub fn request(tools: &dyn HookTools, app: &str) -> Vec<String> {
    let Ok(ids) = tools.relation_ids(ENDPOINT) else {
        return Vec::new();
    };
    ids.iter()
        .filter_map(|rid| {
            tools
                .relation_set_app(rid, &[("container", format!("{app}-backups"))])
                .err()
                .map(|e| format!("cannot ask for a container on {rid}: {e}"))
        })
        .collect()
}

/// The Blob service URL to use: the integrator's `endpoint` when it is an
/// http(s) URL (its default for those protocols ends in the container,
/// which object keys add themselves), else Azure's default for the
/// account. The `abfs(s)://`/`wasb(s)://` forms it derives for Hadoop
/// clients name the same account and container.
fn blob_endpoint(endpoint: &str, container: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if !(e.starts_with("https://") || e.starts_with("http://")) {
        return String::new();
    }
    e.strip_suffix(&format!("/{container}"))
        .unwrap_or(e)
        .to_string()
}

/// The store the integrator describes; None until it has answered.
pub fn settings(data: &Settings) -> Result<Option<StoreSettings>, String> {
    let get = |k: &str| {
        data.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (container, account, secret) =
        (get("container"), get("storage-account"), get("secret-key"));
    if container.is_empty() || account.is_empty() || secret.is_empty() {
        return Ok(None);
    }
    let container = container.trim_matches('/').to_string();
    if container.contains('/') {
        return Err(format!(
            "the azure-storage-integrator's container {container:?} is not a container name"
        ));
    }
    let endpoint = blob_endpoint(&get("endpoint"), &container);
    Ok(Some(StoreSettings {
        kind: Kind::Azure,
        allow_http: endpoint.starts_with("http://"),
        bucket: container,
        account,
        secret,
        endpoint,
        region: String::new(),
        path: clean_path(&get("path")),
        virtual_hosted: false,
        storage_class: String::new(),
        ca_chain: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_the_integrator_sends_for_each_protocol() {
        let base = [
            ("container", "backups"),
            ("storage-account", "acct"),
            ("secret-key", "a2V5"),
            ("path", "/etcd/"),
        ];
        let with = |protocol: &str, endpoint: &str| {
            let mut d = data(&base);
            d.insert("connection-protocol".into(), protocol.into());
            d.insert("endpoint".into(), endpoint.into());
            settings(&d).expect("valid").expect("complete")
        };
        let abfss = with("abfss", "abfss://backups@acct.dfs.core.windows.net/");
        assert_eq!(abfss.endpoint, "");
        assert_eq!(abfss.path, "etcd");
        let https = with("https", "https://acct.blob.core.windows.net/backups");
        assert_eq!(https.endpoint, "https://acct.blob.core.windows.net");
        assert!(!https.allow_http);
        let local = with("http", "http://127.0.0.1:10000/devstoreaccount1/backups");
        assert_eq!(local.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert!(local.allow_http);
        assert_eq!(settings(&data(&base[..2])), Ok(None));
    }
}
