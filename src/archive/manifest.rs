//! `snapshot.json`: what the archive holds and where it came from.

use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// etcd server version of the member the snapshot came from.
    pub etcd_version: String,
    /// The member's revision when the snapshot started; the snapshot holds
    /// at least this revision.
    pub revision: i64,
    /// Bytes of the bbolt db, not counting the 32-byte trailer.
    pub db_size: u64,
    /// SHA-256 of the db bytes (equal to the trailer).
    pub db_sha256: String,
    pub cluster_id: String,
    pub member_id: String,
    pub member_name: String,
    /// Members in the cluster's member list; 0 when it could not be read.
    pub member_count: usize,
    pub unit: String,
    pub created_at: String,
    /// The program that wrote the archive.
    pub created_by: String,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
