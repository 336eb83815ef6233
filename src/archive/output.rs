//! Writing an archive file safely: `<name>.part` created 0600 with O_EXCL,
//! hashed as it is written, fsynced, then published under its final name
//! without ever replacing a file, and the directory fsynced. Dropped before
//! `publish`, it leaves nothing behind.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use super::{ArchiveWriter, HashingWriter};
use crate::fsutil::{self, PartFile};

const WRITE_BUFFER: usize = 1 << 20;

pub type Writer = ArchiveWriter<HashingWriter<BufWriter<File>>>;

pub struct ArchiveFile {
    part: PartFile,
    final_path: PathBuf,
    writer: Writer,
}

/// A published archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Why an archive could not be created or published.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} already exists and is never overwritten; run the action again a second later")]
    Exists(PathBuf),
    #[error("cannot write in {dir}: {source}")]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot finish writing {path}: {source}")]
    Finish { path: PathBuf, source: io::Error },
}

impl ArchiveFile {
    pub fn create(dir: &Path, name: &str, level: u32) -> Result<Self, OutputError> {
        let final_path = dir.join(name);
        if final_path.symlink_metadata().is_ok() {
            return Err(OutputError::Exists(final_path));
        }
        let part_path = dir.join(format!("{name}.part"));
        let file = fsutil::create_private_file(&part_path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                OutputError::Exists(part_path.clone())
            } else {
                OutputError::Create {
                    dir: dir.to_path_buf(),
                    source,
                }
            }
        })?;
        // Handed to the operator before a byte is written (still 0600).
        if let Some((uid, gid)) = fsutil::operator_owner(dir) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|source| {
                let _ = std::fs::remove_file(&part_path);
                OutputError::Create {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        let out = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file));
        Ok(ArchiveFile {
            part: PartFile::new(part_path),
            final_path,
            writer: ArchiveWriter::new(out, level),
        })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    pub fn publish(self) -> Result<Published, OutputError> {
        let ArchiveFile {
            part,
            final_path,
            writer,
        } = self;
        let finish = |source| OutputError::Finish {
            path: part.path().to_path_buf(),
            source,
        };
        let (buffered, sha256, bytes) = writer.finish().map_err(finish)?.into_parts();
        let file = buffered.into_inner().map_err(|e| finish(e.into_error()))?;
        file.sync_all().map_err(finish)?;
        drop(file);
        fsutil::publish_no_replace(part.path(), &final_path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                OutputError::Exists(final_path.clone())
            } else {
                finish(source)
            }
        })?;
        part.keep();
        let dir = final_path.parent().unwrap_or(Path::new("/"));
        fsutil::sync_dir(dir).map_err(|source| OutputError::Finish {
            path: final_path.clone(),
            source,
        })?;
        Ok(Published {
            path: final_path,
            sha256,
            bytes,
        })
    }
}
