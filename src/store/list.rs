//! The backups an operator can restore: local archives in a directory and
//! archives in the related stores, each described by its record.

use std::path::Path;

use futures_util::{stream, StreamExt};
use serde::Serialize;

use super::{Store, StoreError, RECORD_SUFFIX};
use crate::archive::naming::{archive_stamp, stamp_rfc3339};
use crate::archive::record::{self, Record};

/// Records fetched at once while listing a store.
const FETCH_AT_ONCE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// The archive's name: what `restore backup-id=` takes.
    pub id: String,
    /// `local` or the store's URL.
    pub location: String,
    /// The local path or the object key.
    pub key: String,
    pub bytes: u64,
    pub created: String,
    pub encrypted: bool,
    /// From the record; None when the archive has none (written by an
    /// older charm, copied in, or its upload never finished).
    pub record: Option<Record>,
}

impl Backup {
    fn new(name: &str, stamp: &str, location: String, key: String, bytes: u64) -> Backup {
        Backup {
            id: name.to_string(),
            location,
            key,
            bytes,
            created: stamp_rfc3339(stamp),
            encrypted: name.ends_with(".age"),
            record: None,
        }
    }
}

/// Newest first; the same instant in several places keeps a stable order.
pub fn sort(backups: &mut [Backup]) {
    backups.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.location.cmp(&b.location))
    });
}

/// The archives this charm named in `dir` (none when it does not exist).
pub fn local(dir: &Path) -> Vec<Backup> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = archive_stamp(&name)?.to_string();
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            let path = e.path();
            let mut b = Backup::new(
                &name,
                &stamp,
                "local".into(),
                path.display().to_string(),
                meta.len(),
            );
            b.record = record::read_local(&path).filter(|r| r.archive == name);
            Some(b)
        })
        .collect()
}

/// The archives under this application's prefix in `store`.
pub async fn in_store(store: &Store, app: &str) -> Result<Vec<Backup>, StoreError> {
    let listed = store.list_app(app).await?;
    let names: std::collections::HashSet<String> = listed
        .objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_string))
        .collect();
    let mut found: Vec<Backup> = listed
        .objects
        .iter()
        .filter_map(|o| {
            let name = o.location.filename()?;
            let stamp = archive_stamp(name)?;
            Some(Backup::new(
                name,
                stamp,
                store.url(),
                o.location.to_string(),
                o.size,
            ))
        })
        .collect();
    let wanted: Vec<(usize, String)> = found
        .iter()
        .enumerate()
        .filter(|(_, b)| names.contains(&format!("{}{RECORD_SUFFIX}", b.id)))
        .map(|(i, b)| (i, b.key.clone()))
        .collect();
    let records: Vec<(usize, Result<Option<Record>, StoreError>)> = stream::iter(wanted)
        .map(|(i, key)| async move { (i, super::download::record(store, &key).await) })
        .buffer_unordered(FETCH_AT_ONCE)
        .collect()
        .await;
    // A record that cannot be read leaves its row unverified; the rest of
    // the list still counts.
    for (i, r) in records {
        let b = &mut found[i];
        b.record = r.ok().flatten().filter(|r| r.archive == b.id);
    }
    Ok(found)
}

/// A size for people, or `-`.
fn cell(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

/// The human table for `output`, as layer-etcd's actions print theirs.
pub fn table(backups: &[Backup]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "WHERE".into(),
        "SIZE".into(),
        "CREATED".into(),
        "ETCD".into(),
        "REVISION".into(),
        "CLUSTER".into(),
        "SHA256".into(),
    ]];
    for b in backups {
        let r = b.record.as_ref();
        rows.push([
            b.id.clone(),
            b.location.clone(),
            crate::fsutil::human_size(b.bytes),
            b.created.clone(),
            cell(r.map(|r| r.manifest.etcd_version.clone())),
            cell(r.map(|r| r.manifest.revision.to_string())),
            cell(r.map(|r| r.manifest.cluster_id.clone())),
            cell(r.map(|r| r.sha256.chars().take(12).collect())),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
