//! The `compact` action: drop the key history before a revision (the
//! latest by default), as `etcdctl compaction` does; `physical` waits until
//! the space is reclaimed. Revisions before it can no longer be read.

use crate::actions::{params, voting_member, ActionContext};
use crate::error::Error;
use crate::juju::Results;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("invalid action parameter revision: {0:?} is not a revision number (a whole number above 0, or empty for the latest)")]
    BadRevision(String),
    #[error("revision {asked} is ahead of the latest revision, {latest}; give a revision at or below it, or leave revision empty")]
    Future { asked: i64, latest: i64 },
    #[error("compacting at revision {revision} failed: {reason}")]
    Failed { revision: i64, reason: String },
}

impl From<CompactError> for Error {
    fn from(e: CompactError) -> Self {
        Error::Action(Box::new(e))
    }
}

/// `revision` is a string in layer-etcd's schema ("" = latest); kept so.
fn parse_revision(raw: Option<String>) -> Result<Option<i64>, CompactError> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.trim().parse::<i64>() {
        Ok(r) if r > 0 => Ok(Some(r)),
        _ => Err(CompactError::BadRevision(raw)),
    }
}

pub fn run(ctx: &ActionContext) -> Result<Results, Error> {
    let p = ctx.tools.action_params()?;
    let asked = parse_revision(params::optional_string(&p, "revision")?)?;
    let physical = params::boolean(&p, "physical", false)?;
    let (rt, _, local) = voting_member(ctx)?;
    let latest = rt.block_on(local.status())?.revision;
    let revision = match asked {
        Some(r) if r > latest => return Err(CompactError::Future { asked: r, latest }.into()),
        Some(r) => r,
        None => latest,
    };
    // Already compacted at or past it (a second run, or kube-apiserver's
    // own compaction on a quiet cluster): the asked state holds already.
    let output = match rt.block_on(local.compact(revision, physical)) {
        Ok(()) => format!("compacted revision {revision}"),
        Err(e)
            if e.to_string()
                .contains("required revision has been compacted") =>
        {
            format!("revision {revision} was already compacted")
        }
        Err(e) => {
            return Err(CompactError::Failed {
                revision,
                reason: e.to_string(),
            }
            .into())
        }
    };
    let mut r = Results::new();
    r.set("output", output)?;
    r.set("revision", revision.to_string())?;
    r.set("physical", physical.to_string())?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_is_empty_or_a_positive_number() {
        assert_eq!(parse_revision(None).unwrap(), None);
        assert_eq!(parse_revision(Some(" 42 ".into())).unwrap(), Some(42));
        for bad in ["0", "-3", "latest", "4.5"] {
            let e = parse_revision(Some(bad.into())).unwrap_err().to_string();
            assert!(e.contains("not a revision number"), "{e}");
        }
    }
}
