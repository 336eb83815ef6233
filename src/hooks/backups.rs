//! The hooks' part of backups in object stores: keep `stores.json` (0600,
//! in the state dir) matching what the integrators sent, so actions and
//! the scheduled run use the same stores; the leader asks for a bucket.

use crate::hooks::HookContext;
use crate::juju::LogLevel;
use crate::relations::s3;
use crate::store::{Kind, Stores};

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
        for e in s3::request(tools, app) {
            ctx.log(&e);
        }
    }
    let kind = Kind::S3;
    let broken = hook == format!("{}-relation-broken", kind.endpoint());
    // A hook tool that fails keeps what was recorded: a store is dropped
    // only when its relation is seen gone.
    let mut unsure = false;
    let rids = tools.relation_ids(kind.endpoint()).unwrap_or_else(|e| {
        problems.push(format!(
            "cannot list the {} relations: {e}",
            kind.endpoint()
        ));
        unsure = true;
        Vec::new()
    });
    let mut found = None;
    if !broken {
        for rid in rids {
            let units = tools.relation_list(&rid).unwrap_or_else(|e| {
                problems.push(format!("cannot list the units of {rid}: {e}"));
                unsure = true;
                Vec::new()
            });
            let Some(remote) = units.first() else {
                continue;
            };
            let remote_app = remote.split('/').next().unwrap_or(remote);
            let data = match tools.relation_get_app(&rid, remote_app) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("cannot read {remote_app}'s settings: {e}"));
                    unsure = true;
                    continue;
                }
            };
            match s3::settings(&data) {
                Ok(Some(s)) => found = Some(s),
                Ok(None) => {
                    problems.push(format!("waiting for {remote_app} to send S3 credentials"))
                }
                Err(e) => problems.push(e),
            }
        }
    }
    match found {
        Some(s) => {
            stores.stores.insert(kind, s);
        }
        None if unsure => {}
        None => {
            stores.stores.remove(&kind);
        }
    }
    if stores != before {
        match stores.save(&state_dir) {
            Ok(()) => {
                for (k, s) in &stores.stores {
                    if before.stores.get(k) != Some(s) {
                        ctx.log(&format!("backups go to {} from now on", s.url()));
                    }
                }
                for (k, s) in &before.stores {
                    if !stores.stores.contains_key(k) {
                        ctx.log(&format!("backups no longer go to {}", s.url()));
                    }
                }
            }
            Err(e) => problems.push(format!("cannot record the store settings: {e}")),
        }
    }
    problems
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
