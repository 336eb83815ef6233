//! What this unit's etcd should run (its config file, TLS files, binary,
//! snap channel), and getting it there: at once when etcd is not running,
//! else through the rolling-restart lock (`crate::roll`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::HookContext;
use crate::error::Error;
use crate::etcd::config::ClientEndpoint;
use crate::etcd::health::Health;
use crate::etcd::render::{write_if_changed, TlsPems};
use crate::install::{self, Installed};
use crate::juju::{LogLevel, Settings};
use crate::paths::Paths;
use crate::roll;
use crate::service;

/// Marker: a new etcd binary was installed; the running etcd is the old one.
const NEW_BINARY: &str = "restart-new-binary";
/// Marker: an `etcd.snap` resource waits to be installed (its path), at
/// this unit's turn: snapd restarts etcd as it installs it.
const SNAP_FILE: &str = "restart-snap-file";
/// Marker: the plan is on disk but etcd has not restarted onto it yet (a
/// hook cut short between the two must not leave it so).
const DUE: &str = "restart-due";

/// etcd (re)started on what is on disk.
pub fn started(paths: &Paths) {
    let _ = std::fs::remove_file(paths.state_dir().join(DUE));
}

/// The TLS files beside the config, where layer-etcd keeps them.
pub const TLS_FILES: [&str; 5] = [
    "ca.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

pub struct Plan {
    pub conf: PathBuf,
    pub text: String,
    pub tls: Option<TlsPems>,
    /// `None` ("auto"): the installed channel stays.
    pub channel: Option<String>,
    /// The member's data moves (from, to) first, with etcd stopped: out of
    /// the snap's data dir, where layer-etcd kept it.
    pub relocate: Option<(PathBuf, PathBuf)>,
}

fn tls_texts(p: &TlsPems) -> [&String; 5] {
    [
        &p.ca,
        &p.server_cert,
        &p.server_key,
        &p.client_cert,
        &p.client_key,
    ]
}

pub fn note_snap_file(paths: &Paths, file: &Path) {
    let _ = std::fs::write(
        paths.state_dir().join(SNAP_FILE),
        file.as_os_str().as_encoded_bytes(),
    );
}

fn pending_snap_file(paths: &Paths) -> Option<PathBuf> {
    std::fs::read_to_string(paths.state_dir().join(SNAP_FILE))
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

pub fn note_new_binary(paths: &Paths) {
    let _ = std::fs::write(paths.state_dir().join(NEW_BINARY), b"");
}

impl Plan {
    fn dir(&self) -> &Path {
        self.conf.parent().unwrap_or(Path::new("/"))
    }

    /// What differs from what etcd runs now; empty when nothing does.
    pub fn changes(&self, paths: &Paths, inst: &Installed) -> Vec<&'static str> {
        let mut out = Vec::new();
        if std::fs::read(&self.conf).ok().as_deref() != Some(self.text.as_bytes()) {
            out.push("config");
        }
        if let Some(t) = &self.tls {
            let differs = TLS_FILES.iter().zip(tls_texts(t)).any(|(name, text)| {
                std::fs::read(self.dir().join(name)).ok().as_deref() != Some(text.as_bytes())
            });
            if differs {
                out.push("certificates");
            }
        }
        if inst.source == "snap"
            && !inst.from_file
            && self.channel.is_some()
            && inst.channel.as_deref() != self.channel.as_deref()
        {
            out.push("channel");
        }
        if paths.state_dir().join(NEW_BINARY).exists() {
            out.push("binary");
        }
        if pending_snap_file(paths).is_some() {
            out.push("snap");
        }
        if self.relocate.is_some() {
            out.push("data location");
        }
        if out.is_empty() && paths.state_dir().join(DUE).exists() {
            out.push("the last restart");
        }
        out
    }

    /// A short digest of the plan, published with the restart request.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        if let Some(t) = &self.tls {
            for text in tls_texts(t) {
                h.update(text.as_bytes());
            }
        }
        h.update(self.channel.as_deref().unwrap_or("auto").as_bytes());
        crate::etcd::snapshot::hex(&h.finalize()[..6])
    }

    /// Moves the member's data where the plan's config says, when it must
    /// move (etcd is stopped).
    pub fn move_data(&self) -> Result<(), Error> {
        match &self.relocate {
            Some((from, to)) => super::adopt::move_member(from, to),
            None => Ok(()),
        }
    }

    /// Why the data cannot move now, checked before etcd stops.
    pub fn move_blocked(&self) -> Option<String> {
        let (from, to) = self.relocate.as_ref()?;
        super::adopt::move_refused(from, to)
    }

    /// Installs an `etcd.snap` resource waiting for this unit's turn:
    /// snapd restarts a running etcd as it installs it, so this comes
    /// right before the restart.
    pub fn install_pending_snap(&self, paths: &Paths, inst: &mut Installed) -> Result<(), Error> {
        if let Some(file) = pending_snap_file(paths) {
            install::install_snap_resource(paths, inst, &file)
                .map_err(|e| Error::Hook(e.to_string()))?;
            let _ = std::fs::remove_file(paths.state_dir().join(SNAP_FILE));
        }
        Ok(())
    }

    /// Puts the plan in place (TLS files first: the config names them),
    /// refreshing the snap if its channel changed. etcd is not restarted.
    pub fn apply(&self, paths: &Paths, inst: &mut Installed) -> Result<(), Error> {
        let due = paths.state_dir().join(DUE);
        std::fs::write(&due, b"")
            .map_err(|e| Error::Hook(format!("cannot write {}: {e}", due.display())))?;
        // The snap first: a refresh that fails leaves nothing half done.
        install::follow_channel(paths, inst, self.channel.as_deref())
            .map_err(|e| Error::Hook(e.to_string()))?;

        if let Some(t) = &self.tls {
            for (name, text) in TLS_FILES.iter().zip(tls_texts(t)) {
                write_private(&self.dir().join(name), text)?;
            }
        }
        write_if_changed(&self.conf, &self.text)
            .map_err(|e| Error::Hook(format!("cannot write {}: {e}", self.conf.display())))?;
        let _ = std::fs::remove_file(paths.state_dir().join(NEW_BINARY));
        Ok(())
    }
}

/// A private file (0600 whatever mode an older file had), written atomically.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| Error::Hook(format!("cannot write {}: {e}", path.display()));
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    write_if_changed(path, text).map_err(fail)?;
    Ok(())
}

/// This unit's restart request that has not finished yet.
fn my_request(ctx: &HookContext, rid: &str) -> Option<String> {
    ctx.tools
        .relation_get(rid, &ctx.env.unit_name)
        .ok()?
        .get(roll::WANT)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// This unit's request on the peer relation; the leader then settles who
/// holds the lock. Returns whether this unit holds it.
fn ask(
    ctx: &HookContext,
    rid: &str,
    want: Option<String>,
    leader: bool,
    settings: &mut Settings,
) -> Result<bool, Error> {
    let me = ctx.env.unit_name.as_str();
    ctx.tools
        .relation_set(rid, &[(roll::WANT, want.clone().unwrap_or_default())])?;
    if leader {
        roll::arbitrate(ctx.tools, rid, me, want.as_deref(), settings)?;
    }
    let granted = want.map(|d| roll::grant_value(me, &d));
    Ok(granted.is_some() && settings.get(roll::LOCK) == granted.as_ref())
}

/// How the restart went, for the status.
pub enum Turn {
    /// Nothing to restart, or this unit restarted.
    Done { restarted: bool },
    /// Waiting for the lock, or for the cluster to be able to lose this
    /// member for a moment.
    Waiting(String),
}

/// Brings a running etcd to the plan through the lock: asks for it, and
/// when this unit holds it and the others answer, moves raft leadership
/// away, applies the plan and restarts. `live` is how to reach the member
/// now; `reach` how to reach the others.
#[allow(clippy::too_many_arguments)]
pub fn take_turn(
    ctx: &HookContext,
    rt: &tokio::runtime::Runtime,
    rid: Option<&str>,
    leader: bool,
    settings: &mut Settings,
    plan: &Plan,
    inst: &mut Installed,
    live: (&ClientEndpoint, &str, &str),
    others: &[ClientEndpoint],
    reach: roll::Reach,
) -> Result<Turn, Error> {
    let changes = plan.changes(ctx.paths, inst);
    if changes.is_empty() {
        return Ok(Turn::Done { restarted: false });
    }
    if let Some(why) = plan.move_blocked() {
        // Not this unit's turn while it cannot use it: the others go on.
        if let Some(rid) = rid {
            ask(ctx, rid, None, leader, settings)?;
        }
        return Ok(Turn::Waiting(format!("restart held back: {why}")));
    }
    let what = changes.join(", ");
    let mine = match rid {
        Some(rid) => ask(ctx, rid, Some(plan.digest()), leader, settings)?,
        None => true,
    };
    if !mine {
        let holder = roll::holder(settings)
            .map(|h| format!("{h} restarts first"))
            .unwrap_or_else(|| "waiting for the leader's turn".into());
        return Ok(Turn::Waiting(format!(
            "restart pending ({what} changed): {holder}"
        )));
    }
    let (endpoint, name, peer_url) = live;
    let local = rt.block_on(crate::etcd::health::check(endpoint, name));
    let answered = match roll::may_stop(rt, &local, name, others, reach) {
        Ok(o) => o,
        Err(why) => {
            return Ok(Turn::Waiting(format!(
                "restart held back ({what} changed): {why}, and stopping this member now could cost the quorum"
            )))
        }
    };
    if let Some(note) = roll::move_leadership(rt, endpoint, &local, &answered) {
        ctx.log(&note);
    }
    if plan.relocate.is_some() {
        return relocating_restart(ctx, rt, plan, inst, live, others, &what);
    }
    plan.apply(ctx.paths, inst)?;
    if let Err(why) = roll::readvertise(rt, &local, endpoint, others, name, peer_url) {
        return Ok(Turn::Waiting(format!(
            "restart held back ({what} changed): {why}"
        )));
    }
    ctx.log(&format!("restarting etcd ({what} changed)"));
    plan.install_pending_snap(ctx.paths, inst)?;
    match service::restart() {
        Ok(()) => started(ctx.paths),
        // Not a hook failure: the unit keeps the lock, so nothing else
        // restarts, and its status says what systemd said.
        Err(e) => ctx.log(&format!("etcd did not restart: {e}")),
    }
    Ok(Turn::Done { restarted: true })
}

/// The restart that also moves the member's data. The config may name the
/// new place only once the data is there, and etcd must not start in
/// between (a member with its name and no data would rejoin empty): so
/// etcd is disabled at boot and stopped, the data moved, the config
/// written, and only then etcd enabled and started. A hook cut short
/// anywhere in it leaves etcd stopped, and the next one finishes it.
fn relocating_restart(
    ctx: &HookContext,
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    inst: &mut Installed,
    live: (&ClientEndpoint, &str, &str),
    others: &[ClientEndpoint],
    what: &str,
) -> Result<Turn, Error> {
    if let Some(why) = plan.move_blocked() {
        return Ok(Turn::Waiting(format!("restart held back: {why}")));
    }
    let (endpoint, name, peer_url) = live;
    let local = rt.block_on(crate::etcd::health::check(endpoint, name));
    if let Err(why) = roll::readvertise(rt, &local, endpoint, others, name, peer_url) {
        return Ok(Turn::Waiting(format!(
            "restart held back ({what} changed): {why}"
        )));
    }
    ctx.log(&format!("restarting etcd ({what} changed)"));
    let Some(_lock) = stop_and_move(ctx, plan)? else {
        return Ok(Turn::Waiting(format!(
            "restart held back ({what} changed): a snapshot or restore is running"
        )));
    };
    plan.apply(ctx.paths, inst)?;
    plan.install_pending_snap(ctx.paths, inst)?;
    service::enable().map_err(|e| Error::Hook(e.to_string()))?;
    match service::start() {
        Ok(()) => started(ctx.paths),
        Err(e) => ctx.log(&format!("etcd did not start: {e}")),
    }
    Ok(Turn::Done { restarted: true })
}

/// Stops etcd, keeps it from starting at boot, and moves the member's data
/// where the plan says, under the action lock (held until the caller drops
/// it: no snapshot or restore reads or swaps the data meanwhile). None
/// when a snapshot or restore holds the lock: nothing was done.
pub fn stop_and_move(
    ctx: &HookContext,
    plan: &Plan,
) -> Result<Option<crate::lock::ActionLock>, Error> {
    if let Some(why) = plan.move_blocked() {
        return Err(Error::Hook(why));
    }
    let lock = match crate::lock::ActionLock::acquire(&ctx.paths.state_dir(), "data move") {
        Ok(lock) => lock,
        Err(crate::lock::LockError::Busy { .. }) => return Ok(None),
        Err(e) => return Err(Error::Hook(e.to_string())),
    };
    let service = |e: service::ServiceError| Error::Hook(e.to_string());
    service::disable().map_err(service)?;
    service::stop().map_err(service)?;
    if let Err(e) = plan.move_data() {
        // Nothing moved: the config still names the old place, which still
        // holds the data, and etcd goes back to serving from it. Otherwise
        // it stays stopped until the move is finished.
        let untouched = plan
            .relocate
            .as_ref()
            .is_some_and(|(from, to)| from.join("member").is_dir() && !to.join("member").is_dir());
        if untouched {
            let _ = service::enable();
            let _ = service::start();
        }
        return Err(e);
    }
    crate::actions::journal::abort_at("data-moved");
    Ok(Some(lock))
}

/// After the member was checked: a request stays open while the member is
/// not healthy (the lock stays with this unit, so the roll stops here);
/// else it is withdrawn and the leader grants the next unit.
pub fn finish(
    ctx: &HookContext,
    rid: Option<&str>,
    leader: bool,
    settings: &mut Settings,
    health: &Health,
    waiting: bool,
) -> Result<Option<String>, Error> {
    let Some(rid) = rid else {
        return Ok(None);
    };
    // Back and serving (an alarm is the cluster's, not this restart's).
    let healthy = health.serving().is_some();
    if waiting {
        if leader {
            let mine = my_request(ctx, rid);
            roll::arbitrate(
                ctx.tools,
                rid,
                &ctx.env.unit_name,
                mine.as_deref(),
                settings,
            )?;
        }
        return Ok(None);
    }
    if !healthy && my_request(ctx, rid).is_some() {
        return Ok(Some(
            "the rolling restart waits until this member is healthy again".into(),
        ));
    }
    ask(ctx, rid, None, leader, settings)?;
    if leader {
        if let Some(h) = settings.get(roll::LOCK) {
            let _ = ctx
                .tools
                .log(LogLevel::Debug, &format!("restart lock held by {h}"));
        }
    }
    Ok(None)
}
