//! Snapshot archives: a tar.gz holding `db` (the stream's bytes, trailer
//! included) and `snapshot.json` (the manifest).

pub mod manifest;
pub mod naming;
pub mod output;
pub mod pgzip;
pub mod reader;
pub mod record;
pub mod tarread;
pub mod writer;

pub use manifest::Manifest;
pub use output::{ArchiveFile, OutputError, Published};
pub use record::Record;
pub use writer::{ArchiveWriter, HashingWriter};

/// Name of the db entry inside an archive.
pub const DB_ENTRY: &str = "db";
/// Name of the manifest entry inside an archive.
pub const MANIFEST_ENTRY: &str = "snapshot.json";
