//! Archive file names: `etcd-snapshot-YYYY-MM-DD-HH.MM.SS.tar.gz` (UTC), the
//! old charm's pattern, so retention can tell ours from anything else.

pub const SNAPSHOT_PREFIX: &str = "etcd-snapshot-";
pub const SUFFIX: &str = ".tar.gz";

pub fn snapshot_name(stamp: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{stamp}{SUFFIX}")
}

/// True only for names this charm would write: the exact stamp shape.
pub fn is_snapshot_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(SNAPSHOT_PREFIX)
        .and_then(|s| s.strip_suffix(SUFFIX))
    else {
        return false;
    };
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
        }
    }
}
