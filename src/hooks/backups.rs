//! The hooks' part of backups in object stores: keep `stores.json` (0600,
//! in the state dir) matching what the integrators sent, so actions and
//! the scheduled run use the same stores; the leader asks for a bucket.

use crate::hooks::HookContext;
use crate::juju::LogLevel;
use crate::relations::{azure, s3};
use crate::store::{Kind, StoreSettings, Stores};

/// Brings the state file up to date. `hook` tells a `-relation-broken`
/// (the relation still lists there, and is gone all the same). Returns
/// what is wrong with a store, for the status.
pub fn sync(ctx: &HookContext, hook: &str) -> Vec<String> {
    let tools = ctx.tools;
    let state_dir = ctx.paths.state_dir();
    let mut problems = Vec::new();
    let mut stores = match Stores::load(&state_dir) {
        Ok(s) => s,
        Err(e) => {
            // Rebuilt from the relations below.
            ctx.log_at(LogLevel::Warning, &e.to_string());
            Stores::default()
        }
    };
    let before = stores.clone();
    let app = ctx.env.unit_name.split('/').next().unwrap_or("etcd");
    if tools.is_leader().unwrap_or(false) {
        for e in s3::request(tools, app)
            .into_iter()
            .chain(azure::request(tools, app))
        {
            ctx.log(&e);
        }
    }
    for kind in [Kind::S3, Kind::Azure] {
        let broken = hook == format!("{}-relation-broken", kind.endpoint());
        match read_store(ctx, kind, broken, &mut problems) {
            Seen::Store(s) => {
                stores.stores.insert(kind, *s);
            }
            Seen::Unsure => {}
            Seen::None => {
                stores.stores.remove(&kind);
            }
        }
    }
    // Unreadable config keeps the recipients recorded: never fewer than
    // the operator asked for.
    match tools.config() {
        Ok(config) => {
            stores.recipients = crate::store::crypt::split_recipients(
                config
                    .get("backup_encryption_recipients")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default(),
            );
        }
        Err(e) => problems.push(format!("cannot read the config: {e}")),
    }
    if let Err(e) = crate::store::crypt::recipients(&stores.recipients) {
        problems.push(e);
    }
    if stores != before {
        match stores.save(&state_dir) {
            Ok(()) => log_changes(ctx, &before, &stores),
            Err(e) => problems.push(format!("cannot record the store settings: {e}")),
        }
    }
    problems
}

enum Seen {
    Store(Box<StoreSettings>),
    /// A hook tool failed: keep what was recorded. A store is dropped only
    /// when its relation is seen gone.
    Unsure,
    None,
}

/// What the integrator of `kind` sent, if it is related and answered.
fn read_store(ctx: &HookContext, kind: Kind, broken: bool, problems: &mut Vec<String>) -> Seen {
    let tools = ctx.tools;
    if broken {
        return Seen::None;
    }
    let rids = match tools.relation_ids(kind.endpoint()) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!(
                "cannot list the {} relations: {e}",
                kind.endpoint()
            ));
            return Seen::Unsure;
        }
    };
    for rid in rids {
        let units = match tools.relation_list(&rid) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("cannot list the units of {rid}: {e}"));
                return Seen::Unsure;
            }
        };
        let Some(remote) = units.first() else {
            continue;
        };
        let remote_app = remote.split('/').next().unwrap_or(remote);
        let data = match tools.relation_get_app(&rid, remote_app) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("cannot read {remote_app}'s settings: {e}"));
                return Seen::Unsure;
            }
        };
        let parsed = match kind {
            Kind::S3 => s3::settings(&data),
            Kind::Azure => azure::settings(&data),
        };
        match parsed {
            Ok(Some(s)) => return Seen::Store(Box::new(s)),
            Ok(None) => problems.push(format!("waiting for {remote_app} to send its credentials")),
            Err(e) => problems.push(e),
        }
    }
    Seen::None
}

fn log_changes(ctx: &HookContext, before: &Stores, after: &Stores) {
    for (k, s) in &after.stores {
        if before.stores.get(k) != Some(s) {
            ctx.log(&format!("backups go to {} from now on", s.url()));
        }
    }
    for (k, s) in &before.stores {
        if !after.stores.contains_key(k) {
            ctx.log(&format!("backups no longer go to {}", s.url()));
        }
    }
}

/// Leader setting naming the unit that runs scheduled backups: written by
/// a new leader, so the one it replaced gets leader-settings-changed and
/// removes its timer.
const RUNNER: &str = "backup-runner";

/// The backup timer: on the leader when `backup_schedule` is set, nowhere
/// else. A failure is logged and left for the next hook.
pub fn schedule(ctx: &HookContext) {
    let config = ctx.tools.config().unwrap_or_default();
    let options = crate::schedule::Options::from_config(&config);
    let leader = ctx.tools.is_leader().unwrap_or(false);
    let me = &ctx.env.unit_name;
    if leader && ctx.tools.leader_get().unwrap_or_default().get(RUNNER) != Some(me) {
        let _ = ctx.tools.leader_set(&[(RUNNER, me.clone())]);
    }
    if let Err(e) = crate::schedule::converge(
        ctx.paths,
        &options,
        leader,
        &ctx.env.unit_name,
        &super::dispatch_path(),
    ) {
        ctx.log_at(LogLevel::Warning, &format!("backup schedule: {e}"));
    }
}

/// No timer on a unit that is leaving.
pub fn unschedule(ctx: &HookContext) {
    let off = crate::schedule::Options {
        schedule: String::new(),
        retention_count: 0,
        retention_days: 0,
    };
    let _ = crate::schedule::converge(
        ctx.paths,
        &off,
        false,
        &ctx.env.unit_name,
        &super::dispatch_path(),
    );
}
