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

/// Leader setting: the step of a CA rotation (trust the new CA beside the
/// old, present certificates from it, drop the old).
const ROTATION: &str = "ca-rotation";
const TRUST: &str = "trust";
const SWITCH: &str = "switch";
const DROP: &str = "drop";
/// Peer keys: the new CA this unit has (its digest), the rotation step its
/// etcd runs.
const CA_NEW: &str = "ca-new";
const CA_STEP: &str = "ca-step";

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
    /// A CA rotation this unit takes part in: the new CA's digest.
    pub ca_new: Option<String>,
    /// Whether `ca_new` is known (the provider answered).
    pub ca_known: bool,
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

fn previous_ca(ctx: &HookContext) -> std::path::PathBuf {
    ctx.paths.state_dir().join("tls").join("ca-previous.pem")
}

fn same(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::etcd::snapshot::hex(&Sha256::digest(text.trim().as_bytes())[..6])
}

/// The certificates to run while the provider's CA changes. Members must
/// never meet a certificate they do not trust, so: every member trusts both
/// CAs (still presenting the old certificates), then presents the new ones,
/// then drops the old CA; the leader steps the cluster through, each step
/// a roll. The CA in use when the change was seen is kept in the state dir
/// until the end. Returns the pems and the new CA's digest while rotating.
fn rotate(
    ctx: &HookContext,
    settings: &Settings,
    incoming: TlsPems,
) -> Result<(TlsPems, Option<String>), Error> {
    let Some(live) = on_disk(ctx) else {
        return Ok((incoming, None));
    };
    let path = previous_ca(ctx);
    let fail = |e: std::io::Error| Error::Hook(format!("cannot keep {}: {e}", path.display()));
    let previous = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(_) if same(&live.ca, &incoming.ca) => return Ok((incoming, None)),
        Err(_) => {
            if let Some(dir) = path.parent() {
                crate::fsutil::create_private_dir(dir).map_err(fail)?;
            }
            crate::fsutil::replace_file(&path, live.ca.as_bytes()).map_err(fail)?;
            live.ca.clone()
        }
    };
    if same(&previous, &incoming.ca) {
        // Back to the CA it had: nothing to rotate.
        let _ = std::fs::remove_file(&path);
        return Ok((incoming, None));
    }
    let bundle = format!("{}\n{}", previous.trim(), incoming.ca.trim_start());
    let new = Some(digest(&incoming.ca));
    let pems = match settings.get(ROTATION).map(String::as_str) {
        Some(TRUST) => TlsPems { ca: bundle, ..live },
        Some(SWITCH) => TlsPems {
            ca: bundle,
            ..incoming
        },
        Some(DROP) => incoming,
        _ => live,
    };
    Ok((pems, new))
}

/// Whether the cluster is rotating its CA, or a member has a new CA to
/// rotate in.
fn rotating(ctx: &HookContext, settings: &Settings, rid: Option<&str>) -> bool {
    if settings.get(ROTATION).is_some_and(|s| !s.is_empty()) {
        return true;
    }
    let Some(rid) = rid else {
        return false;
    };
    ctx.tools
        .relation_list(rid)
        .unwrap_or_default()
        .iter()
        .any(|u| {
            ctx.tools
                .relation_get(rid, u)
                .is_ok_and(|d| d.get(CA_NEW).is_some_and(|v| !v.is_empty()))
        })
}

/// Whether this unit's etcd runs TLS now (its config advertises https).
fn runs_tls(ctx: &HookContext) -> bool {
    crate::etcd::EtcdConfig::load(ctx.paths.conf())
        .ok()
        .and_then(|c| c.advertise_client_urls)
        .is_some_and(|u| u.trim_start().starts_with("https://"))
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
    let mut choice = Choice {
        pems: None,
        bridge: false,
        share_client: true,
        hold: None,
        note: None,
        blocked: None,
        ca_new: None,
        ca_known: false,
    };
    let mut stage = settings.get(STAGE).cloned().unwrap_or_default();
    // Certificates to run: the relation's, else the options'.
    // With v4 the client key is this unit's own: never handed to clients,
    // whatever source the files came from later.
    let protocol_file = ctx.paths.state_dir().join("tls").join("protocol");
    let last_protocol = std::fs::read_to_string(&protocol_file).unwrap_or_default();
    choice.share_client = last_protocol.trim() != "v4";
    let source = match certs {
        Certs::Ready { pems, protocol } => {
            choice.share_client = protocol == Protocol::Legacy;
            let name = if choice.share_client { "legacy" } else { "v4" };
            if last_protocol.trim() != name {
                if let Some(dir) = protocol_file.parent() {
                    let _ = crate::fsutil::create_private_dir(dir);
                }
                let _ = crate::fsutil::replace_file(&protocol_file, name.as_bytes());
            }
            Some(pems)
        }
        Certs::Unrelated => {
            if options.tls.is_some() {
                choice.share_client = true;
            }
            if !stage.is_empty() && options.tls.is_none() {
                choice.blocked = Some(
                    "the certificates relation is gone: etcd keeps serving TLS with the certificates it has, which nothing renews now; relate a certificates provider again (going back to plain HTTP is not done automatically)".into(),
                );
            }
            options.tls.clone()
        }
        Certs::Waiting(why) => {
            choice.note = Some(why);
            None
        }
    };
    if let Some(rid) = rid {
        let ready = if source.is_some() { "true" } else { "" };
        ctx.tools.relation_set(rid, &[(READY, ready.into())])?;
    }
    let tls_now = runs_tls(ctx);
    match source {
        Some(pems) => {
            if stage.is_empty() && leader && (fresh || tls_now) {
                // No cluster yet, or one already on TLS: nothing to
                // switch, only certificates to use.
                ctx.tools.leader_set(&[(STAGE, ON.into())])?;
                settings.insert(STAGE.into(), ON.into());
                stage = ON.into();
            }
            match stage.as_str() {
                ON if on_disk(ctx).is_none() && rotating(ctx, settings, rid) => {
                    choice.hold = Some(
                        "waiting for the cluster's CA rotation to finish before joining".into(),
                    );
                }
                ON => {
                    choice.ca_known = true;
                    let (pems, new) = rotate(ctx, settings, pems)?;
                    if new.is_some() && settings.get(ROTATION).is_none() {
                        choice.note = Some(
                            "a new CA arrived: it is rolled in once every unit has its certificates"
                                .into(),
                        );
                    }
                    choice.pems = Some(pems);
                    choice.ca_new = new;
                }
                PEERS => {
                    choice.pems = Some(pems);
                    choice.bridge = true;
                }
                // Already on TLS; the leader records it.
                _ if tls_now => choice.pems = Some(pems),
                _ if fresh => {
                    choice.hold = Some("waiting for the leader to turn TLS on".into());
                }
                _ => {
                    choice.note =
                        Some("TLS is switched on once every unit has its certificates".into())
                }
            }
        }
        None if !stage.is_empty() || tls_now => {
            // Keep serving with the certificates it has.
            choice.pems = on_disk(ctx);
            choice.bridge = stage == PEERS;
        }
        None => {}
    }
    let related = choice.note.is_some() && choice.pems.is_none();
    if choice.pems.is_none() && choice.hold.is_none() {
        if !stage.is_empty() || tls_now {
            // Never fall back to HTTP under members that speak TLS.
            choice.hold = Some(choice.note.clone().unwrap_or_else(|| {
                "the TLS files of this unit are missing; relate a certificates provider".into()
            }));
        } else if related && (fresh || !ctx.paths.conf().exists()) {
            // Related but not answered: do not start on plain HTTP.
            choice.hold = choice.note.clone();
        }
    }
    Ok(choice)
}

/// After this unit's turn: publishes the TLS mode and CA rotation step its
/// etcd runs in (`running`, when nothing is pending and it is healthy) and,
/// on the leader, moves the cluster on once every unit is ready for the
/// next step.
pub fn advance(
    ctx: &HookContext,
    rid: Option<&str>,
    leader: bool,
    settings: &mut Settings,
    running: Option<&str>,
    choice: &Choice,
) -> Result<(), Error> {
    let Some(rid) = rid else {
        return Ok(());
    };
    let step = settings.get(ROTATION).cloned().unwrap_or_default();
    let new = choice.ca_new.clone().unwrap_or_default();
    let mut mine = Vec::new();
    if choice.ca_known {
        // Only when the provider answered: a unit still waiting for its
        // certificates says nothing about the CA.
        mine.push((CA_NEW, new.clone()));
    }
    if let Some(mode) = running {
        mine.push((MODE, mode.to_string()));
        if choice.ca_known {
            let running_step = if new.is_empty() {
                String::new()
            } else {
                step.clone()
            };
            if running_step == DROP {
                // Done: only the new CA is trusted now.
                let _ = std::fs::remove_file(previous_ca(ctx));
                mine.retain(|(k, _)| *k != CA_NEW);
                mine.push((CA_NEW, String::new()));
                mine.push((CA_STEP, String::new()));
            } else if running_step.is_empty() {
                mine.push((CA_STEP, String::new()));
            } else {
                mine.push((CA_STEP, format!("{running_step}:{new}")));
            }
        }
    }
    if !mine.is_empty() {
        ctx.tools.relation_set(rid, &mine)?;
    }
    if !leader {
        return Ok(());
    }
    let mut units = vec![ctx.tools.relation_get(rid, &ctx.env.unit_name)?];
    for u in ctx.tools.relation_list(rid)? {
        units.push(ctx.tools.relation_get(rid, &u)?);
    }
    let get = |d: &Settings, k: &str| d.get(k).cloned().unwrap_or_default();
    let all = |k: &str, v: &str| units.iter().all(|d| get(d, k) == v);
    let stage = settings.get(STAGE).cloned().unwrap_or_default();
    let next_stage = match stage.as_str() {
        "" if all(READY, "true") => Some(PEERS),
        PEERS if all(MODE, PEERS) => Some(ON),
        _ => None,
    };
    if let Some(next) = next_stage {
        ctx.log(&format!("switching the cluster to TLS: step {next}"));
        ctx.tools.leader_set(&[(STAGE, next.to_string())])?;
        settings.insert(STAGE.into(), next.into());
    }
    // The rotation counts the members that run (a unit still joining
    // waits for it to end); each step needs all of them on the same new CA.
    let running: Vec<&Settings> = units.iter().filter(|d| d.contains_key("started")).collect();
    let first_new = running.first().map(|d| get(d, CA_NEW)).unwrap_or_default();
    let same_new = !first_new.is_empty() && running.iter().all(|d| get(d, CA_NEW) == first_new);
    let at = |s: &str| {
        same_new
            && running
                .iter()
                .all(|d| get(d, CA_STEP) == format!("{s}:{first_new}"))
    };
    let next_step = match step.as_str() {
        "" if same_new => Some(TRUST),
        TRUST if at(TRUST) => Some(SWITCH),
        SWITCH if at(SWITCH) => Some(DROP),
        DROP if running.iter().all(|d| get(d, CA_NEW).is_empty()) => Some(""),
        _ => None,
    };
    if let Some(next) = next_step {
        ctx.log(&format!(
            "rotating the CA: step {}",
            if next.is_empty() { "done" } else { next }
        ));
        ctx.tools.leader_set(&[(ROTATION, next.to_string())])?;
        if next.is_empty() {
            settings.remove(ROTATION);
        } else {
            settings.insert(ROTATION.into(), next.into());
        }
    }
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
