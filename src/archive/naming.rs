//! Archive file names: `etcd-snapshot-YYYY-MM-DD-HH.MM.SS.tar.gz` (UTC), the
//! old charm's pattern, so retention can tell ours from anything else.

pub const SNAPSHOT_PREFIX: &str = "etcd-snapshot-";
pub const SUFFIX: &str = ".tar.gz";

pub fn snapshot_name(stamp: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{stamp}{SUFFIX}")
}

/// Suffix of an archive encrypted with age.
pub const AGE_SUFFIX: &str = ".tar.gz.age";

/// True only for names this charm would write: the exact stamp shape.
pub fn is_snapshot_name(name: &str) -> bool {
    name.strip_prefix(SNAPSHOT_PREFIX)
        .and_then(|s| s.strip_suffix(SUFFIX))
        .is_some_and(is_stamp)
}

/// The stamp of an archive name this charm writes, plain or encrypted.
pub fn archive_stamp(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(SNAPSHOT_PREFIX)?;
    let stamp = rest
        .strip_suffix(SUFFIX)
        .or_else(|| rest.strip_suffix(AGE_SUFFIX))?;
    is_stamp(stamp).then_some(stamp)
}

/// `YYYY-MM-DD-HH.MM.SS` as RFC 3339 (UTC).
pub fn stamp_rfc3339(stamp: &str) -> String {
    let (date, time) = stamp.split_at(10.min(stamp.len()));
    format!("{date}T{}Z", time.trim_start_matches('-').replace('.', ":"))
}

fn is_stamp(stamp: &str) -> bool {
    // YYYY-MM-DD-HH.MM.SS
    const SHAPE: &[u8] = b"dddd-dd-dd-dd.dd.dd";
    stamp.len() == SHAPE.len()
        && stamp.bytes().zip(SHAPE).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            other => c == *other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_exact_names() {
        assert!(is_snapshot_name("etcd-snapshot-2026-11-23-20.41.47.tar.gz"));
        assert_eq!(
            snapshot_name("2026-11-23-20.41.47"),
            "etcd-snapshot-2026-11-23-20.41.47.tar.gz"
        );
        for other in [
            "etcd-snapshot-2026-11-23-20.41.47.tar.gz.part",
            "etcd-snapshot-2026-11-23-20.41.4.tar.gz",
            "etcd-snapshot-latest.tar.gz",
            "etcd-data-2026-11-23-20.41.47.tar.gz",
            "notes.txt",
        ] {
            assert!(!is_snapshot_name(other), "{other}");
            assert_eq!(archive_stamp(other), None, "{other}");
        }
        let age = "etcd-snapshot-2026-11-23-20.41.47.tar.gz.age";
        assert!(!is_snapshot_name(age));
        assert_eq!(archive_stamp(age), Some("2026-11-23-20.41.47"));
        assert_eq!(stamp_rfc3339("2026-11-23-20.41.47"), "2026-11-23T20:41:47Z");
    }
}
