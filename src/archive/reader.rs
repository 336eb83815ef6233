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
/// bbolt page sizes go up to 64 KiB; both meta pages fit in twice that.
const META_HEAD: usize = 128 * 1024;

/// FNV-1a, 64 bits: the checksum bbolt keeps in each meta page.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The size a bbolt db's newest valid meta page declares (its page count
/// times its page size), or None when neither meta page is valid. A meta
/// page: 16 bytes of page header, then magic, version, page size, flags,
/// root bucket, freelist, page count, txid, and the checksum of all that.
fn declared_db_size(head: &[u8]) -> Option<u64> {
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let meta = |page: usize| -> Option<(u64, u64)> {
        let m = head.get(page + 16..page + 80)?;
        let page_size = u32_at(m, 8)?;
        let valid = m[..4] == BBOLT_MAGIC
            && u32_at(m, 4)? == 2
            && page_size.is_power_of_two()
            && (512..=65536).contains(&page_size)
            && fnv1a64(&m[..56]) == u64_at(m, 56)?;
        let (pgid, txid) = (u64_at(m, 40)?, u64_at(m, 48)?);
        valid.then(|| (txid, pgid.saturating_mul(u64::from(page_size))))
    };
    // Meta page 1 sits one page in: at the size meta page 0 states (which
    // may be the torn one), else at the common 4 KiB.
    let stated = u32_at(head, 24).filter(|p| p.is_power_of_two() && *p >= 512);
    [Some(0), stated.map(|p| p as usize), Some(4096)]
        .into_iter()
        .flatten()
        .filter_map(meta)
        .max()
        .map(|(_, size)| size)
}

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
    #[error("the object is not a tar.gz snapshot archive")]
    NotArchive,
    #[error("the archive read back is {got_bytes} bytes with SHA-256 {got}, and its record says {want_bytes} bytes with SHA-256 {want}: it was altered or damaged in the store")]
    Altered {
        got: String,
        got_bytes: u64,
        want: String,
        want_bytes: u64,
    },
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
    let mut head: Vec<u8> = Vec::with_capacity(META_HEAD.min(size as usize));
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
        if head.len() < META_HEAD {
            let take = n.min(META_HEAD - head.len());
            head.extend_from_slice(&buf[..take]);
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
    // Without a trailer nothing else proves the db whole: a snapshot file
    // cut at a page boundary looks like a raw db. A raw copy of a member's
    // db may be longer than its data (bbolt grows the file ahead), never
    // shorter than what its newest meta page declares.
    match declared_db_size(&head) {
        None => return Err(VerifyError::NotDb("no valid bbolt meta page".into())),
        Some(declared) if db_size < declared => {
            return Err(VerifyError::Damaged(format!(
                "the db holds {db_size} bytes and its bbolt meta page declares {declared}: it is truncated"
            )))
        }
        Some(_) => {}
    }
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

/// Reads through and hashes everything it passes on.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Verifies a tar.gz archive read as a stream (an object in a store) and
/// stages its db in `staging`. `len` is the size the store reports; with
/// `expect` (SHA-256 hex and size from the archive's record) the whole
/// stream must hash to it, or nothing staged counts.
pub fn verify_stream_and_stage(
    src: impl Read,
    len: u64,
    staging: &Path,
    expect: Option<(&str, u64)>,
) -> Result<Staged, VerifyError> {
    let mut hashed = HashingReader {
        inner: BufReader::with_capacity(1 << 20, src),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut head = [0u8; 2];
    let got = read_up_to(&mut hashed, &mut head).map_err(damaged)?;
    if got < 2 || head != GZIP_MAGIC {
        return Err(VerifyError::NotArchive);
    }
    let whole = io::Cursor::new(head).chain(&mut hashed);
    let staged = verify_tar_gz_from(whole, len, &staging.join("db"))?;
    io::copy(&mut hashed, &mut io::sink()).map_err(damaged)?;
    if hashed.bytes != len {
        return Err(VerifyError::Damaged(format!(
            "{} bytes came of the {len} the store lists",
            hashed.bytes
        )));
    }
    if let Some((want, want_bytes)) = expect {
        let got = hex(&hashed.hasher.finalize());
        if got != want || hashed.bytes != want_bytes {
            return Err(VerifyError::Altered {
                got,
                got_bytes: hashed.bytes,
                want: want.to_string(),
                want_bytes,
            });
        }
    }
    Ok(staged)
}

fn verify_tar_gz(path: &Path, len: u64, dest: &Path) -> Result<Staged, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    verify_tar_gz_from(BufReader::with_capacity(1 << 20, file), len, dest)
}

fn verify_tar_gz_from(src: impl Read, len: u64, dest: &Path) -> Result<Staged, VerifyError> {
    let mut archive = TarReader::new(MultiGzDecoder::new(src));
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

    /// A db head with one meta page at `page`, as bbolt writes it.
    fn meta_page(head: &mut [u8], page: usize, page_size: u32, pgid: u64, txid: u64) {
        let m = &mut head[page + 16..page + 80];
        m[..4].copy_from_slice(&BBOLT_MAGIC);
        m[4..8].copy_from_slice(&2u32.to_le_bytes());
        m[8..12].copy_from_slice(&page_size.to_le_bytes());
        m[40..48].copy_from_slice(&pgid.to_le_bytes());
        m[48..56].copy_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&m[..56]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn the_newest_valid_meta_page_declares_the_size() {
        let mut head = vec![0u8; 8192];
        meta_page(&mut head, 0, 4096, 10, 7);
        meta_page(&mut head, 4096, 4096, 12, 8);
        assert_eq!(declared_db_size(&head), Some(12 * 4096));
        // A torn newest page: the older one counts.
        head[4096 + 16 + 40] ^= 1;
        assert_eq!(declared_db_size(&head), Some(10 * 4096));
        // Page 1 mended, page 0 torn in its page size: page 1 is still
        // found, one 4 KiB page in.
        head[4096 + 16 + 40] ^= 1;
        head[16 + 8] ^= 0xff;
        assert_eq!(declared_db_size(&head), Some(12 * 4096));
        head[4096 + 16 + 40] ^= 1;
        assert_eq!(declared_db_size(&head), None);
        assert_eq!(declared_db_size(&head[..100]), None);
    }

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
