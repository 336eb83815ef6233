//! Which snap channel moves etcd can make, from etcd's own upgrade guides:
//! one minor version at a time, never down a minor before 3.6 (3.6 is the
//! first release with downgrade support, through `etcdctl downgrade`, not a
//! channel), and into 3.6 only once every member runs 3.5.32 or later.

/// The minor version a channel's track names: "3.5/stable" → (3, 5).
/// `None` for a track without one ("latest/stable", "stable").
pub fn track(channel: &str) -> Option<(u32, u32)> {
    let track = channel.split('/').next()?;
    let mut parts = track.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((major, minor))
}

/// "3.5.16" → (3, 5, 16).
pub fn version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split(['.', '-', '+']);
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The oldest 3.5 release a member may run when any member goes to 3.6.
const BEFORE_36: (u32, u32, u32) = (3, 5, 32);

/// Whether a running cluster may move from `from` (the installed channel,
/// if known) to the channel `to`. `versions` holds what every member
/// reports running (`None` where a member could not be asked). The error
/// is the operator's sentence, with the path to follow.
pub fn check(from: Option<&str>, to: &str, versions: &[Option<String>]) -> Result<(), String> {
    let Some(target) = track(to) else {
        return Err(format!(
            "the channel {to:?} names no etcd version, so it could move this running cluster any number of versions at once; set a channel with a version track, such as 3.5/stable"
        ));
    };
    let known: Vec<(u32, u32, u32)> = versions
        .iter()
        .filter_map(|v| v.as_deref().and_then(version))
        .collect();
    let current = from
        .and_then(track)
        .or_else(|| known.iter().map(|&(a, b, _)| (a, b)).min());
    let Some(current) = current else {
        return Err(format!(
            "cannot tell which etcd version this cluster runs, so the move to {to} cannot be checked; set the channel the units run now, then move one minor version at a time"
        ));
    };
    if target == current {
        return Ok(());
    }
    let name = |(a, b): (u32, u32)| format!("{a}.{b}");
    if target.0 != current.0 || target.1 < current.1 {
        return Err(format!(
            "etcd cannot go from {} down to {} by changing the channel; set channel back to {}/stable (to run {} data, restore a snapshot into a new application deployed on that channel)",
            name(current),
            name(target),
            name(current),
            name(target)
        ));
    }
    if target.1 > current.1 + 1 {
        return Err(format!(
            "etcd upgrades one minor version at a time: set channel={}.{}/stable first, wait until every unit has restarted on it, then move on to {to}",
            current.0,
            current.1 + 1
        ));
    }
    if target == (3, 6) {
        if known.len() < versions.len() {
            return Err(format!(
                "before moving to {to}, every member must report its version (3.5.32 or later needed) and some did not answer; run the health action and try again when every member is healthy"
            ));
        }
        if let Some(old) = known.iter().filter(|v| **v < BEFORE_36).min() {
            return Err(format!(
                "every member must run etcd 3.5.32 or later before any moves to 3.6, and one runs {}.{}.{}: refresh the etcd snap within 3.5 on each unit, one at a time (juju exec --unit etcd/N -- sudo snap refresh etcd), then move to {to}",
                old.0, old.1, old.2
            ));
        }
    }
    Ok(())
}

/// What each member of the local member's cluster reports running; `None`
/// for a member that did not answer, or one `None` when the local member
/// itself cannot be reached.
pub async fn member_versions(
    endpoint: &crate::etcd::config::ClientEndpoint,
) -> Vec<Option<String>> {
    use crate::etcd::LocalMember;
    let Ok((_, members)) = LocalMember::probe(endpoint).await else {
        return vec![None];
    };
    let mut out = Vec::new();
    for m in members.iter().filter(|m| !m.is_learner) {
        let Some(url) = m.client_urls.first() else {
            out.push(None);
            continue;
        };
        let ep = endpoint.at(url);
        let asked = async { LocalMember::connect(&ep).await?.status().await };
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), asked).await;
        out.push(answer.ok().and_then(Result::ok).map(|s| s.version));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<Option<String>> {
        list.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn tracks_and_versions_parse() {
        assert_eq!(track("3.5/stable"), Some((3, 5)));
        assert_eq!(track("3.6"), Some((3, 6)));
        assert_eq!(track("3.4/candidate/hotfix"), Some((3, 4)));
        assert_eq!(track("latest/stable"), None);
        assert_eq!(track("stable"), None);
        assert_eq!(version("3.5.16"), Some((3, 5, 16)));
        assert_eq!(version("v3.6.0-rc.1"), Some((3, 6, 0)));
        assert_eq!(version("n/a"), None);
    }

    #[test]
    fn one_minor_at_a_time_upwards() {
        assert!(check(Some("3.4/stable"), "3.5/stable", &v(&["3.4.23"])).is_ok());
        assert!(check(Some("3.5/stable"), "3.5/candidate", &v(&["3.5.16"])).is_ok());
        let skip = check(Some("3.4/stable"), "3.6/stable", &v(&["3.4.23"])).unwrap_err();
        assert!(skip.contains("one minor version at a time"), "{skip}");
        assert!(skip.contains("channel=3.5/stable first"), "{skip}");
        let down = check(Some("3.5/stable"), "3.4/stable", &v(&["3.5.16"])).unwrap_err();
        assert!(down.contains("cannot go from 3.5 down to 3.4"), "{down}");
        let latest = check(Some("3.5/stable"), "latest/stable", &v(&["3.5.16"])).unwrap_err();
        assert!(latest.contains("names no etcd version"), "{latest}");
    }

    #[test]
    fn into_36_only_from_3_5_32() {
        let old = check(Some("3.5/stable"), "3.6/stable", &v(&["3.5.40", "3.5.16"])).unwrap_err();
        assert!(old.contains("one runs 3.5.16"), "{old}");
        assert!(old.contains("3.5.32 or later"), "{old}");
        assert!(check(Some("3.5/stable"), "3.6/stable", &v(&["3.5.32", "3.5.40"])).is_ok());
        let silent = vec![Some("3.5.40".to_string()), None];
        let e = check(Some("3.5/stable"), "3.6/stable", &silent).unwrap_err();
        assert!(e.contains("some did not answer"), "{e}");
    }

    #[test]
    fn the_running_version_stands_in_for_an_unknown_channel() {
        // Adopted from layer-etcd with channel "latest/stable" installed.
        assert!(check(Some("latest/stable"), "3.5/stable", &v(&["3.5.16"])).is_ok());
        let e = check(None, "3.6/stable", &v(&["3.4.23"])).unwrap_err();
        assert!(e.contains("one minor version at a time"), "{e}");
        let e = check(None, "3.5/stable", &[None]).unwrap_err();
        assert!(e.contains("cannot tell which etcd version"), "{e}");
    }
}
