//! The `s3-credentials` endpoint (interface `s3`, v0), as the s3-integrator
//! charm speaks it: this application's leader asks for a bucket in its
//! application databag; the integrator's leader answers in its own with
//! plain strings (`tls-ca-chain` a JSON list of PEM certificates).

use crate::juju::{HookTools, Settings};
use crate::store::{clean_path, Kind, StoreSettings};

pub const ENDPOINT: &str = "s3-credentials";

/// The bucket asked for; the integrator's own `bucket` option wins.
pub fn requested_bucket(app: &str) -> String {
    format!("{app}-backups")
}

/// The leader asks on every relation of the endpoint (the integrator
/// answers only once asked).
pub fn request(tools: &dyn HookTools, app: &str) -> Vec<String> {
    let Ok(ids) = tools.relation_ids(ENDPOINT) else {
        return Vec::new();
    };
    ids.iter()
        .filter_map(|rid| {
            tools
                .relation_set_app(rid, &[("bucket", requested_bucket(app))])
                .err()
                .map(|e| format!("cannot ask for a bucket on {rid}: {e}"))
        })
        .collect()
}

/// The store the integrator describes: None while it has not answered
/// (no bucket or keys yet), an operator sentence when what it sent is
/// unusable.
pub fn settings(data: &Settings) -> Result<Option<StoreSettings>, String> {
    let get = |k: &str| {
        data.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (bucket, access, secret) = (get("bucket"), get("access-key"), get("secret-key"));
    if bucket.is_empty() || access.is_empty() || secret.is_empty() {
        return Ok(None);
    }
    let mut endpoint = get("endpoint");
    if !endpoint.is_empty() && !endpoint.contains("://") {
        endpoint = format!("https://{endpoint}");
    }
    let ca_chain = match get("tls-ca-chain").as_str() {
        "" => Vec::new(),
        text => serde_json::from_str::<Vec<String>>(text).map_err(|e| {
            format!("the s3-integrator's tls-ca-chain is not a JSON list of PEM certificates ({e})")
        })?,
    };
    // AWS serves new buckets only virtual-hosted; S3-compatible stores on
    // an endpoint of their own mostly only path-style.
    let virtual_hosted = match get("s3-uri-style").as_str() {
        "host" => true,
        "path" => false,
        _ => endpoint.is_empty(),
    };
    Ok(Some(StoreSettings {
        kind: Kind::S3,
        bucket,
        account: access,
        secret,
        endpoint,
        region: get("region"),
        path: clean_path(&get("path")),
        virtual_hosted,
        storage_class: get("storage-class"),
        ca_chain,
        allow_http: false,
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
    fn waits_for_the_keys() {
        assert_eq!(settings(&data(&[("bucket", "b")])), Ok(None));
    }

    #[test]
    fn reads_what_the_integrator_sends() {
        let s = settings(&data(&[
            ("bucket", "b"),
            ("access-key", "AK"),
            ("secret-key", "SK"),
            ("endpoint", "rgw.example:7480"),
            ("path", "/etcd/"),
            ("region", "eu-1"),
            ("tls-ca-chain", "[\"-----BEGIN CERTIFICATE-----\\n\"]"),
        ]))
        .expect("valid")
        .expect("complete");
        assert_eq!(s.endpoint, "https://rgw.example:7480");
        assert_eq!(s.path, "etcd");
        assert!(!s.virtual_hosted);
        assert_eq!(s.ca_chain.len(), 1);
        let aws = settings(&data(&[
            ("bucket", "b"),
            ("access-key", "AK"),
            ("secret-key", "SK"),
        ]))
        .expect("valid")
        .expect("complete");
        assert!(aws.virtual_hosted);
    }

    #[test]
    fn a_bad_ca_chain_is_said_plainly() {
        let e = settings(&data(&[
            ("bucket", "b"),
            ("access-key", "AK"),
            ("secret-key", "SK"),
            ("tls-ca-chain", "PEM"),
        ]))
        .expect_err("refused");
        assert!(e.contains("tls-ca-chain"), "{e}");
    }
}
