//! `snap-upgrade`: in layer-etcd, the move from the Debian package to the
//! snap. This charm never runs etcd from the Debian package, so there is
//! nothing to migrate; the action says what runs and how it is changed,
//! rather than failing a runbook that calls it.

use crate::actions::{params, ActionContext};
use crate::error::Error;
use crate::install::Installed;
use crate::juju::Results;

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let p = ctx.tools.action_params()?;
    let use_resource = params::boolean(&p, "use-resource", false)?;
    let installed = Installed::load(&ctx.paths);
    let running = match &installed {
        Some(i) if i.source == "snap" && i.channel.is_none() => "etcd runs from the snap installed from the etcd resource (etcd.snap, as layer-etcd's use-resource did); there is no Debian package to migrate from. To move to another version, attach a new etcd.snap (units install it one at a time); the channel option does not apply to a snap installed from a file".to_string(),
        Some(i) if i.source == "snap" => format!(
            "etcd runs from the snap (channel {}); there is no Debian package to migrate from. To move to another version, change the channel option: units refresh one at a time",
            i.channel.as_deref().unwrap_or("unknown")
        ),
        Some(i) => format!(
            "etcd runs from the etcd resource (version {}), not from a snap; snap-upgrade does not apply. Attach a new resource with juju attach-resource: units install it one at a time",
            i.version.as_deref().unwrap_or("unknown")
        ),
        None => "this charm did not install etcd on this unit (it was taken over from another charm); nothing was changed".to_string(),
    };
    let mut r = Results::new();
    let note = if use_resource {
        " (use-resource: the etcd resource is always used when attached)"
    } else {
        ""
    };
    r.set("output", format!("{running}{note}."))?;
    r.set(
        "source",
        installed
            .map(|i| i.source)
            .unwrap_or_else(|| "other".into()),
    )?;
    Ok(r)
}
