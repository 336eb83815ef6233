//! Reading a snapshot from outside the charm: hostile until verified.
//!
//! Accepts this charm's archives (`db` with etcd's SHA-256 trailer, plus
//! `snapshot.json`), the old Python charm's (`./db`, a raw copy of
//! `member/snap/db` with no trailer) and a bare `etcdctl snapshot save`
//! file. Every byte is read: gzip CRCs, tar headers, entry kinds and names,
//! declared sizes against what the archive could hold, the trailer and the
//! manifest. The db is copied into a private staging file as it is checked;
//! nothing else is written anywhere.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::tarread::{EntryData, TarReader};
use crate::etcd::snapshot::{hex, StreamError, TrailerCheck, TRAILER_LEN};
use crate::fsutil;

/// bbolt's meta page magic, little-endian at offset 16 of a db file.
const BBOLT_MAGIC: [u8; 4] = [0xed, 0xda, 0x0c, 0xed];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// deflate cannot expand data more than about 1032:1.
const MAX_RATIO: u64 = 1100;
const MAX_MANIFEST: u64 = 64 * 1024;
const PAGE: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the snapshot {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{0} is neither a tar.gz snapshot archive nor an etcd snapshot db")]
    Unknown(PathBuf),
    #[error("the snapshot archive is damaged ({0}); it may be truncated: copy it again")]
    Damaged(String),
    #[error("the snapshot archive holds an unsafe entry {0:?} (absolute path or ..); refusing it")]
    UnsafeEntry(String),
    #[error("the snapshot archive holds {name:?}, a {kind}, where only regular files belong; refusing it")]
    EntryKind { name: String, kind: String },
    #[error("the archive holds an etcd data directory (member/wal), a v2-store backup the restore action cannot use; take a snapshot with the snapshot action instead")]
    V2Store,
    #[error("the snapshot archive holds an unexpected entry {0:?}; a snapshot archive holds only db and snapshot.json")]
    Unexpected(String),
    #[error("the snapshot archive holds {0} twice; refusing it")]
    Duplicate(String),
    #[error("the archive entry {name} claims {size} bytes, more than an archive of {archive} bytes can hold; the archive is damaged or hostile")]
    TooLarge {
        name: String,
        size: u64,
        archive: u64,
    },
    #[error("the snapshot archive holds no db")]
    NoDb,
    #[error("the snapshot's db is not an etcd snapshot ({0})")]
    NotDb(String),
    #[error("the snapshot's db fails its SHA-256 check ({0}); the snapshot is damaged: take or copy it again")]
    Trailer(StreamError),
    #[error("the archive's snapshot.json does not match its db ({0}); the archive is damaged or was altered")]
    Manifest(String),
    #[error("cannot stage the snapshot's db in {path}: {source}")]
    Stage { path: PathBuf, source: io::Error },
}

/// A snapshot checked and copied into staging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The private copy etcd's restore tool will read.
    pub db: PathBuf,
    /// What the source was, for the operator.
    pub kind: &'static str,
    /// The db carries etcd's SHA-256 trailer (checked); without it the
    /// restore tool needs `--skip-hash-check`.
    pub has_trailer: bool,
    /// Bytes of the bbolt db, without the trailer.
    pub db_size: u64,
    pub db_sha256: String,
    pub manifest: Option<Manifest>,
}

fn damaged(e: io::Error) -> VerifyError {
    VerifyError::Damaged(e.to_string())
}

/// Copies `size` bytes of db from `src` into `dest` (created 0600),
/// checking the bbolt magic and, when the size says there is one, the
/// SHA-256 trailer.
fn stage_db(
    src: &mut dyn Read,
    size: u64,
    dest: &Path,
) -> Result<(bool, u64, String), VerifyError> {
    let has_trailer = match size % PAGE {
        0 => false,
        r if r == TRAILER_LEN => true,
        _ => {
            return Err(VerifyError::NotDb(format!(
                "{size} bytes is not a whole number of pages"
            )))
        }
    };
    if size < PAGE {
        return Err(VerifyError::NotDb(format!("only {size} bytes")));
    }
    let db_size = if has_trailer {
        size - TRAILER_LEN
    } else {
        size
    };
    let stage = |source| VerifyError::Stage {
        path: dest.to_path_buf(),
        source,
    };
    let mut out =
        io::BufWriter::with_capacity(1 << 20, fsutil::create_private_file(dest).map_err(stage)?);
    let mut check = TrailerCheck::new(db_size);
    let mut plain = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < size {
        let want = buf.len().min((size - got) as usize);
        let n = src.read(&mut buf[..want]).map_err(damaged)?;
        if n == 0 {
            return Err(VerifyError::Damaged(format!(
                "the db ends after {got} of {size} bytes"
            )));
        }
        if got < 20
            && got + n as u64 >= 20
            && buf[16 - got as usize..20 - got as usize] != BBOLT_MAGIC
        {
            return Err(VerifyError::NotDb("no bbolt header".into()));
        }
        if has_trailer {
            check.feed(&buf[..n]).map_err(VerifyError::Trailer)?;
        } else {
            plain.update(&buf[..n]);
        }
        out.write_all(&buf[..n]).map_err(stage)?;
        got += n as u64;
    }
    let sha = if has_trailer {
        hex(&check.finish().map_err(VerifyError::Trailer)?.db_sha256)
    } else {
        hex(&plain.finalize())
    };
    // No fsync: the staged copy is only the restore tool's input, and a
    // crash discards the staging dir anyway.
    out.flush().map_err(stage)?;
    Ok((has_trailer, db_size, sha))
}

/// The entry name with any `./` prefixes removed, or why it is refused.
fn entry_name(raw: &str) -> Result<String, VerifyError> {
    if raw.starts_with('/') || raw.split('/').any(|c| c == "..") {
        return Err(VerifyError::UnsafeEntry(raw.to_string()));
    }
    let mut name = raw;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    Ok(name.trim_end_matches('/').to_string())
}

/// Verifies `path` completely and stages its db as `staging/db`.
pub fn verify_and_stage(path: &Path, staging: &Path) -> Result<Staged, VerifyError> {
    let open = |source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    let len = file.metadata().map_err(open)?.len();
    let mut head = [0u8; 20];
    let got = read_up_to(&mut file, &mut head).map_err(open)?;
    drop(file);
    let dest = staging.join("db");
    if got >= 2 && head[..2] == GZIP_MAGIC {
        verify_tar_gz(path, len, &dest)
    } else if got == 20 && head[16..20] == BBOLT_MAGIC {
        let mut f = BufReader::new(File::open(path).map_err(open)?);
        let (has_trailer, db_size, db_sha256) = stage_db(&mut f, len, &dest)?;
        Ok(Staged {
            db: dest,
            kind: if has_trailer {
                "etcdctl snapshot file"
            } else {
                "raw etcd db file"
            },
            has_trailer,
            db_size,
            db_sha256,
            manifest: None,
        })
    } else {
        Err(VerifyError::Unknown(path.to_path_buf()))
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn verify_tar_gz(path: &Path, len: u64, dest: &Path) -> Result<Staged, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = TarReader::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)));
    let mut db: Option<(bool, u64, String)> = None;
    let mut manifest: Option<Manifest> = None;
    let mut saw_manifest = false;
    let limit = len.saturating_mul(MAX_RATIO).saturating_add(1 << 20);
    while let Some(header) = archive.next_entry().map_err(damaged)? {
        let raw = header.name.clone();
        let name = entry_name(&raw)?;
        if name == "member" || name.starts_with("member/") {
            return Err(VerifyError::V2Store);
        }
        if name.is_empty() && header.is_dir() {
            continue;
        }
        if !header.is_file() {
            return Err(VerifyError::EntryKind {
                name: raw,
                kind: header.kind_name(),
            });
        }
        let size = header.size;
        if size > limit {
            return Err(VerifyError::TooLarge {
                name: raw,
                size,
                archive: len,
            });
        }
        match name.as_str() {
            "db" => {
                if db.is_some() {
                    return Err(VerifyError::Duplicate(raw));
                }
                db = Some(stage_db(&mut EntryData(&mut archive), size, dest)?);
            }
            "snapshot.json" => {
                if saw_manifest {
                    return Err(VerifyError::Duplicate(raw));
                }
                saw_manifest = true;
                if size > MAX_MANIFEST {
                    return Err(VerifyError::TooLarge {
                        name: raw,
                        size,
                        archive: len,
                    });
                }
                let mut text = Vec::new();
                EntryData(&mut archive)
                    .read_to_end(&mut text)
                    .map_err(damaged)?;
                manifest = Some(
                    serde_json::from_slice(&text)
                        .map_err(|e| VerifyError::Manifest(format!("unreadable: {e}")))?,
                );
            }
            _ => return Err(VerifyError::Unexpected(raw)),
        }
    }
    // Read to the very end so every gzip member's CRC and length are checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(damaged)?;

    let (has_trailer, db_size, db_sha256) = db.ok_or(VerifyError::NoDb)?;
    if let Some(m) = &manifest {
        if m.db_size != db_size {
            return Err(VerifyError::Manifest(format!(
                "it says {} db bytes, the db has {db_size}",
                m.db_size
            )));
        }
        if m.db_sha256 != db_sha256 {
            return Err(VerifyError::Manifest("the db's SHA-256 differs".into()));
        }
    }
    let kind = match (&manifest, has_trailer) {
        (Some(_), _) => "etcd charm snapshot archive",
        (None, true) => "tar.gz of an etcdctl snapshot",
        (None, false) => "old etcd charm snapshot archive (raw db)",
    };
    Ok(Staged {
        db: dest.to_path_buf(),
        kind,
        has_trailer,
        db_size,
        db_sha256,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_normalised_or_refused() {
        assert_eq!(entry_name("./db").unwrap(), "db");
        assert_eq!(entry_name("db").unwrap(), "db");
        assert_eq!(entry_name("./").unwrap(), "");
        assert!(entry_name("/etc/passwd").is_err());
        assert!(entry_name("../db").is_err());
        assert!(entry_name("a/../../db").is_err());
    }
}
