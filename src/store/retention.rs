//! Retention in a store: the newest `keep` archives and those younger than
//! `max_age_days` stay (0 turns a rule off; with both, an archive goes when
//! either rule lets it go). Only names this charm writes, directly under
//! this application's prefix, are ever deleted, each with its record; the
//! archive just written and any stamped after it (a clock that stepped
//! back) are never touched.

use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::{Store, StoreError, RECORD_SUFFIX};
use crate::archive::naming::archive_stamp;
use crate::timefmt::UtcTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep: u64,
    pub max_age_days: u64,
}

impl Policy {
    pub fn is_off(&self) -> bool {
        self.keep == 0 && self.max_age_days == 0
    }
}

/// Which of `names` (file names in one place, records included) the
/// policy removes, given the archive just written and the time now. Only
/// archives with their record count towards `keep` (one without it is no
/// backup, and must not push out one that is); those go by age alone.
pub fn doomed(names: &[String], policy: Policy, just_written: &str, now_unix: u64) -> Vec<String> {
    let Some(newest) = archive_stamp(just_written) else {
        return Vec::new();
    };
    let all: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut ours: Vec<(&str, &String, bool)> = names
        .iter()
        .filter_map(|n| archive_stamp(n).map(|s| (s, n)))
        .filter(|(stamp, n)| *stamp < newest && n.as_str() != just_written)
        .map(|(s, n)| (s, n, all.contains(format!("{n}{RECORD_SUFFIX}").as_str())))
        .collect();
    // Newest first; the one just written counts as the first kept.
    ours.sort_unstable_by(|a, b| b.0.cmp(a.0));
    let cutoff = (policy.max_age_days > 0).then(|| {
        UtcTime::from_unix(now_unix.saturating_sub(policy.max_age_days.saturating_mul(86_400)))
            .stamp()
    });
    let mut kept = 1u64;
    let mut out = Vec::new();
    for (stamp, name, recorded) in ours {
        let too_old = cutoff.as_ref().is_some_and(|c| stamp < c.as_str());
        let too_many = recorded && policy.keep > 0 && kept >= policy.keep;
        if too_old || too_many {
            out.push(name.clone());
        } else if recorded {
            kept += 1;
        }
    }
    out
}

/// Applies the policy under this application's prefix; returns the keys
/// of the archives removed.
pub async fn prune(
    store: &Store,
    app: &str,
    policy: Policy,
    just_written: &str,
) -> Result<Vec<String>, StoreError> {
    if policy.is_off() {
        return Ok(Vec::new());
    }
    let listed = store.list_app(app).await?;
    let names: Vec<String> = listed
        .objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_string))
        .collect();
    let mut removed = Vec::new();
    for name in doomed(&names, policy, just_written, UtcTime::now().unix) {
        let key = store.settings.key(app, &name);
        // The archive first: a record left alone lists nothing.
        for k in [key.clone(), format!("{key}{RECORD_SUFFIX}")] {
            let path = ObjectPath::from(k.as_str());
            match store.within(store.objects().delete(&path)).await? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store.error(&e)),
            }
        }
        removed.push(key);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(stamp: &str) -> String {
        format!("etcd-snapshot-{stamp}.tar.gz")
    }

    #[test]
    fn count_and_age_each_remove_only_ours() {
        let mut names = vec![
            n("2026-11-20-00.00.00"),
            n("2026-11-21-00.00.00"),
            n("2026-11-22-00.00.00"),
            n("2026-11-23-00.00.00"),
            "etcd-snapshot-2026-11-01-00.00.00.tar.gz.json".to_string(),
            "notes.txt".to_string(),
            "etcd-snapshot-latest.tar.gz".to_string(),
            n("2099-01-01-00.00.00"),
        ];
        let records: Vec<String> = names[..4].iter().map(|a| format!("{a}.json")).collect();
        names.extend(records);
        let just = n("2026-11-24-00.00.00");
        let now = 1_795_478_400; // 2026-11-24T00:00:00Z
        let keep2 = doomed(
            &names,
            Policy {
                keep: 2,
                max_age_days: 0,
            },
            &just,
            now,
        );
        assert_eq!(
            keep2,
            [
                n("2026-11-22-00.00.00"),
                n("2026-11-21-00.00.00"),
                n("2026-11-20-00.00.00")
            ]
        );
        let two_days = doomed(
            &names,
            Policy {
                keep: 0,
                max_age_days: 2,
            },
            &just,
            now,
        );
        assert_eq!(
            two_days,
            [n("2026-11-21-00.00.00"), n("2026-11-20-00.00.00")]
        );
        assert!(doomed(
            &names,
            Policy {
                keep: 0,
                max_age_days: 0
            },
            &just,
            now
        )
        .is_empty());
        let keep1 = doomed(
            &names,
            Policy {
                keep: 1,
                max_age_days: 0,
            },
            &just,
            now,
        );
        assert_eq!(keep1.len(), 4);
        assert!(!keep1.contains(&just));
        // An archive without its record takes no place among the kept.
        names.retain(|x| x != &format!("{}.json", n("2026-11-23-00.00.00")));
        let keep2 = doomed(
            &names,
            Policy {
                keep: 2,
                max_age_days: 0,
            },
            &just,
            now,
        );
        assert_eq!(keep2, [n("2026-11-21-00.00.00"), n("2026-11-20-00.00.00")]);
    }
}
