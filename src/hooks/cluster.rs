//! Converging a unit: config rendered, etcd running, in one cluster.
//!
//! The leader makes the cluster token and bootstraps the cluster alone;
//! every other unit publishes its peer URL on the `cluster` peer relation
//! and waits. The leader adds one waiting unit at a time as a learner
//! (no vote, so the cluster keeps its quorum while the new member syncs),
//! tells it the initial cluster through leader settings (`join-<name>`),
//! and promotes it once it has caught up. A departing unit removes itself;
//! the leader removes any member whose unit is gone. Whatever etcd refuses
//! for a while (promotion before the learner is in sync, a member list
//! without quorum) is retried within a bounded time, then left for the next
//! hook with the status saying so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Map;

use super::{report_health, restart, tls, HookContext};
use crate::error::Error;
use crate::etcd::config::ClientEndpoint;
use crate::etcd::health::{self, Health};
use crate::etcd::render::{Bootstrap, Member, Options, TlsFiles, TlsPems};
use crate::etcd::{EtcdConfig, LocalMember, MemberInfo};
use crate::fsutil;
use crate::install::{self, Installed};
use crate::juju::{LogLevel, Settings, Status};
use crate::relations::{self, certificates::ENDPOINT};
use crate::roll;
use crate::service;

pub const PEER: &str = "cluster";
/// Clients relate here (interface `etcd`).
pub const DB: &str = "db";
const TOKEN: &str = "token";
/// Leader setting: a cluster exists (its value: who made or held it).
pub(super) const BOOTSTRAPPED: &str = "bootstrapped";
/// Leader setting layer-etcd keeps (`etcd0=https://…:2380,…`): its
/// cluster exists.
const LAYER_ETCD_CLUSTER: &str = "cluster";
/// Peer keys: this unit has an etcd config file / a data dir with a member.
pub(super) const HAS_CONFIG: &str = "etcd-config";
pub(super) const HAS_DATA: &str = "etcd-data";
/// How long a hook waits for etcd to serve after starting it.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the leader retries a promotion etcd refuses for now.
const PROMOTE_LIMIT: Duration = Duration::from_secs(30);

fn join_key(name: &str) -> String {
    format!("join-{name}")
}

/// The member name for a unit: `etcd/3` → `etcd-3`.
pub fn member_name(unit: &str) -> String {
    unit.replace('/', "-")
}

pub fn options(ctx: &HookContext) -> Result<Options, String> {
    let map: Map<String, serde_json::Value> = ctx.tools.config().map_err(|e| e.to_string())?;
    Options::from_config(&map).map_err(|e| e.to_string())
}

fn random_token() -> String {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    format!("etcd-cluster-{}", crate::etcd::snapshot::hex(&bytes))
}

/// Checks this unit's member until it is healthy (or a learner, which is
/// all a joining member can be) or `limit` passes; returns the last check.
fn wait_for_member(
    rt: &tokio::runtime::Runtime,
    endpoint: &ClientEndpoint,
    name: &str,
    limit: Duration,
) -> Health {
    let deadline = Instant::now() + limit;
    loop {
        let h = rt.block_on(health::check(endpoint, name));
        let settled = h.serving().is_some() || matches!(h, Health::Learner { .. });
        // A member that is not answering and whose process is gone will not
        // answer by waiting (systemd says failed, or is restarting it).
        let gone = !h.answers_as_itself() && !service::is_active();
        if settled || gone || Instant::now() >= deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether a cluster exists that no leader recorded: one layer-etcd left,
/// or one a peer holds (an etcd config, data, a started member). Peers
/// that cannot be read count as holding one: a second cluster is never
/// started on a guess. Returns who holds it.
fn existing_cluster(ctx: &HookContext, rid: Option<&str>, settings: &Settings) -> Option<String> {
    if settings.contains_key(LAYER_ETCD_CLUSTER) {
        return Some("layer-etcd".into());
    }
    let rid = rid?;
    match peers(ctx, rid) {
        Ok(peers) => peers
            .into_iter()
            .find(|(_, d)| {
                [HAS_CONFIG, HAS_DATA, "started"]
                    .iter()
                    .any(|k| d.contains_key(*k))
            })
            .map(|(unit, d)| d.get("name").cloned().unwrap_or(unit)),
        Err(e) => Some(format!("unknown (the peer relation cannot be read: {e})")),
    }
}

/// What the peers published: unit → settings. Any read failing fails it
/// all: the leader never acts on a partial view.
fn peers(ctx: &HookContext, rid: &str) -> Result<BTreeMap<String, Settings>, String> {
    let mut out = BTreeMap::new();
    for unit in ctx.tools.relation_list(rid).map_err(|e| e.to_string())? {
        let data = ctx
            .tools
            .relation_get(rid, &unit)
            .map_err(|e| e.to_string())?;
        out.insert(unit, data);
    }
    Ok(out)
}

/// The client URL of a peer whose etcd has started.
fn started_peer(ctx: &HookContext, rid: &str) -> Option<String> {
    started_peers(ctx, rid).into_iter().next()
}

/// The client URLs of the peers whose etcd has started.
fn started_peers(ctx: &HookContext, rid: &str) -> Vec<String> {
    peers(ctx, rid)
        .unwrap_or_default()
        .into_values()
        .filter(|d| d.get("started").is_some())
        .filter_map(|d| d.get("client-url").cloned())
        .collect()
}

/// A member's client endpoint, reached with this unit's client identity.
fn peer_endpoint(url: &str, tls: Option<&TlsFiles>, conf: &std::path::Path) -> ClientEndpoint {
    let dir = conf.parent().unwrap_or(std::path::Path::new("/"));
    ClientEndpoint {
        url: url.to_string(),
        tls: tls
            .filter(|_| url.starts_with("https://"))
            .map(|t| crate::etcd::config::ClientTls {
                ca_file: Some(t.ca.clone()),
                cert_file: Some(dir.join("client.crt")),
                key_file: Some(dir.join("client.key")),
            }),
    }
}

pub(super) fn left_marker(ctx: &HookContext) -> std::path::PathBuf {
    ctx.paths.state_dir().join("left-cluster")
}

/// What one hook knows about this unit while it converges.
struct Turn<'a> {
    ctx: &'a HookContext<'a>,
    rid: Option<String>,
    leader: bool,
    settings: Settings,
    member: Member,
    current: Option<EtcdConfig>,
    initialized: bool,
}

/// `departed`: in `cluster-relation-departed` on a staying unit, the unit
/// that left (the leader removes its member).
pub fn converge(ctx: &HookContext, departed: Option<&str>) -> Result<(), Error> {
    let tools = ctx.tools;
    let Some((mut inst, options, refused)) = prepare(ctx)? else {
        return Ok(());
    };
    let address = tools.ingress_address(PEER)?;
    let conf_path = ctx.paths.conf();
    let current = EtcdConfig::load(conf_path).ok();
    let derived = member_name(&ctx.env.unit_name);
    let (name, data_dir, relocate) = super::adopt::identity(ctx, current.as_ref(), &derived);
    let initialized = data_dir.join("member").is_dir() || relocate.is_some();

    let leader = tools.is_leader()?;
    let mut settings = tools.leader_get()?;
    if leader && !settings.contains_key(TOKEN) {
        let token = random_token();
        tools.leader_set(&[(TOKEN, token.clone())])?;
        settings.insert(TOKEN.into(), token);
    }
    let token = settings.get(TOKEN).cloned().unwrap_or_default();
    super::snapd::follow(ctx, &inst, &options.snapd_refresh, leader, &mut settings);
    if leader {
        share_channel(ctx, &inst, &settings);
    }
    let mut member = Member {
        name: name.clone(),
        data_dir: data_dir.clone(),
        address: address.clone(),
        options: options.clone(),
        bootstrap: Bootstrap {
            initial_cluster: String::new(),
            token,
            state: "new".into(),
        },
        tls: None,
        bridge: false,
    };
    let rid = tools.relation_ids(PEER)?.into_iter().next();
    // Part of the certificate's names (a guess would re-issue it); asked
    // only when there is a certificates relation.
    let db_address = if tools.relation_ids(ENDPOINT)?.is_empty() {
        String::new()
    } else {
        tools.ingress_address(DB)?
    };
    let fresh = !initialized && !settings.contains_key(BOOTSTRAPPED);
    let choice = tls::choose(
        ctx,
        &options,
        &mut settings,
        leader,
        fresh,
        rid.as_deref(),
        &[address, db_address],
    )?;
    if let Some(why) = &choice.hold {
        return Ok(tools.status_set(Status::Waiting, why)?);
    }
    let tls = choice.pems.clone();
    if tls.is_some() {
        member.tls = Some(tls_files(conf_path));
        member.bridge = choice.bridge;
    }
    let mut turn = Turn {
        ctx,
        rid,
        leader,
        settings,
        member,
        current,
        initialized,
    };
    turn.publish_peer()?;
    let Some(bootstrap) = turn.bootstrap(departed)? else {
        // Never start a second cluster: only the leader bootstraps, once.
        tools.status_set(
            Status::Waiting,
            "Waiting for the leader to add this unit to the cluster",
        )?;
        return Ok(());
    };
    turn.member.bootstrap = bootstrap;
    let plan = restart::Plan {
        conf: conf_path.to_path_buf(),
        text: turn.member.render(),
        tls: tls.clone(),
        channel: options.channel.clone(),
        relocate: relocate.map(|from| (from, data_dir.clone())),
    };
    if let Some(parent) = data_dir.parent() {
        let _ = fsutil::create_private_dir(parent);
    }
    let rt = crate::actions::runtime()?;
    let (restarted, pending) = turn.bring_up(&rt, &plan, &mut inst)?;
    let _ = tools.open_port(options.port);

    let endpoint = EtcdConfig::load(conf_path)?.client_endpoint(conf_path)?;
    let health = turn.check(&rt, &endpoint, restarted)?;
    let rolling = restart::finish(
        ctx,
        turn.rid.as_deref(),
        leader,
        &mut turn.settings,
        &health,
        pending.is_some(),
    )?;
    let pending = pending.or(rolling).or(choice.note.clone());
    let settled = pending.is_none() && health.serving().is_some();
    let mode = settled.then(|| tls::mode_of(tls.is_some(), turn.member.bridge));
    let rid = turn.rid.clone();
    tls::advance(
        ctx,
        rid.as_deref(),
        leader,
        &mut turn.settings,
        mode,
        &choice,
    )?;
    let Some(version) = health
        .status()
        .filter(|_| health.answers_as_itself())
        .map(|s| s.version.clone())
    else {
        return report_health(tools, ctx.paths, &health, pending.as_deref());
    };
    let _ = tools.application_version_set(&version);
    if let Some(rid) = &rid {
        tools.relation_set(rid, &[("started", "true".to_string())])?;
    }
    let waiting = turn.lead(&rt, &health, &endpoint, departed);
    // Membership may have changed (a promotion): look again.
    let health = rt.block_on(health::check(&endpoint, &name));
    let shared = tls.as_ref().filter(|_| choice.share_client);
    let mut published = Vec::new();
    if let Health::Healthy { status, members } = &health {
        publish_clients(ctx, members, &status.version, tls.as_ref(), shared);
        published.extend(relations::proxy::publish(
            tools,
            members,
            tls.as_ref(),
            shared,
        ));
    }
    // Leader-only requests: the leader sends them once it knows the
    // members; every other unit withdraws its copy, healthy or not.
    let healthy = match &health {
        Health::Healthy { members, .. } => Some(members.as_slice()),
        _ => None,
    };
    if !leader || healthy.is_some() {
        let app = ctx.env.unit_name.split('/').next().unwrap_or_default();
        let members = healthy.unwrap_or(&[]);
        published.extend(relations::prometheus::publish(
            tools,
            app,
            leader,
            members,
            tls.as_ref(),
            shared,
        ));
        published.extend(relations::grafana::publish(tools, app, leader));
    }
    for e in &published {
        ctx.log(e);
    }
    let pending: Vec<String> = pending.into_iter().chain(waiting).collect();
    let pending = (!pending.is_empty()).then(|| pending.join("; "));
    report_health(tools, ctx.paths, &health, pending.as_deref())?;
    let storage_refused = super::storage::refusal(ctx.paths);
    if let Some(why) = refused
        .as_ref()
        .or(choice.blocked.as_ref())
        .or(storage_refused.as_ref())
    {
        tools.status_set(Status::Blocked, why)?;
    }
    Ok(())
}

/// Installed and configured enough to converge: the installation, the
/// checked options, and a refused channel move (the unit keeps its
/// channel and goes on managing the cluster; the status says why). None
/// when the hook is done (the status says why).
fn prepare(ctx: &HookContext) -> Result<Option<(Installed, Options, Option<String>)>, Error> {
    let tools = ctx.tools;
    let inst = match Installed::load(ctx.paths) {
        Some(i) => Some(i),
        // Not installed and no config: the install hook could not finish
        // (bad options, snap store away); try again now.
        None if !ctx.paths.conf().exists() => super::install_etcd(ctx)?,
        // Left by layer-etcd until `juju refresh --switch`: taken over.
        None => super::adopt::layer_etcd(ctx)?,
    };
    let Some(mut inst) = inst else {
        // etcd laid out by hand (or by an older charm): report only.
        super::unmanaged::report(ctx)?;
        return Ok(None);
    };
    if let Some(why) = super::storage::guard(ctx.paths) {
        tools.status_set(Status::Blocked, &why)?;
        return Ok(None);
    }
    if let Ok(left) = std::fs::read_to_string(left_marker(ctx)) {
        // Leaving: a failed removal keeps its blocked status and etcd.
        if !left.starts_with(super::leave::REMOVE_FAILED) {
            tools.status_set(
                Status::Maintenance,
                "This unit left the cluster and is being removed",
            )?;
        }
        return Ok(None);
    }
    let mut options = match options(ctx) {
        Ok(o) => o,
        Err(msg) => {
            tools.status_set(Status::Blocked, &msg)?;
            return Ok(None);
        }
    };
    let refused = channel_move(ctx, &inst, &options).err();
    if refused.is_some() {
        options.channel = None;
    }
    if ctx.env.hook_name.as_deref() == Some("upgrade-charm") {
        let resource = tools.resource_get(install::RESOURCE)?;
        match install::follow_resource(ctx.paths, &mut inst, resource.as_deref()) {
            // The running etcd is the old binary until its turn to restart.
            Ok(install::NewResource::Installed) => restart::note_new_binary(ctx.paths),
            Ok(install::NewResource::Snap(file)) => restart::note_snap_file(ctx.paths, &file),
            Ok(install::NewResource::None) => {}
            Err(e) => {
                tools.status_set(Status::Blocked, &e.to_string())?;
                return Ok(None);
            }
        }
    }
    Ok(Some((inst, options, refused)))
}

/// Leader setting: the snap channel the leader runs, which a unit joining
/// under `channel: auto` installs (not the default, which may be a minor
/// version the cluster has left).
pub(super) const SNAP_CHANNEL: &str = "snap-channel";

fn share_channel(ctx: &HookContext, inst: &Installed, settings: &Settings) {
    let Some(channel) = inst.channel.as_ref().filter(|_| inst.source == "snap") else {
        return;
    };
    if settings.get(SNAP_CHANNEL) != Some(channel) {
        let _ = ctx.tools.leader_set(&[(SNAP_CHANNEL, channel.clone())]);
    }
}

/// A channel change on a running unit, checked against etcd's upgrade
/// path before anything moves.
fn channel_move(ctx: &HookContext, inst: &Installed, options: &Options) -> Result<(), String> {
    let Some(to) = options.channel.as_deref() else {
        return Ok(());
    };
    let conf_path = ctx.paths.conf();
    if inst.source != "snap" || inst.channel.as_deref() == Some(to) || !conf_path.exists() {
        return Ok(());
    }
    // The members' versions matter only into 3.6, or when the installed
    // channel names no version; otherwise the channels tell all.
    use crate::upgrade::track;
    let from = inst.channel.as_deref();
    if from.and_then(track).is_some() && track(to).is_some_and(|t| t != (3, 6)) {
        return crate::upgrade::check(from, to, &[]);
    }
    let versions = match EtcdConfig::load(conf_path).and_then(|c| c.client_endpoint(conf_path)) {
        Ok(endpoint) => crate::actions::runtime()
            .map(|rt| rt.block_on(crate::upgrade::member_versions(&endpoint)))
            .unwrap_or_else(|_| vec![None]),
        Err(_) => vec![None],
    };
    crate::upgrade::check(inst.channel.as_deref(), to, &versions)
}

/// The member's name and data dir: kept once it has data (a restore or an
/// older charm may have chosen them), else derived from the unit's name.
impl Turn<'_> {
    /// What this unit tells its peers: its name and URLs, whether it holds
    /// an etcd config or data.
    fn publish_peer(&self) -> Result<(), Error> {
        let Some(rid) = &self.rid else {
            return Ok(());
        };
        let flag = |b: bool| if b { "true".to_string() } else { String::new() };
        self.ctx.tools.relation_set(
            rid,
            &[
                ("name", self.member.name.clone()),
                ("peer-url", self.member.peer_url()),
                ("client-url", self.member.client_url()),
                (HAS_CONFIG, flag(self.current.is_some())),
                (HAS_DATA, flag(self.initialized)),
            ],
        )?;
        Ok(())
    }

    fn endpoint_of(&self, url: &str) -> ClientEndpoint {
        peer_endpoint(url, self.member.tls.as_ref(), self.ctx.paths.conf())
    }

    /// How this member comes to be in its cluster: as it is (it has data),
    /// as the one cluster (the leader, once, when none exists), or as the
    /// leader told it to join. None: wait.
    fn bootstrap(&mut self, departed: Option<&str>) -> Result<Option<Bootstrap>, Error> {
        let (tools, ctx) = (self.ctx.tools, self.ctx);
        let name = self.member.name.clone();
        let token = self.member.bootstrap.token.clone();
        if self.leader && !self.settings.contains_key(BOOTSTRAPPED) {
            // A cluster exists (this member's, or one a peer holds): record
            // it so that no leader ever bootstraps another.
            let held = if self.initialized {
                Some(name.clone())
            } else {
                existing_cluster(ctx, self.rid.as_deref(), &self.settings)
            };
            if let Some(who) = held {
                tools.leader_set(&[(BOOTSTRAPPED, who.clone())])?;
                self.settings.insert(BOOTSTRAPPED.into(), who);
            }
        }
        // A leader that has not joined the cluster yet adds itself through a
        // member that has.
        if self.leader
            && !self.initialized
            && self.settings.contains_key(BOOTSTRAPPED)
            && !self.settings.contains_key(&join_key(&name))
        {
            if let Some(rid) = &self.rid {
                let rt = crate::actions::runtime()?;
                if let Some(url) = started_peer(ctx, rid) {
                    let endpoint = self.endpoint_of(&url);
                    let note =
                        manage_members(ctx, &rt, &endpoint, rid, &self.member, None, departed);
                    if let Some(n) = note {
                        ctx.log(&n);
                    }
                    self.settings = tools.leader_get()?;
                }
            }
        }
        let bootstrapping =
            !self.initialized && self.leader && !self.settings.contains_key(BOOTSTRAPPED);
        if bootstrapping {
            // Recorded before etcd starts: whatever happens next, no other
            // leader bootstraps a second cluster.
            tools.leader_set(&[(BOOTSTRAPPED, name.clone())])?;
        }
        Ok(if self.initialized {
            // etcd ignores these once it has data; keep them as they are so
            // a config change never looks like a new cluster.
            let c = self.current.clone().unwrap_or_default();
            Some(Bootstrap {
                initial_cluster: c
                    .initial_cluster
                    .unwrap_or_else(|| format!("{name}={}", self.member.peer_url())),
                token: c.initial_cluster_token.unwrap_or(token),
                state: c.initial_cluster_state.unwrap_or_else(|| "new".into()),
            })
        } else if bootstrapping {
            Some(Bootstrap {
                initial_cluster: format!("{name}={}", self.member.peer_url()),
                token,
                state: "new".into(),
            })
        } else {
            self.settings.get(&join_key(&name)).map(|ic| Bootstrap {
                initial_cluster: ic.clone(),
                token,
                state: "existing".into(),
            })
        })
    }

    /// The client endpoints of the peers whose etcd has started.
    fn others(&self) -> Vec<ClientEndpoint> {
        self.rid
            .as_deref()
            .map(|rid| started_peers(self.ctx, rid))
            .unwrap_or_default()
            .iter()
            .map(|url| self.endpoint_of(url))
            .collect()
    }

    /// Gets etcd running the plan: at once when it is not running (the
    /// cluster learns a new peer URL first), else in this unit's turn of
    /// the rolling restart. Returns whether it (re)started, and what it
    /// waits for.
    fn bring_up(
        &mut self,
        rt: &tokio::runtime::Runtime,
        plan: &restart::Plan,
        inst: &mut Installed,
    ) -> Result<(bool, Option<String>), Error> {
        let ctx = self.ctx;
        let conf_path = ctx.paths.conf();
        let others = self.others();
        let (name, peer_url) = (self.member.name.clone(), self.member.peer_url());
        if !service::is_active() {
            let _moving = match &plan.relocate {
                Some(_) => match restart::stop_and_move(ctx, plan)? {
                    Some(lock) => Some(lock),
                    None => return Ok((false, Some("a snapshot or restore is running".into()))),
                },
                None => None,
            };
            plan.apply(ctx.paths, inst)?;
            plan.install_pending_snap(ctx.paths, inst)?;
            let down = Health::Down {
                detail: String::new(),
            };
            let live = EtcdConfig::load(conf_path)?.client_endpoint(conf_path)?;
            if let Err(why) = roll::readvertise(rt, &down, &live, &others, &name, &peer_url) {
                ctx.log(&why);
            }
            let _ = service::enable();
            match service::start() {
                Ok(()) => restart::started(ctx.paths),
                // The status says what systemd and etcd's log say; the next
                // hook (update-status at the latest) tries again.
                Err(e) => ctx.log(&format!("etcd did not start: {e}")),
            }
            return Ok((true, None));
        }
        let live = EtcdConfig::load(conf_path)?.client_endpoint(conf_path)?;
        let tls = self.member.tls.clone();
        let reach = |url: &str| peer_endpoint(url, tls.as_ref(), conf_path);
        let mut settings = std::mem::take(&mut self.settings);
        let turn = restart::take_turn(
            ctx,
            rt,
            self.rid.as_deref(),
            self.leader,
            &mut settings,
            plan,
            inst,
            (&live, &name, &peer_url),
            &others,
            &reach,
        );
        self.settings = settings;
        Ok(match turn? {
            restart::Turn::Done { restarted } => (restarted, None),
            restart::Turn::Waiting(why) => (false, Some(why)),
        })
    }

    /// This unit's member's health (after a (re)start, given time to find
    /// its leader); a member serving on a peer URL the cluster does not
    /// know is re-advertised.
    fn check(
        &self,
        rt: &tokio::runtime::Runtime,
        endpoint: &ClientEndpoint,
        started: bool,
    ) -> Result<Health, Error> {
        let limit = if started { START_LIMIT } else { Duration::ZERO };
        let (name, peer_url) = (&self.member.name, self.member.peer_url());
        let health = wait_for_member(rt, endpoint, name, limit);
        if let Some((status, members, _)) = health.serving() {
            let known = members
                .iter()
                .any(|m| m.id == status.member_id && m.peer_urls.contains(&peer_url));
            if !known {
                let others = self.others();
                if let Err(why) = roll::readvertise(rt, &health, endpoint, &others, name, &peer_url)
                {
                    self.ctx.log(&why);
                }
            }
        }
        Ok(health)
    }

    /// The leader's membership work (through this member when healthy,
    /// else through a started peer); what is still pending.
    fn lead(
        &self,
        rt: &tokio::runtime::Runtime,
        health: &Health,
        endpoint: &ClientEndpoint,
        departed: Option<&str>,
    ) -> Option<String> {
        // Without quorum no membership change can commit: nothing to try.
        if !self.leader || matches!(health, Health::NoQuorum { .. }) {
            return None;
        }
        let rid = self.rid.as_deref()?;
        let my_id = health.status().map(|s| s.member_id);
        // A leader whose own member cannot change the membership (a
        // learner) goes through a started peer.
        let via = if matches!(health, Health::Healthy { .. }) {
            Some(endpoint.clone())
        } else {
            started_peer(self.ctx, rid).map(|url| self.endpoint_of(&url))
        };
        match via {
            Some(via) => manage_members(self.ctx, rt, &via, rid, &self.member, my_id, departed),
            None => Some("no member answers to manage the cluster through".into()),
        }
    }
}

/// The TLS files beside the config, where the old charm kept them.
fn tls_files(conf: &std::path::Path) -> TlsFiles {
    let dir = conf.parent().unwrap_or(std::path::Path::new("/"));
    TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    }
}

/// The `db` relation (interface `etcd`, as the old charm provided it):
/// every member's client URL, and with TLS the client credentials, on each
/// unit's side of every `db` relation. Kept current by every hook, so it
/// follows units joining and leaving.
fn publish_clients(
    ctx: &HookContext,
    members: &[MemberInfo],
    version: &str,
    tls: Option<&TlsPems>,
    shared: Option<&TlsPems>,
) {
    let Ok(ids) = ctx.tools.relation_ids(DB) else {
        return;
    };
    // While a cluster moves to TLS, clients get the members that already
    // serve it (one client config never mixes http and https), and the
    // credentials from the start, so they reach each member as it moves.
    let urls = members
        .iter()
        .filter(|m| !m.is_learner)
        .flat_map(|m| m.client_urls.iter().cloned());
    let (secure, plain): (Vec<String>, Vec<String>) = urls.partition(|u| u.starts_with("https://"));
    let mut urls = if secure.is_empty() { plain } else { secure };
    urls.sort();
    urls.dedup();
    if urls.is_empty() {
        return;
    }
    let mut data = vec![
        ("connection_string", urls.join(",")),
        ("version", version.to_string()),
    ];
    if let Some(t) = tls {
        data.push(("client_ca", t.ca.clone()));
    }
    // With a v4 provider there is no shared client pair: clients bring a
    // certificate of their own from the same CA.
    let (cert, key) = shared
        .map(|t| (t.client_cert.clone(), t.client_key.clone()))
        .unwrap_or_default();
    data.push(("client_cert", cert));
    data.push(("client_key", key));
    for id in ids {
        if let Err(e) = ctx.tools.relation_set(&id, &data) {
            ctx.log(&format!("cannot update the {DB} relation {id}: {e}"));
        }
    }
}

/// The leader's part: remove the member of a unit that just departed,
/// promote learners that caught up, add the next waiting unit (this one
/// too, when the leader itself has not joined). Never removes a member
/// for any other reason. Returns what is still pending, for the status.
fn manage_members(
    ctx: &HookContext,
    rt: &tokio::runtime::Runtime,
    endpoint: &ClientEndpoint,
    rid: &str,
    me: &Member,
    my_id: Option<u64>,
    departed: Option<&str>,
) -> Option<String> {
    let tools = ctx.tools;
    let mut peers = match peers(ctx, rid) {
        Ok(p) => p,
        Err(e) => {
            return Some(format!(
                "cannot read the peer relation ({e}); members are managed on the next hook"
            ))
        }
    };
    let client = match rt.block_on(LocalMember::connect(endpoint)) {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot manage members yet: {e}")),
    };
    let mut members = match rt.block_on(client.members()) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot list members yet: {e}")),
    };
    let is_me = |m: &MemberInfo| Some(m.id) == my_id;
    let matches = |m: &MemberInfo, d: &Settings| {
        d.get("peer-url").is_some_and(|u| m.peer_urls.contains(u))
            || d.get("name")
                .is_some_and(|n| !m.name.is_empty() && m.name == *n)
    };

    // The member of the unit that just left, found by what it published
    // (still readable in its departed hook) or by its derived name.
    if let Some(gone) = departed {
        let mut data = tools.relation_get(rid, gone).unwrap_or_default();
        data.entry("name".into())
            .or_insert_with(|| member_name(gone));
        for m in members
            .clone()
            .iter()
            .filter(|m| !is_me(m) && matches(m, &data))
        {
            match rt.block_on(client.remove(m.id)) {
                Ok(()) => {
                    ctx.log(&format!(
                        "removed member {} of departed unit {gone}",
                        m.name
                    ));
                    members.retain(|x| x.id != m.id);
                }
                // It may have removed itself already.
                Err(e) => ctx.log(&format!("member {} of {gone} not removed: {e}", m.name)),
            }
        }
        if let Some(name) = data.get("name") {
            let _ = tools.leader_set(&[(join_key(name).as_str(), String::new())]);
        }
    }

    // The leader's own unit counts too: to be added while it has not
    // joined, and promoted while it is a learner.
    let mut mine = Settings::new();
    mine.insert("name".into(), me.name.clone());
    mine.insert("peer-url".into(), me.peer_url());
    peers.insert(ctx.env.unit_name.clone(), mine);
    let unit_of = |m: &MemberInfo| -> Option<(String, String)> {
        peers
            .iter()
            .find(|(_, d)| matches(m, d))
            .and_then(|(u, d)| Some((u.clone(), d.get("name")?.clone())))
    };
    let orphans: Vec<String> = members
        .iter()
        .filter(|m| !is_me(m) && unit_of(m).is_none())
        .map(|m| format!("{} {}", m.name, m.peer_urls.join(" ")))
        .collect();

    let settings = tools.leader_get().unwrap_or_default();
    let initial_cluster = |members: &[MemberInfo], extra: Option<(&str, &str)>| -> String {
        let mut parts: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let name = if m.name.is_empty() {
                    unit_of(m).map(|(_, n)| n)?
                } else {
                    m.name.clone()
                };
                Some(format!("{name}={}", m.peer_urls.first()?))
            })
            .collect();
        if let Some((n, u)) = extra {
            parts.push(format!("{n}={u}"));
        }
        parts.sort();
        parts.join(",")
    };

    // Learners: tell an unstarted one how to join (if that got lost), and
    // promote a started one once etcd lets us.
    for m in members.clone().iter().filter(|m| m.is_learner) {
        let Some((unit, name)) = unit_of(m) else {
            continue;
        };
        if m.name.is_empty() {
            if !settings.contains_key(&join_key(&name)) {
                let _ = tools
                    .leader_set(&[(join_key(&name).as_str(), initial_cluster(&members, None))]);
            }
            return Some(format!("waiting for {unit} to start etcd"));
        }
        let deadline = Instant::now() + PROMOTE_LIMIT;
        loop {
            match rt.block_on(client.promote(m.id)) {
                Ok(()) => {
                    ctx.log(&format!("promoted {name} ({unit}) to a voting member"));
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = tools.log(
                        LogLevel::Debug,
                        &format!("promoting {name} not yet possible: {e}"),
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    return Some(format!(
                        "{unit} is still a learner ({e}); promotion is retried on the next hook"
                    ))
                }
            }
        }
        members = match rt.block_on(client.members()) {
            Ok(m) => m,
            Err(e) => return Some(format!("cannot list members yet: {e}")),
        };
    }

    // One new member at a time.
    for (unit, data) in &peers {
        let (Some(name), Some(url)) = (data.get("name"), data.get("peer-url")) else {
            continue;
        };
        if Some(unit.as_str()) == departed || members.iter().any(|m| matches(m, data)) {
            continue;
        }
        match rt.block_on(client.add_learner(std::slice::from_ref(url))) {
            Ok((_, after)) => {
                let others: Vec<MemberInfo> = after
                    .into_iter()
                    .filter(|m| !m.peer_urls.contains(url))
                    .collect();
                let ic = initial_cluster(&others, Some((name, url)));
                ctx.log(&format!("added {name} ({unit}) as a learner"));
                if let Err(e) = tools.leader_set(&[(join_key(name).as_str(), ic)]) {
                    return Some(format!("added {unit} but could not tell it so: {e}"));
                }
                return Some(format!("adding {unit}"));
            }
            Err(e) => {
                return Some(format!(
                    "cannot add {unit} yet ({e}); retried on the next hook"
                ))
            }
        }
    }
    if !orphans.is_empty() {
        return Some(format!(
            "members without a unit: {} (remove them with etcdctl member remove if those machines are gone)",
            orphans.join(", ")
        ));
    }
    None
}
