//! Units whose etcd this charm did not install (laid out by hand, or by an
//! older charm): never reconfigured, only reported on. They still tell
//! their peers that they hold etcd, and a leader among them records that a
//! cluster exists, so that no unit ever bootstraps a second one beside it.

use super::cluster::{BOOTSTRAPPED, HAS_CONFIG, HAS_DATA, PEER};
use super::{report_health, HookContext};
use crate::error::Error;
use crate::etcd::health;
use crate::etcd::EtcdConfig;
use crate::juju::Status;

pub fn report(ctx: &HookContext) -> Result<(), Error> {
    let tools = ctx.tools;
    let conf = match EtcdConfig::load(ctx.paths.conf()) {
        Ok(c) => c,
        Err(e) => {
            tools.status_set(Status::Blocked, &e.to_string())?;
            return Ok(());
        }
    };
    let name = conf.name.clone().unwrap_or_default();
    let has_data = conf.data_dir().is_some_and(|d| d.join("member").is_dir());
    let endpoint = conf.client_endpoint(ctx.paths.conf())?;
    let rt = crate::actions::runtime()?;
    let health = rt.block_on(health::check(&endpoint, &name));

    if let Some(rid) = tools.relation_ids(PEER)?.into_iter().next() {
        let flag = |b: bool| if b { "true".to_string() } else { String::new() };
        let mut data = vec![
            ("name", name.clone()),
            ("client-url", endpoint.url.clone()),
            (HAS_CONFIG, "true".to_string()),
            (HAS_DATA, flag(has_data)),
            ("started", flag(health.answers_as_itself())),
        ];
        if let Some(url) = conf.peer_urls().into_iter().next() {
            data.push(("peer-url", url));
        }
        tools.relation_set(&rid, &data)?;
    }
    if tools.is_leader()? && !tools.leader_get()?.contains_key(BOOTSTRAPPED) {
        tools.leader_set(&[(BOOTSTRAPPED, name)])?;
    }
    report_health(tools, ctx.paths, &health, None)
}
