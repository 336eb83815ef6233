//! Where this unit's TLS comes from, and switching a running cluster from
//! plain HTTP to TLS when the `certificates` relation arrives.
//!
//! The relation wins over the `tls_*` options (it renews and covers new
//! units). A cluster that started with TLS from the relation (or the
//! options) serves TLS from its first start. A running HTTP cluster moves in
//! two rolls, each one unit at a time (`restart.rs`), stepped by the leader
//! (setting `tls`): `peers`, every member gets its TLS identity for peers
//! but still listens on HTTP, so it can reach members that already moved;
//! then `on`, each member first re-advertises its peer URL as https
//! (MemberUpdate) and restarts serving clients and peers over TLS only.

use super::HookContext;
use crate::error::Error;
use crate::etcd::render::{Options, TlsPems};
use crate::juju::Settings;
use crate::relations::certificates::{self, Certs, Protocol};

/// Leader setting: how far a running cluster has moved to TLS.
const STAGE: &str = "tls";
const PEERS: &str = "peers";
const ON: &str = "on";
/// Peer keys: this unit has its certificates / runs in this TLS mode.
const READY: &str = "tls-ready";
const MODE: &str = "tls-mode";

pub struct Choice {
    pub pems: Option<TlsPems>,
    /// HTTP, with the TLS identity for peers (the first roll).
    pub bridge: bool,
    /// Clients on `db` get the shared client pair (legacy and options).
    pub share_client: bool,
    /// Why this unit cannot start yet (no certificates while related).
    pub hold: Option<String>,
    /// Something for the status.
    pub note: Option<String>,
    /// What the operator must do (the status is blocked with it).
    pub blocked: Option<String>,
}

/// The TLS files on disk: what etcd runs with, kept when the relation has
/// nothing newer to give.
fn on_disk(ctx: &HookContext) -> Option<TlsPems> {
    let dir = ctx.paths.conf().parent()?.to_path_buf();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
    Some(TlsPems {
        ca: read("ca.crt")?,
        server_cert: read("server.crt")?,
        server_key: read("server.key")?,
        client_cert: read("client.crt")?,
        client_key: read("client.key")?,
    })
}

/// Decides this unit's TLS. `fresh`: no cluster exists yet, so it starts
/// straight on TLS when it has certificates.
pub fn choose(
    ctx: &HookContext,
    options: &Options,
    settings: &mut Settings,
    leader: bool,
    fresh: bool,
    rid: Option<&str>,
    addresses: &[String],
) -> Result<Choice, Error> {
    let req = certificates::Request::new(&ctx.env.unit_name, addresses);
    let broken = format!("{}-relation-broken", certificates::ENDPOINT);
    let certs = if ctx.env.hook_name.as_deref() == Some(broken.as_str()) {
        // Juju still lists the relation while it breaks.
        Certs::Unrelated
    } else {
        certificates::exchange(ctx.tools, &ctx.paths.state_dir(), &req)
            .map_err(|e| Error::Hook(e.to_string()))?
    };
    let stage = settings.get(STAGE).cloned().unwrap_or_default();
    if let Some(rid) = rid {
        let ready = matches!(certs, Certs::Ready { .. });
        ctx.tools
            .relation_set(rid, &[(READY, if ready { "true" } else { "" }.into())])?;
    }
    let mut choice = Choice {
        pems: None,
        bridge: false,
        share_client: true,
        hold: None,
        note: None,
        blocked: None,
    };
    match certs {
        Certs::Ready { pems, protocol } => {
            if (fresh || options.tls.is_some()) && leader && stage.is_empty() {
                // No cluster yet, or one already on TLS (from the options):
                // nothing to switch, only certificates to use.
                ctx.tools.leader_set(&[(STAGE, ON.into())])?;
                settings.insert(STAGE.into(), ON.into());
            }
            match settings.get(STAGE).map(String::as_str) {
                Some(ON) => choice.pems = Some(pems),
                Some(PEERS) => {
                    choice.pems = Some(pems);
                    choice.bridge = true;
                }
                _ if options.tls.is_some() => choice.pems = options.tls.clone(),
                _ if fresh => {
                    choice.hold = Some("waiting for the leader to turn TLS on".into());
                }
                _ => {
                    choice.note =
                        Some("TLS is switched on once every unit has its certificates".into())
                }
            }
            choice.share_client = protocol == Protocol::Legacy;
        }
        Certs::Waiting(why) => {
            if stage == ON || stage == PEERS {
                // Keep serving with the certificates it has, if any.
                choice.pems = on_disk(ctx);
                choice.bridge = stage == PEERS;
            }
            let started = ctx.paths.conf().exists();
            if choice.pems.is_none() && (fresh || !started || !stage.is_empty()) {
                choice.hold = Some(why.clone());
            }
            choice.note = Some(why);
        }
        Certs::Unrelated if !stage.is_empty() => {
            choice.pems = on_disk(ctx);
            choice.bridge = stage == PEERS;
            choice.blocked = Some(
                "the certificates relation is gone: etcd keeps serving TLS with the certificates it has, which nothing renews now; relate a certificates provider again (going back to plain HTTP is not done automatically)".into(),
            );
        }
        Certs::Unrelated => choice.pems = options.tls.clone(),
    }
    if choice.pems.is_none() && choice.hold.is_none() && !stage.is_empty() {
        // The files are gone too: never fall back to HTTP under members
        // that speak TLS.
        choice.hold =
            Some("the TLS files of this unit are missing; relate a certificates provider".into());
    }
    Ok(choice)
}

/// After this unit's turn: publishes the TLS mode its etcd runs in (when
/// nothing is pending) and, on the leader, moves the switch on once every
/// unit is ready for the next step.
pub fn advance(
    ctx: &HookContext,
    rid: Option<&str>,
    leader: bool,
    settings: &mut Settings,
    running: Option<&str>,
) -> Result<(), Error> {
    let Some(rid) = rid else {
        return Ok(());
    };
    if let Some(mode) = running {
        ctx.tools.relation_set(rid, &[(MODE, mode.to_string())])?;
    }
    if !leader {
        return Ok(());
    }
    let stage = settings.get(STAGE).cloned().unwrap_or_default();
    let mut units = vec![ctx.tools.relation_get(rid, &ctx.env.unit_name)?];
    for u in ctx.tools.relation_list(rid)? {
        units.push(ctx.tools.relation_get(rid, &u)?);
    }
    let all = |k: &str, v: &str| {
        units
            .iter()
            .all(|d| d.get(k).map(String::as_str) == Some(v))
    };
    let next = match stage.as_str() {
        "" if all(READY, "true") => PEERS,
        PEERS if all(MODE, PEERS) => ON,
        _ => return Ok(()),
    };
    ctx.log(&format!("switching the cluster to TLS: step {next}"));
    ctx.tools.leader_set(&[(STAGE, next.to_string())])?;
    settings.insert(STAGE.into(), next.into());
    Ok(())
}

/// The mode a plan runs etcd in, as published.
pub fn mode_of(pems: bool, bridge: bool) -> &'static str {
    match (pems, bridge) {
        (false, _) => "off",
        (true, true) => PEERS,
        (true, false) => ON,
    }
}
