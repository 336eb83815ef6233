//! `<archive>.json`: the record written beside a finished archive, locally
//! and in a store. It says what the archive holds (its manifest) and what
//! it must hash to, so listing needs no archive to be read, and a restore
//! from a store can refuse an altered object before etcd is touched.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Manifest;
use crate::fsutil;

pub const RECORD_SUFFIX: &str = ".json";
/// Records are a few hundred bytes; anything much bigger is not ours.
pub const MAX_RECORD: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The archive's (or object's) file name.
    pub archive: String,
    /// SHA-256 and size of the tar.gz archive (before any encryption).
    pub sha256: String,
    pub bytes: u64,
    pub manifest: Manifest,
    /// Set when the object is the archive encrypted with age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<Encrypted>,
}

/// The object as stored, when it is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encrypted {
    pub sha256: String,
    pub bytes: u64,
    /// The age recipients it was encrypted to.
    pub recipients: Vec<String>,
}

impl Record {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a record; None for anything that is not one.
    pub fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

pub fn local_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(RECORD_SUFFIX);
    PathBuf::from(name)
}

/// Writes the record beside a published local archive, 0600 and owned as
/// the archive is.
pub fn write_local(archive: &Path, record: &Record) -> io::Result<()> {
    let path = local_path(archive);
    fsutil::replace_file(&path, &record.to_json())?;
    if let Some(dir) = archive.parent() {
        if let Some((uid, gid)) = fsutil::operator_owner(dir) {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// The record beside a local archive, if there is a readable one.
pub fn read_local(archive: &Path) -> Option<Record> {
    let path = local_path(archive);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD {
        return None;
    }
    Record::parse(&std::fs::read(path).ok()?)
}
