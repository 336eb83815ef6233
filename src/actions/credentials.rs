//! The `package-client-credentials` action: the client certificate, key and
//! CA this etcd accepts, with a short README, in one 0600 tar.gz for an
//! operator to copy off the unit with `juju scp`.

use std::fs;
use std::path::PathBuf;

use crate::actions::{params, ActionContext};
use crate::archive::ArchiveFile;
use crate::error::Error;
use crate::etcd::snapshot::hex;
use crate::etcd::{EtcdConfig, LocalMember};
use crate::fsutil::{self, human_size, DirError};
use crate::juju::Results;
use crate::timefmt::UtcTime;

pub const DEFAULT_TARGET: &str = "/home/ubuntu/etcd-credentials";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("this unit's etcd serves clients without TLS, so there are no client credentials to package; set the tls_* charm options first")]
    NoTls,
    #[error("there is no client certificate and key (client.crt, client.key) in {0}; set the tls_client_certificate and tls_client_key options")]
    NoClientIdentity(PathBuf),
    #[error("cannot read the client credential {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the target {path} cannot be used: {reason}; choose another target")]
    Target { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}; no archive was kept")]
    Write { path: PathBuf, reason: String },
}

impl From<CredentialsError> for crate::error::Error {
    fn from(e: CredentialsError) -> Self {
        crate::error::Error::Action(Box::new(e))
    }
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let p = ctx.tools.action_params()?;
    let target = PathBuf::from(params::string(&p, "target", DEFAULT_TARGET)?);
    let conf_path = ctx.paths.conf();
    let conf = EtcdConfig::load(conf_path)?;
    let endpoint = conf.client_endpoint(conf_path)?;
    let tls = endpoint.tls.clone().ok_or(CredentialsError::NoTls)?;
    // Only a client identity made for clients: never the server's own key.
    let dir = conf_path.parent().unwrap_or(std::path::Path::new("/"));
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let (Some(ca), true, true) = (tls.ca_file, cert.is_file(), key.is_file()) else {
        return Err(CredentialsError::NoClientIdentity(dir.to_path_buf()).into());
    };
    let read = |path: &PathBuf| {
        fs::read(path).map_err(|e| CredentialsError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let (ca_pem, cert_pem, key_pem) = (read(&ca)?, read(&cert)?, read(&key)?);

    // Every voting member's client URL; just this one if etcd cannot say.
    let rt = crate::actions::runtime()?;
    let mut urls = match rt.block_on(LocalMember::probe(&endpoint)) {
        Ok((_, members)) => members
            .iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls.clone())
            .collect(),
        Err(e) => {
            ctx.progress(&format!(
                "etcd did not list its members ({e}); naming this unit only"
            ));
            vec![endpoint.url.clone()]
        }
    };
    urls.sort();
    urls.dedup();
    let connection = urls.join(",");

    let target_err = |reason: String| CredentialsError::Target {
        path: target.clone(),
        reason,
    };
    fsutil::ensure_private_dir(&target).map_err(|e| match e {
        DirError::NotDir => target_err("it is not a directory".into()),
        DirError::Io(e) => target_err(e.to_string()),
    })?;
    let now = UtcTime::now();
    let name = format!(
        "etcd-credentials-{}-{}.tar.gz",
        ctx.env.unit_name.replace('/', "-"),
        now.stamp()
    );
    let mut out = ArchiveFile::create(&target, &name, 6).map_err(|e| target_err(e.to_string()))?;
    let path = out.final_path().to_path_buf();
    let readme = format!(
        "Client credentials for etcd (from {unit}, {at}).\n\n\
         Endpoints: {connection}\n\n\
         Keep client.key private. Try them with:\n\n  \
         ETCDCTL_API=3 etcdctl --endpoints={connection} \\\n    \
         --cacert=ca.crt --cert=client.crt --key=client.key endpoint health\n",
        unit = ctx.env.unit_name,
        at = now.rfc3339(),
    );
    let write_err = |e: std::io::Error| CredentialsError::Write {
        path: path.clone(),
        reason: e.to_string(),
    };
    for (entry, bytes) in [
        ("ca.crt", ca_pem.as_slice()),
        ("client.crt", cert_pem.as_slice()),
        ("client.key", key_pem.as_slice()),
        ("README.md", readme.as_bytes()),
    ] {
        out.writer()
            .add_file(entry, bytes, now.unix)
            .map_err(write_err)?;
    }
    let published = out.publish().map_err(|e| CredentialsError::Write {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    ctx.progress(&format!(
        "wrote {} ({})",
        published.path.display(),
        human_size(published.bytes)
    ));
    let shown = published.path.display().to_string();
    let mut r = Results::new();
    r.set("credentials.path", shown.clone())?;
    r.set("credentials.sha256", hex(&published.sha256))?;
    r.set("credentials.bytes", published.bytes.to_string())?;
    r.set("connection-string", connection)?;
    r.set(
        "copy.cmd",
        format!("juju scp {}:{shown} .", ctx.env.unit_name),
    )?;
    Ok(r)
}
